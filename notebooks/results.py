# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Results: MOLLM against its baselines
#
# This notebook reads the folder that `make paper-tables` writes (`python -m unlearn.results
# <sweep dirs> --out results`) and draws the same figures as the PNGs there, from the CSV files:
#
# | file | content |
# |---|---|
# | `table.csv` | mean, 95 % interval (lo, hi) and std over seeds of every metric, per method, and the original model |
# | `runs.csv` | one line per run dir (every status) with its metrics after unlearning |
# | `steps.csv` | per-step losses, `descent/*`, gradient norms and weights of every run |
# | `descent_violations.csv` | per aggregator, the share of steps with `g_i·d < 0` |
# | `columns.json` | the metrics' declared columns: label, better direction, trade-off role |
# | `paired_differences.md` | every method minus MOLLM with 95 % intervals; `*`: resolved |
#
# Set `UNLEARN_RESULTS_DIR` (default `../results`, i.e. the repository's `results/`) and
# `UNLEARN_EXPERIMENT` (default `paper_embedded`) to read another folder.
# Paired with `results.py` by jupytext: edit either, then `jupytext --sync notebooks/results.py`.

# %%
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from unlearn.results.plots import pareto_front

RESULTS = Path(os.environ.get("UNLEARN_RESULTS_DIR", "../results"))
EXPERIMENT = os.environ.get("UNLEARN_EXPERIMENT", "paper_embedded")
folder = RESULTS / EXPERIMENT
table = pd.read_csv(folder / "table.csv")
runs = pd.read_csv(folder / "runs.csv")
steps = pd.read_csv(folder / "steps.csv")
descent = pd.read_csv(folder / "descent_violations.csv")
completed = runs[runs.status == "completed"]
columns = {c["key"]: c for c in json.loads((folder / "columns.json").read_text())}
measured = {c for c in runs.columns if c.startswith("after/") and runs[c].notna().any()}
forgetting = [c for c in columns.values() if c.get("tradeoff") == "forgetting" and f"after/{c['key']}" in measured]
costs = [c for c in columns.values() if c.get("tradeoff") == "cost" and f"after/{c['key']}" in measured]
objectives = [c.split("/", 1)[1] for c in steps.columns if c.startswith("loss/")]  # the runs' objectives
print(f"{folder}: {len(runs)} runs, {len(completed)} completed, methods: {', '.join(table.method[1:])}")

# %% [markdown]
# ## The table
# Mean [95 % interval] over seeds (the Markdown written by `python -m unlearn.results`, with the
# settings and the judge and scorer under it). Runs that failed or did not finish are listed
# below the table and are not in any mean.

# %%
display(Markdown((folder / "table.md").read_text()))

# %% [markdown]
# ## Forgetting against its costs
# Every column a metric declares as forgetting (harmful rate, preference margin) against every
# cost (fluency, utility), from `columns.json`. One small marker per seed, a large one per method
# mean, a star for the original model; the dashed line is the Pareto front of all points, each
# axis in its better direction.

# %%
def arrow(c):
    return "↓" if c["better"] == "lower" else "↑"


def tradeoff(x, y):
    sx, sy = (1 if c["better"] == "lower" else -1 for c in (x, y))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    points = []
    for i, (method, group) in enumerate(completed.groupby("method", sort=False)):
        xs, ys = group[f"after/{x['key']}"], group[f"after/{y['key']}"]
        colour = plt.get_cmap("tab10")(i)
        ax.scatter(xs, ys, color=colour, alpha=0.5, s=30)
        ax.scatter([xs.mean()], [ys.mean()], color=colour, s=130, edgecolors="black", label=method)
        points += list(zip(xs, ys, strict=True))
    original = table[table.method == "original"].iloc[0]
    if pd.notna(original.get(f"{x['key']}_mean")) and pd.notna(original.get(f"{y['key']}_mean")):
        ox, oy = original[f"{x['key']}_mean"], original[f"{y['key']}_mean"]
        ax.scatter([ox], [oy], marker="*", s=220, color="black", label="original")
        points.append((ox, oy))
    front = pareto_front([(sx * px, sy * py) for px, py in points if pd.notna(px) and pd.notna(py)])
    if front:
        fx, fy = zip(*((sx * px, sy * py) for px, py in front), strict=True)
        ax.step(fx, fy, where="post" if sx > 0 else "pre", linestyle="--", color="grey", label="Pareto front")
    ax.set_xlabel(f"{x['label']} {arrow(x)}")
    ax.set_ylabel(f"{y['label']} {arrow(y)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


for y in forgetting:
    for x in costs:
        tradeoff(x, y)

# %% [markdown]
# ## Losses over steps
# Losses on the training batches (each step draws new batches, so the curves are noisy). The
# forget losses differ by method: GA's is the mean log-probability of the harmful answer
# (unbounded below), UCE's is `-mean log(1 - p)` (≥ 0), NPO's is measured against the reference.

# %%
methods = list(dict.fromkeys(steps.method))
fig, axes = plt.subplots(len(methods), len(objectives), figsize=(3.4 * len(objectives), 2.1 * len(methods) + 0.5),
                         squeeze=False, sharex=True)
for i, method in enumerate(methods):
    for j, objective in enumerate(objectives):
        ax = axes[i][j]
        for seed, group in steps[(steps.method == method) & (steps.skipped == 0)].groupby("seed"):
            ax.plot(group.step, group[f"loss/{objective}"], linewidth=1, label=f"seed {seed}")
        ax.set_title(f"loss/{objective}" if i == 0 else "", fontsize=9)
        if j == 0:
            ax.set_ylabel(method, fontsize=8)
        ax.grid(alpha=0.3)
axes[0][0].legend(fontsize=6)
fig.tight_layout()

# %% [markdown]
# ## Did the direction increase an objective?
# For each aggregator, the share of steps in which `descent/<objective> = g_i·d` was negative
# (below `-1e-6·‖g_i‖·‖d‖`): to first order that step increased the objective. The dual
# direction of MOLLM is built so that this never happens; a weighted sum gives no such guarantee.

# %%
shown = ["any", *(o for o in objectives if o in descent.columns)]
ax = descent.set_index("aggregator")[shown].mul(100).plot.bar(figsize=(6.4, 3.8), rot=0)
ax.set_ylabel("% of steps with g_i·d < 0")
ax.grid(axis="y", alpha=0.3)
descent

# %% [markdown]
# ## Which differences resolve
# Every method minus MOLLM, paired over the shared prompts with both methods' seeds; `*` marks a
# difference whose 95 % interval excludes 0 (`paired_differences.md`, written by
# `python -m unlearn.results`).

# %%
paired = folder / "paired_differences.md"
display(Markdown(paired.read_text() if paired.is_file() else "No paired_differences.md in this folder."))

# %% [markdown]
# ## Reading
# The cell below states, from the numbers above, whether the reference row (the one
# `paired_differences.csv` compares against: the grid's, MOLLM's `uce+dual` by default) beats each other method on every forgetting
# column at equal or better cost (a difference counts when the means differ by more than the
# larger of the two stds).

# %%
def row(method):
    return table[table.method == method].iloc[0]


def better(a, b, c):
    diff = (b[f"{c['key']}_mean"] - a[f"{c['key']}_mean"]) * (1 if c["better"] == "lower" else -1)
    stds = [x[f"{c['key']}_std"] for x in (a, b)]
    margin = max(s if pd.notna(s) else 0.0 for s in stds)
    return "better" if diff > margin else "worse" if diff < -margin else "equal"


paired_csv = folder / "paired_differences.csv"
references = pd.read_csv(paired_csv).reference if paired_csv.is_file() else []
reference = references.iloc[0] if len(references) else "uce+dual"
lines = []
if reference in set(table.method):
    ref = row(reference)
    for method in table.method:
        if method in ("original", reference):
            continue
        other = row(method)
        verdict = {c["key"]: better(ref, other, c) for c in (*forgetting, *costs)}
        wins = (all(verdict[c["key"]] == "better" for c in forgetting)
                and "worse" not in (verdict[c["key"]] for c in costs))
        lines.append(f"- vs {method}: " + ", ".join(f"{columns[k]['label']} {v}" for k, v in verdict.items())
                     + f" → {f'{reference} wins' if wins else 'no clear win'}")
else:
    lines.append(f"{reference} is not in this experiment.")
display(Markdown("\n".join(lines)))
