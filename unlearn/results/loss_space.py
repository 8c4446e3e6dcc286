"""Loss-space curves: how far each method forgets for how much drift, and their hypervolume.

Each completed run's curve is its sequence of probe points over training, from
``metrics.jsonl``: a forgetting coordinate, ``heldout/kl`` (KL to the original on held-out normal answers) and ``heldout/retain``
(NLL of held-out normal answers), logged before every ``trainer.probe_every``-th step (a record
of step s holds the values after s − 1 updates), then ``final/heldout/*`` from ``summary.json``
after the last update. Runs logged without ``heldout/*`` fall back to ``probe/*`` (the same
quantities on fixed *training* examples); one source is used for a whole experiment (held-out
when every curve has it) and the plot and table say which. The forgetting coordinate (higher =
more forgotten) is ``heldout/margin``, the judge-free preference margin ℓ(safe) − ℓ(unsafe) on
held-out (safe, unsafe) pairs (:class:`~unlearn.training.probe.PairProbe`), when every curve
logged it, and otherwise ``<source>/forget_nll``, the NLL of the unsafe answers (which also rises
when a model forgets every answer to a harmful prompt, safe or not). When the margin is used,
the tables are written for ``forget_nll`` as well, below it: the two ask different questions
(does the model prefer the safe answer more; does it find the unsafe one less likely), and when no
run raises the margin above its start every margin volume is 0 while the forget-NLL volumes still
order the methods.

Hypervolume (:func:`unlearn.uncertainty.fronts.hypervolume`) of a curve's points in
``(−forgetting, kl, retain)``, all minimised, up to the reference point

    r = (−min_runs forgetting₀,  1.1 · max_runs,points kl,  1.1 · max_runs,points retain),

forgetting₀ being a run's first point (before any update; all runs start from the same model).
Why: only forgetting beyond the original model counts (the step-0 point adds no volume), and
the drift caps are the worst drift any run of the experiment reached, with 10 % slack so the
worst points still add a sliver; one reference for the experiment makes the methods comparable.
(If no run moved the KL, its cap is 1.) The forgetting axis is unbounded: a run that drives the
forgetting coordinate far up gains volume even at high drift, so read the number with the plot. Per method:
the mean over seeds with a t-interval over seeds (with 3 seeds it is wide, t₀.₉₇₅,₂ = 4.30).

**Paired comparisons.** Every two methods with the same update rule (the label's optimizer
bracket: AdamW, ``[sgd]``, ``[metric_adam,preconditioned]``, …) are compared on the seeds both
ran: D_s = HV_a(s) − HV_b(s), with a t-interval over those seeds. Seed s gives every method the
same data order and the same start, so the seed effect cancels in D_s; the Welch half-width of
the unpaired comparison is reported beside it. A pair *resolves* when its interval excludes 0.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unlearn.identity import parse_label
from unlearn.results.collect import Run, as_float, method_order
from unlearn.results.intervals import LEVEL, clipped, t_interval
from unlearn.results.plots import MARKERS, colours, pyplot
from unlearn.results.tables import Table
from unlearn.uncertainty import Interval
from unlearn.uncertainty.fronts import hypervolume

AXES = ("forget_nll", "kl", "retain")
FORGETTING = {"margin": ("held-out margin ℓ(safe) − ℓ(unsafe) (heldout/margin)", "margin"),
              "forget_nll": ("NLL of the unsafe answers", "forget NLL")}
SOURCES = {"heldout": "held-out examples (heldout/*)",
           "probe": "fixed training examples (probe/*; this sweep logged no heldout/*)"}
DRIFT_SLACK = 1.1


@dataclass(frozen=True)
class Curve:
    """One run's loss-space points (rows: forgetting, kl, retain) after ``updates`` updates."""

    run: Run
    source: str
    updates: tuple[int, ...]
    points: np.ndarray
    forgetting: str = "forget_nll"

    @property
    def minimised(self) -> np.ndarray:
        """(−forgetting, kl, retain): the coordinates the hypervolume minimises."""
        return self.points * np.array([-1.0, 1.0, 1.0])


def run_curve(run: Run, source: str, forgetting: str = "forget_nll") -> Curve | None:
    """The run's ``<source>/*`` points (records holding all three keys, skipped steps included:
    a probe is measured before the step), then ``final/<source>/*``; None without any."""
    keys = [f"{source}/{a}" for a in (forgetting, *AXES[1:])]
    updates, rows = [], []
    for rec in run.metrics:
        if all(k in rec for k in keys):
            updates.append(int(rec.get("step", len(updates) + 1)) - 1)
            rows.append([as_float(rec[k]) for k in keys])
    final = [as_float(run.summary.get(f"final/{k}")) for k in keys]
    steps = run.summary.get("steps")
    if isinstance(steps, int) and all(math.isfinite(v) for v in final) and (not updates or steps > updates[-1]):
        updates.append(steps)
        rows.append(final)
    points = np.asarray(rows, dtype=float).reshape(-1, 3)
    points = points[np.isfinite(points).all(axis=1)]
    if not len(points):
        return None
    return Curve(run, source, tuple(updates), points, forgetting)


def experiment_curves(runs: Sequence[Run], forgetting: str | None = None) -> tuple[str, list[Curve], list[Run]]:
    """(source, curves, runs without one): held-out when every run with a curve has it; the
    forgetting coordinate is ``forgetting``, or by default the margin when every held-out curve
    has one (module docstring)."""
    heldout = {id(r): run_curve(r, "heldout") for r in runs}
    probe = {id(r): run_curve(r, "probe") for r in runs}
    source = "heldout" if any(heldout.values()) and all(
        heldout[id(r)] is not None or probe[id(r)] is None for r in runs) else "probe"
    curves = heldout if source == "heldout" else probe
    if source == "heldout" and forgetting != "forget_nll":
        margins = {key: run_curve(c.run, "heldout", "margin") for key, c in curves.items() if c is not None}
        if margins and all(m is not None for m in margins.values()):
            curves.update(margins)
    return source, [c for c in curves.values() if c is not None], [r for r in runs if curves[id(r)] is None]


def reference_point(curves: Sequence[Curve]) -> np.ndarray:
    """(−min forgetting₀, 1.1 · max kl, 1.1 · max retain) over the curves (module docstring)."""
    start = min(float(c.points[0, 0]) for c in curves)
    kl = max(float(c.points[:, 1].max()) for c in curves)
    retain = max(float(c.points[:, 2].max()) for c in curves)
    return np.array([-start, DRIFT_SLACK * kl if kl > 0 else 1.0, DRIFT_SLACK * retain])


@dataclass(frozen=True)
class LossSpace:
    source: str
    curves: list[Curve]
    reference: np.ndarray | None
    per_seed: dict[str, list[tuple[int | None, int, float]]]  # method -> (seed, points, hypervolume)
    missing: list[Run]

    @property
    def forgetting(self) -> str:
        """The curves' forgetting coordinate: ``margin`` or ``forget_nll``."""
        return self.curves[0].forgetting if self.curves else "forget_nll"

    def method_interval(self, method: str):
        """t-interval over seeds of the hypervolume, clipped at 0 (a volume is never negative)."""
        interval = t_interval([hv for _, _, hv in self.per_seed[method]], LEVEL)
        return None if interval is None else clipped(interval, 0.0, math.inf)


def loss_space(table: Table, forgetting: str | None = None) -> LossSpace:
    """The curves and their volumes; ``forgetting`` as in :func:`experiment_curves`."""
    source, curves, missing = experiment_curves(table.completed, forgetting)
    if not curves:
        return LossSpace(source, [], None, {}, missing)
    ref = reference_point(curves)
    per_seed: dict[str, list[tuple[int | None, int, float]]] = {}
    order = method_order([c.run for c in curves])
    for c in sorted(curves, key=lambda c: (order(c.run.method), c.run.seed is None, c.run.seed)):
        per_seed.setdefault(c.run.method, []).append((c.run.seed, len(c.points), hypervolume(c.minimised, ref)))
    return LossSpace(source, curves, ref, per_seed, missing)


@dataclass(frozen=True)
class PairedHypervolume:
    """``a`` − ``b`` in hypervolume, paired by seed (module docstring)."""

    a: str
    b: str
    update: str
    seeds: tuple[int, ...]
    interval: Interval | None
    unpaired_half_width: float

    @property
    def resolved(self) -> bool:
        return self.interval is not None and (self.interval.lo > 0 or self.interval.hi < 0)

    @property
    def half_width(self) -> float:
        """Half the paired interval's width (NaN without an interval)."""
        return math.nan if self.interval is None else (self.interval.hi - self.interval.lo) / 2


def paired_hypervolumes(space: LossSpace) -> list[PairedHypervolume]:
    """Every pair of methods with the same update rule, in the grid's order, on their common seeds."""
    from unlearn.results.comparisons import welch_interval

    by_seed = {m: {s: hv for s, _, hv in rows if s is not None} for m, rows in space.per_seed.items()}
    methods = list(space.per_seed)
    out = []
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            if parse_label(a).update_rule != parse_label(b).update_rule:
                continue
            seeds = tuple(sorted(set(by_seed[a]) & set(by_seed[b])))
            diffs = [by_seed[a][s] - by_seed[b][s] for s in seeds]
            welch = welch_interval(list(by_seed[a].values()), list(by_seed[b].values()), LEVEL)
            out.append(PairedHypervolume(a, b, parse_label(a).update_rule or "adamw", seeds, t_interval(diffs, LEVEL),
                                         math.nan if welch is None else (welch.hi - welch.lo) / 2))
    return out


def reference_text(space: LossSpace) -> str:
    r = space.reference
    short = FORGETTING[space.forgetting][1]
    return (f"reference point (−{space.forgetting}, kl, retain) = ({r[0]:.4g}, {r[1]:.4g}, {r[2]:.4g}): −(lowest "
            f"step-0 {short}), {DRIFT_SLACK} × the highest KL, {DRIFT_SLACK} × the highest retain NLL of any "
            "run's curve")


def to_markdown(table: Table, space: LossSpace) -> str:
    out = io.StringIO()
    out.write(f"### {table.experiment}: dominated hypervolume of the loss-space curves "
              f"({FORGETTING[space.forgetting][1]})\n\n")
    if space.reference is None:
        out.write("No run logged heldout/* or probe/* points: nothing to measure.\n")
        return out.getvalue()
    out.write("| Method | Seeds | Hypervolume ↑ [95% interval] | per seed |\n|---|---:|---:|---|\n")
    for method, rows in space.per_seed.items():
        interval = space.method_interval(method)
        mean = float(np.mean([hv for _, _, hv in rows]))
        text = f"{mean:.4g}" + (f" [{interval.lo:.4g}, {interval.hi:.4g}]" if interval is not None else "")
        seeds = ", ".join(f"{s}: {hv:.4g}" for s, _, hv in rows)
        out.write(f"| {method} | {len(rows)} | {text} | {seeds} |\n")
    short = FORGETTING[space.forgetting][1]
    out.write(f"\nPoints from {SOURCES[space.source]}; coordinates (−{short}, KL, retain NLL), all minimised, "
              f"the forgetting coordinate being the {FORGETTING[space.forgetting][0]}; "
              f"{reference_text(space)}. Interval: t over seeds (t₀.₉₇₅ with n − 1 degrees of freedom: "
              "4.30 at 3 seeds, 2.78 at 5). The "
              f"forgetting axis is unbounded, so a run that drives the {short} far up gains volume even at "
              "high drift: read it with loss_space.png.\n")
    pairs = paired_hypervolumes(space)
    if pairs:
        out.write("\n#### Paired by seed, within each update rule\n\n| a − b | update | seeds | difference [95% interval] "
                  "| half-width paired / unpaired | resolves |\n|---|---|---:|---:|---:|---|\n")
        for p in pairs:
            if p.interval is None:
                out.write(f"| {p.a} − {p.b} | {p.update} | {len(p.seeds)} | fewer than 2 common seeds | | no |\n")
                continue
            out.write(f"| {p.a} − {p.b} | {p.update} | {len(p.seeds)} | {p.interval.estimate:+.4g} "
                      f"[{p.interval.lo:+.4g}, {p.interval.hi:+.4g}] | {p.half_width:.3g} / {p.unpaired_half_width:.3g} | "
                      f"{'**yes**' if p.resolved else 'no'} |\n")
        out.write("\nD_s = HV_a(s) − HV_b(s) on the seeds both ran, t over seeds; unpaired: Welch over each "
                  "method's seeds. A pair resolves when its interval excludes 0.\n")
    if space.missing:
        out.write("\nLeft out (no curve): " + ", ".join(f"{r.method} seed {r.seed}" for r in space.missing) + "\n")
    return out.getvalue()


def to_csv(table: Table, space: LossSpace, header: bool = True) -> str:
    """Per seed (``seed`` a number) and per method (``seed`` = ``all``: mean, lo, hi over seeds)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(["experiment", "method", "seed", "source", "forgetting", "points", "hypervolume", "lo", "hi",
                         "ref_neg_forgetting", "ref_kl", "ref_retain"])
    if space.reference is None:
        return out.getvalue()
    ref = [repr(float(v)) for v in space.reference]
    for method, rows in space.per_seed.items():
        for seed, n, hv in rows:
            writer.writerow([table.experiment, method, "" if seed is None else seed, space.source, space.forgetting,
                             n, repr(hv),
                             "", "", *ref])
        interval = space.method_interval(method)
        lo, hi = ("", "") if interval is None else (repr(interval.lo), repr(interval.hi))
        writer.writerow([table.experiment, method, "all", space.source, space.forgetting, sum(n for _, n, _ in rows),
                         repr(float(np.mean([hv for _, _, hv in rows]))), lo, hi, *ref])
    return out.getvalue()


def paired_to_csv(table: Table, space: LossSpace, header: bool = True) -> str:
    """One row per :func:`paired_hypervolumes` pair: ``a − b`` on their common seeds, its t-interval and
    the paired and unpaired (Welch) half-widths; empty interval cells with fewer than 2 common seeds."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(["experiment", "forgetting", "a", "b", "update", "seeds", "difference", "lo", "hi",
                         "half_width_paired", "half_width_unpaired", "resolved"])
    for p in paired_hypervolumes(space):
        i = p.interval
        cells = ["", "", "", ""] if i is None else [repr(i.estimate), repr(i.lo), repr(i.hi), repr(p.half_width)]
        writer.writerow([table.experiment, space.forgetting, p.a, p.b, p.update, len(p.seeds), *cells,
                         repr(p.unpaired_half_width), p.resolved])
    return out.getvalue()


def loss_space_plot(table: Table, space: LossSpace, path: Path) -> Path | None:
    """The forgetting coordinate (x, →) against KL and against retain NLL, one thin line per seed, the last
    point marked; the dashed lines are the reference point."""
    if not space.curves:
        return None
    plt = pyplot()
    methods = sorted({c.run.method for c in space.curves}, key=method_order([c.run for c in space.curves]))
    col = colours(methods)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, j, label in ((axes[0], 1, "KL to the original ↓"), (axes[1], 2, "retain NLL ↓")):
        for i, m in enumerate(methods):
            for k, c in enumerate(x for x in space.curves if x.run.method == m):
                ax.plot(c.points[:, 0], c.points[:, j], "-", color=col[m], linewidth=0.9, alpha=0.6,
                        label=m if k == 0 else None)
                ax.scatter(c.points[-1:, 0], c.points[-1:, j], color=col[m], marker=MARKERS[i % len(MARKERS)],
                           s=45, edgecolors="black", linewidths=0.6, zorder=3)
        ax.axvline(-space.reference[0], color="grey", linestyle="--", linewidth=0.8)
        ax.axhline(space.reference[j], color="grey", linestyle="--", linewidth=0.8)
        ax.set_xlabel(f"{FORGETTING[space.forgetting][0]} → (more forgotten)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{table.experiment}: loss-space curves on {SOURCES[space.source]}; one line per seed, "
                 "marker: end of training; dashed: hypervolume reference", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def write_loss_space(table: Table, out_dir: Path, plots: bool = True) -> dict[str, Path]:
    """``hypervolume.md``, ``hypervolume.csv``, ``hypervolume_paired.csv`` (for the margin, then the
    forget NLL, when the margin is the default coordinate) and (``plots``) ``loss_space.png`` (the
    default coordinate)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    space = loss_space(table)
    spaces = [space, loss_space(table, "forget_nll")] if space.forgetting == "margin" else [space]
    files = {"hypervolume_md": out_dir / "hypervolume.md", "hypervolume_csv": out_dir / "hypervolume.csv",
             "hypervolume_paired_csv": out_dir / "hypervolume_paired.csv"}
    files["hypervolume_md"].write_text("\n".join(to_markdown(table, s) for s in spaces), encoding="utf-8")
    files["hypervolume_csv"].write_text("".join(to_csv(table, s, header=k == 0) for k, s in enumerate(spaces)),
                                        encoding="utf-8")
    files["hypervolume_paired_csv"].write_text(
        "".join(paired_to_csv(table, s, header=k == 0) for k, s in enumerate(spaces)), encoding="utf-8")
    if plots and (path := loss_space_plot(table, space, out_dir / "loss_space.png")) is not None:
        files["loss_space"] = path
    return files


__all__ = ["AXES", "Curve", "LossSpace", "PairedHypervolume", "experiment_curves", "loss_space", "loss_space_plot",
           "paired_hypervolumes", "paired_to_csv", "reference_point", "run_curve", "to_csv", "to_markdown",
           "write_loss_space"]
