# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
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
# | `paired_differences.md` | every method minus MOLLM with 95 % intervals; `*`: resolved |
#
# Set `UNLEARN_RESULTS_DIR` (default `../results`, i.e. the repository's `results/`) and
# `UNLEARN_EXPERIMENT` (default `paper_embedded`) to read another folder.
# Paired with `results.py` by jupytext: edit either, then `jupytext --sync notebooks/results.py`.

# %%
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
print(f"{folder}: {len(runs)} runs, {len(completed)} completed, methods: {', '.join(table.method[1:])}")

# %% [markdown]
# ## The table
# Mean [95 % interval] over seeds (the Markdown written by `python -m unlearn.results`, with the
# settings and the judge and scorer under it). Runs that failed or did not finish are listed
# below the table and are not in any mean.

# %%
display(Markdown((folder / "table.md").read_text()))

# %% [markdown]
# ## Harmful rate against fluency and against utility
# One small marker per seed, a large one per method mean, a star for the original model; the
# dashed line is the Pareto front of all points (both axes: lower is better).

# %%
def tradeoff(x_key: str, x_label: str):
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    points = []
    for i, (method, group) in enumerate(completed.groupby("method", sort=False)):
        xs, ys = group[f"after/{x_key}"], group["after/harmful_rate"]
        colour = plt.get_cmap("tab10")(i)
        ax.scatter(xs, ys, color=colour, alpha=0.5, s=30)
        ax.scatter([xs.mean()], [ys.mean()], color=colour, s=130, edgecolors="black", label=method)
        points += list(zip(xs, ys, strict=True))
    original = table[table.method == "original"].iloc[0]
    if pd.notna(original[f"{x_key}_mean"]):
        ox, oy = original[f"{x_key}_mean"], original["harmful_rate_mean"]
        ax.scatter([ox], [oy], marker="*", s=220, color="black", label="original")
        points.append((ox, oy))
    front = pareto_front(points)
    if front:
        fx, fy = zip(*front, strict=True)
        ax.step(fx, fy, where="post", linestyle="--", color="grey", label="Pareto front")
    ax.set_xlabel(f"{x_label} ↓")
    ax.set_ylabel("harmful rate ↓")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


tradeoff("fluency_ppl", "fluency PPL (answers under the original model)")
tradeoff("utility_ppl", "utility PPL (held-out TruthfulQA answers)");

# %% [markdown]
# ## Losses over steps
# Losses on the training batches (each step draws new batches, so the curves are noisy). The
# forget losses differ by method: GA's is the mean log-probability of the harmful answer
# (unbounded below), UCE's is `-mean log(1 - p)` (≥ 0), NPO's is measured against the reference.

# %%
methods = list(dict.fromkeys(steps.method))
fig, axes = plt.subplots(len(methods), 3, figsize=(10, 2.1 * len(methods) + 0.5), squeeze=False, sharex=True)
for i, method in enumerate(methods):
    for j, objective in enumerate(("forget", "kl", "retain")):
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
ax = descent.set_index("aggregator")[["any", "forget", "kl", "retain"]].mul(100).plot.bar(figsize=(6.4, 3.8), rot=0)
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
# The cell below states, from the numbers above, whether MOLLM (`uce+dual`) beats each baseline
# on harmful rate at equal or better fluency and utility (a difference counts when the means
# differ by more than the larger of the two stds).

# %%
def row(method):
    return table[table.method == method].iloc[0]


def better(a, b, key, lower=True):
    diff = (b[f"{key}_mean"] - a[f"{key}_mean"]) * (1 if lower else -1)
    stds = [x[f"{key}_std"] for x in (a, b)]
    margin = max(s if pd.notna(s) else 0.0 for s in stds)
    return "better" if diff > margin else "worse" if diff < -margin else "equal"


lines = []
if "uce+dual" in set(table.method):
    mollm = row("uce+dual")
    for method in table.method:
        if method in ("original", "uce+dual"):
            continue
        other = row(method)
        verdict = {k: better(mollm, other, k) for k in ("harmful_rate", "fluency_ppl", "utility_ppl")}
        wins = verdict["harmful_rate"] == "better" and "worse" not in (verdict["fluency_ppl"], verdict["utility_ppl"])
        lines.append(f"- vs {method}: harmful rate {verdict['harmful_rate']}, fluency {verdict['fluency_ppl']}, "
                     f"utility {verdict['utility_ppl']} → {'MOLLM wins' if wins else 'no clear win'}")
    base = row("original")
    lines.insert(0, f"MOLLM harmful rate {mollm.harmful_rate_mean:.3f} (original {base.harmful_rate_mean:.3f}).")
else:
    lines.append("uce+dual is not in this experiment.")
display(Markdown("\n".join(lines)))
