"""Figures of one experiment (PNG, matplotlib's Agg backend; no display needed).

* ``<forgetting>_vs_<cost>.png`` for every column a metric declares ``tradeoff="forgetting"``
  (y: harmful rate, preference margin) and every ``tradeoff="cost"`` one (x: fluency PPL,
  utility PPL), e.g. ``harmful_vs_fluency.png``: every completed run, coloured by method, with
  each method's mean and its 95 % intervals on both axes (the table's), the original model, and
  the methods whose means no other method (or the original) dominates, ringed on the Pareto front
  (each axis in its better direction);
* ``losses.png``: the run's objectives' losses over steps, one row per method, each seed a thin line;
* ``descent_violations.png``: per aggregator, the share of (non-skipped) steps in which the
  direction increased an objective to first order, ``descent/<objective> = g_i·d < 0``, and in
  which the update that reached the weights did, ``descent_update/<objective> = g_i·u < 0``
  (:func:`descent_violations`), for any objective and for each one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from unlearn.identity import parse_label
from unlearn.results.collect import Run, as_float, method_order, metric_series, objective_names, run_objectives
from unlearn.results.columns import Column, with_tradeoff_roles
from unlearn.results.tables import ORIGINAL, Row, Table
from unlearn.uncertainty.fronts import pareto_mask

# g_i·d counts as negative when below -DESCENT_TOL · ‖g_i‖ · ‖d‖ (a cosine below -1e-6): the dual
# direction is orthogonal to some gradients by construction, and rounding puts its g_i·d at
# about ±1e-9 relative, which is no increase of that objective.
DESCENT_TOL = 1e-6
MARKERS = "osD^vP*Xph<>"


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def colours(methods: Sequence[str]) -> dict[str, tuple]:
    plt = pyplot()
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points not dominated by another (both coordinates minimised), sorted by x.
    A point is dominated when another is ≤ in both coordinates and < in one."""
    finite = sorted({(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)})
    front: list[tuple[float, float]] = []
    best_y = math.inf
    for x, y in finite:  # ascending x, then ascending y
        if y < best_y:
            front.append((x, y))
            best_y = y
    return front


def _methods(runs: Sequence[Run]) -> list[str]:
    return sorted({r.method for r in runs}, key=method_order(runs))


def method_point(row: Row, key: str) -> tuple[float, float, float]:
    """(mean, mean − lo, hi − mean) of a row's metric: a point with its error bar (0 without)."""
    mean, lo, hi = (d.get(key, math.nan) for d in (row.mean, row.lo, row.hi))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return mean, 0.0, 0.0
    return mean, max(0.0, mean - lo), max(0.0, hi - mean)


def tradeoff_columns(table: Table) -> tuple[list[Column], list[Column]]:
    """(forgetting columns, cost columns) of the table's declared columns (``Column.tradeoff``);
    runs from before the roles were declared take them from the default metrics' columns."""
    declared = [c for c in with_tradeoff_roles(table.columns) if c.tradeoff]
    present = [c for c in declared if any(math.isfinite(r.eval_value("after", c.key)) for r in table.completed)]
    return ([c for c in present if c.tradeoff == "forgetting"], [c for c in present if c.tradeoff == "cost"])


def tradeoff_plot(table: Table, xcol: Column, ycol: Column, path: Path) -> Path | None:
    """``ycol`` (a forgetting column) against ``xcol`` (a cost column): each seed, each method's
    mean with its 95 % intervals on both axes, the original model, and the methods not dominated
    by another method or the original (each axis in its own better direction, on the means) ringed
    and joined by the front."""
    runs = table.completed
    x_key, y_key = xcol.key, ycol.key
    pts = [(r, r.eval_value("after", x_key), r.eval_value("after", y_key)) for r in runs]
    pts = [(r, x, y) for r, x, y in pts if math.isfinite(x) and math.isfinite(y)]
    orig = table.rows[0]
    ox, oy = orig.mean.get(x_key, math.nan), orig.mean.get(y_key, math.nan)
    if not pts and not (math.isfinite(ox) and math.isfinite(oy)):
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    methods = _methods([r for r, _, _ in pts])
    col = colours(methods)
    means: list[tuple[str, float, float]] = []
    for i, m in enumerate(methods):
        xs = [x for r, x, _ in pts if r.method == m]
        ys = [y for r, _, y in pts if r.method == m]
        marker = MARKERS[i % len(MARKERS)]
        ax.scatter(xs, ys, color=col[m], marker=marker, alpha=0.35, s=24)
        row = table.row(m)
        (mx, *xerr), (my, *yerr) = method_point(row, x_key), method_point(row, y_key)
        ax.errorbar([mx], [my], xerr=[[xerr[0]], [xerr[1]]], yerr=[[yerr[0]], [yerr[1]]], color=col[m],
                    marker=marker, markersize=9, markeredgecolor="black", capsize=3, linewidth=1.2,
                    label=f"{m} (mean, 95% CI; small: seeds)")
        means.append((m, mx, my))
    candidates = [(m, x, y) for m, x, y in means if math.isfinite(x) and math.isfinite(y)]
    if math.isfinite(ox) and math.isfinite(oy):
        ax.scatter([ox], [oy], color="black", marker="*", s=220, label=ORIGINAL, zorder=5)
        candidates.append((ORIGINAL, ox, oy))
    if candidates:
        sx, sy = (1.0 if c.better == "lower" else -1.0 for c in (xcol, ycol))  # minimise both after the signs
        mask = pareto_mask([(sx * x, sy * y) for _, x, y in candidates])
        front = sorted(((sx * x, sy * y) for (m, x, y), keep in zip(candidates, mask, strict=True) if keep))
        ringed = [(x, y) for (m, x, y), keep in zip(candidates, mask, strict=True) if keep and m != ORIGINAL]
        if ringed:
            ax.scatter(*zip(*ringed, strict=True), s=330, facecolors="none", edgecolors="black", linewidths=1.4,
                       label="non-dominated (means)", zorder=6)
        fx, fy = zip(*((sx * x, sy * y) for x, y in front), strict=True)
        ax.step(fx, fy, where="post" if sx > 0 else "pre", color="grey", linestyle="--", linewidth=1.2,
                label="Pareto front", zorder=1)
    ax.set_xlabel(f"{xcol.label} {xcol.arrow}")
    ax.set_ylabel(f"{ycol.label} {ycol.arrow}")
    ax.set_title(f"{table.experiment}: {ycol.label.lower()} vs {xcol.label.split(' ')[0].lower()}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def tradeoff_name(xcol: Column, ycol: Column) -> str:
    """``harmful_vs_fluency`` for harmful_rate against fluency_ppl: the first word of each key."""
    return f"{ycol.key.split('_')[0]}_vs_{xcol.key.split('_')[0]}"


def probe_series(run: Run, objective: str) -> tuple[list[int], list[float]]:
    """``probe/<objective>`` against the number of updates before it: the probe logged with step
    s was taken before that step (s - 1 updates), and ``final/probe/*`` after the last one."""
    steps, values = metric_series(run, f"probe/{objective}")
    x = [s - 1 for s in steps]
    final = run.summary.get(f"final/probe/{objective}")
    if x and isinstance(final, int | float) and isinstance(run.summary.get("steps"), int):
        x.append(run.summary["steps"])
        values.append(float(final))
    return x, values


def losses_plot(table: Table, path: Path) -> Path | None:
    """One row per method, one column per objective; each seed's loss over steps."""
    runs = [r for r in table.runs if r.metrics]
    methods = _methods(runs)
    if not methods:
        return None
    plt = pyplot()
    names = objective_names(runs)
    fig, axes = plt.subplots(len(methods), len(names), figsize=(10 * len(names) / 3, 2.2 * len(methods) + 0.6),
                             squeeze=False, sharex=True)
    col = colours(methods)
    for i, m in enumerate(methods):
        for j, obj in enumerate(names):
            ax = axes[i][j]
            for r in (r for r in runs if r.method == m):
                steps, values = metric_series(r, f"loss/{obj}")
                style = "-" if r.completed else ":"
                ax.plot(steps, values, style, color=col[m], linewidth=0.8, alpha=0.45,
                        label=f"seed {r.seed}" + ("" if r.completed else f" ({r.status})"))
                probe_x, probe_y = probe_series(r, obj)
                if probe_x:
                    ax.plot(probe_x, probe_y, "o-", color=col[m], linewidth=1.6, markersize=3)
            if i == 0:
                ax.set_title(f"loss/{obj}")
            if j == 0:
                ax.set_ylabel(m, fontsize=8)
            if i == len(methods) - 1:
                ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
        axes[i][0].legend(fontsize=6, loc="best")
    fig.suptitle(f"{table.experiment}: losses on each step's training batch (thin; dotted: not "
                 "completed) and on the fixed probe examples (dots: probe/*)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


QUANTITIES = {"descent": "direction_norm", "descent_update": "update_norm"}  # g_i·d and g_i·u


def descent_violations(runs: Sequence[Run], tol: float = DESCENT_TOL,
                       quantity: str = "descent") -> dict[str, dict[str, float]]:
    """Per aggregator: the share of steps with ``<quantity>/<o> < -tol·‖g_o‖·‖x‖`` for any
    objective (``any``) and for each objective, and the number of steps (``steps``).

    ``quantity="descent"``: g_i·d for the aggregator's direction d (x = d); ``"descent_update"``:
    g_i·u for the update u = θ_before − θ_after that reached the weights (x = u), the one that
    says whether a step really lowered every objective. Runs of every status count (a step taken
    is a step taken); steps without the quantity (the one-backward weighted sum, runs with
    ``trainer.track_update=false``) and skipped steps are left out."""
    norm_key = QUANTITIES[quantity]
    counts: dict[str, dict[str, float]] = {}
    for run in runs:
        agg = run.aggregator
        c = counts.setdefault(agg, {"steps": 0, "any": 0})
        names = run_objectives(run)
        for rec in run.metrics:
            if rec.get("skipped") or not all(f"{quantity}/{o}" in rec for o in names):
                continue
            x_norm = as_float(rec.get(norm_key, 0.0))
            bad = []
            for o in names:
                g = as_float(rec.get(f"grad_norm/{o}", 0.0))
                limit = -tol * (g * x_norm if math.isfinite(g * x_norm) else 0.0)
                bad.append(as_float(rec[f"{quantity}/{o}"]) < limit)
            c["steps"] += 1
            c["any"] += any(bad)
            for o, b in zip(names, bad, strict=True):
                c[o] = c.get(o, 0) + b
                c[f"steps/{o}"] = c.get(f"steps/{o}", 0) + 1
    every = objective_names(runs)
    return {agg: {"steps": c["steps"], "any": c["any"] / c["steps"] if c["steps"] else math.nan,
                  **{o: c[o] / c[f"steps/{o}"] if c.get(f"steps/{o}") else math.nan for o in every}}
            for agg, c in counts.items()}


def descent_plot(table: Table, path: Path, tol: float = DESCENT_TOL) -> Path | None:
    """Two panels: steps whose direction d (left) and whose real update u (right) increased an
    objective to first order, per aggregator."""
    panels = [(q, descent_violations(table.runs, tol, q)) for q in QUANTITIES]
    panels = [(q, shares) for q, shares in panels if any(s["steps"] for s in shares.values())]
    if not panels:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.0), squeeze=False)
    groups = ("any", *objective_names(table.runs))
    width = 0.8 / len(groups)
    for ax, (quantity, shares) in zip(axes[0], panels):
        methods = _methods(table.runs)  # aggregators in the order their first row has in the grid
        first = {parse_label(m).aggregation: i for i, m in reversed(list(enumerate(methods)))}
        aggs = sorted((a for a in shares if shares[a]["steps"]), key=lambda a: (first.get(a, len(methods)), a))
        for k, g in enumerate(groups):
            xs = [i + (k - (len(groups) - 1) / 2) * width for i in range(len(aggs))]
            bars = ax.bar(xs, [100 * shares[a][g] for a in aggs], width,
                          label="any objective" if g == "any" else g)
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks(range(len(aggs)))
        ax.set_xticklabels([f"{a}\n({shares[a]['steps']} steps)" for a in aggs])
        symbol = "d (direction)" if quantity == "descent" else "u (update applied)"
        ax.set_ylabel(f"% of steps with g_i·{symbol[0]} < 0")
        ax.set_ylim(0, 105)
        ax.set_title(f"{table.experiment}: {symbol} increased an objective", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def write_plots(table: Table, out_dir: Path, tol: float = DESCENT_TOL) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    forgetting, costs = tradeoff_columns(table)
    made = {
        **{tradeoff_name(x, y): tradeoff_plot(table, x, y, out_dir / f"{tradeoff_name(x, y)}.png")
           for y in forgetting for x in costs},
        "losses": losses_plot(table, out_dir / "losses.png"),
        "descent_violations": descent_plot(table, out_dir / "descent_violations.png", tol),
    }
    return {k: v for k, v in made.items() if v is not None}


__all__ = ["DESCENT_TOL", "MARKERS", "QUANTITIES", "colours", "descent_plot", "descent_violations", "losses_plot",
           "method_point", "pareto_front", "pyplot",
           "tradeoff_plot", "write_plots"]
