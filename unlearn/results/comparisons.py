"""Every method against a reference method (default ``uce+dual``, MOLLM) and against the original
model: paired differences.

For a metric with per-prompt records in both methods (:mod:`unlearn.results.records`), the
difference ``D = mean(method) − mean(reference)`` over the shared prompts comes with
:func:`unlearn.uncertainty.paired_difference` (each method's seeds, the prompts shared, so what
prompts have in common cancels). For utility with per-example NLLs the difference is of the mean
loss (nats per token, the log of the PPL ratio). A metric without such records (distinct-2, or
runs logged before per-prompt records) gets a Welch t-interval over the two methods' per-seed
values, ``D ± t_ν · √(s_a²/n_a + s_b²/n_b)`` with Satterthwaite's ν (needs ≥ 2 seeds each).

A difference is *resolved* at 95 % when its interval excludes 0. For the harmful rate the exact
McNemar test also runs on the seed-majority flags: a prompt is flagged for a method when at least
half of its seeds' answers were judged harmful (one flag per prompt and method, so the test sees
the prompts, not seeds, as its sample).

The corrected harmful rate is not compared separately: the Rogan–Gladen correction is the same
affine map for both methods, so its difference is the raw one divided by (Se + Sp − 1) and
resolves exactly when the raw one does.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unlearn.identity import parse_label
from unlearn.results.collect import Run
from unlearn.results.columns import Column
from unlearn.results.intervals import Bootstrap, agrees_with_summary, metric_matrix
from unlearn.results.records import UTILITY
from unlearn.results.tables import ORIGINAL, Table
from unlearn.uncertainty import Interval, mcnemar_exact, paired_difference, seed_prompt_interval
from unlearn.uncertainty.student_t import t_quantile

REFERENCE = "uce+dual"  # MOLLM; a sweep names its own in grid.json (conf/grid/*.yaml `reference`)
PAIRED, WELCH = "paired (seeds × shared prompts)", "Welch t over seeds"
SEED_PAIRED = "paired by (seed, prompt)"
# what must agree between two runs of one seed for them to have seen the same training batches
# (each data stream is seeded by the run's seed, unlearn/experiment.py)
COMMON_DATA = ("seed", "dataset", "trainer.forget_batch_size", "trainer.normal_batch_size", "trainer.max_steps")


def _dotted(config: dict, key: str):
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def common_random_numbers(runs_m: Sequence[Run], runs_r: Sequence[Run]) -> bool:
    """Both methods have the same seeds, and the runs of each seed the same data settings
    (:data:`COMMON_DATA`): seed s gave both the same forget/normal batches and prompts."""
    if len(runs_m) < 2 or [r.seed for r in runs_m] != [r.seed for r in runs_r]:
        return False
    return all(_dotted(a.config, k) == _dotted(b.config, k) for a, b in zip(runs_m, runs_r, strict=True)
               for k in COMMON_DATA)


def compared(table: Table) -> list[str]:
    """The displayed columns of ``table`` except those with their own per-run bounds."""
    return [c.key for c in table.shown if c.interval is None]


def column(table: Table, key: str) -> Column:
    """The declared column of ``key`` (a plain one when none is declared)."""
    return next((c for c in table.columns if c.key == key), Column(key, key))


@dataclass(frozen=True)
class Comparison:
    """``method`` − ``reference`` on one metric."""

    method: str
    metric: str                       # the compared quantity (utility_loss for per-example utility)
    interval: Interval | None
    how: str                          # PAIRED, WELCH or "" with ``reason``
    n_prompts: int = 0
    seeds: tuple[int, int] = (0, 0)   # (method, reference)
    mcnemar: tuple[int, int, float] | None = None  # (method only, reference only, p)
    unpaired_half_width: float = math.nan  # seed-paired only: the half-width with independent seeds
    reason: str = ""

    @property
    def resolved(self) -> bool:
        return self.interval is not None and self.interval.excludes_zero()


def welch_interval(a: Sequence[float], b: Sequence[float], level: float) -> Interval | None:
    """mean(a) − mean(b) ± t_ν · √(s_a²/n_a + s_b²/n_b), ν by Satterthwaite; None below 2 each."""
    x = np.asarray([v for v in a if math.isfinite(v)], dtype=float)
    y = np.asarray([v for v in b if math.isfinite(v)], dtype=float)
    if x.size < 2 or y.size < 2:
        return None
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    diff = float(x.mean() - y.mean())
    if va + vb == 0:
        return Interval(diff, diff, diff, level, WELCH + " (no variation)", x.size + y.size)
    df = (va + vb) ** 2 / (va**2 / (x.size - 1) + vb**2 / (y.size - 1))
    half = t_quantile((1 + level) / 2, df) * math.sqrt(va + vb)
    return Interval(diff, diff - half, diff + half, level, WELCH, x.size + y.size, 0, float(df))


def majority_flags(harmful: np.ndarray) -> np.ndarray:
    """Per prompt: judged harmful in at least half of the seeds (NaN cells left out)."""
    with np.errstate(invalid="ignore"):
        return np.nanmean(harmful, axis=0) >= 0.5


def compare(table: Table, method: str, reference: str, metric: str, settings: Bootstrap) -> Comparison:
    runs_m, runs_r = table.method_runs(method), table.method_runs(reference)
    seeds = (len(runs_m), len(runs_r))
    mat_m, mat_r = (metric_matrix(table.records_of(r), metric) for r in (runs_m, runs_r))
    paired_ok = (mat_m is not None and mat_r is not None and mat_m.shape[1] == mat_r.shape[1]
                 and agrees_with_summary(mat_m, runs_m, metric, "after")
                 and agrees_with_summary(mat_r, runs_r, metric, "after"))
    if paired_ok and all(metric in rec.values for rec in table.records_of([*runs_m, *runs_r])):
        keys = {rec.key for rec in table.records_of([*runs_m, *runs_r])}
        paired_ok = len(keys) == 1
    if paired_ok:
        interval = paired_difference(mat_m, mat_r, n_boot=settings.n_boot, level=settings.level, seed=settings.seed)
        how, unpaired = PAIRED, math.nan
        if mat_m.shape == mat_r.shape and common_random_numbers(runs_m, runs_r):
            # seed s trained both on the same batches: the (seed, prompt) differences, with their
            # own seed and prompt components, so what a seed's data order does to both cancels
            unpaired = interval.half_width
            difference = seed_prompt_interval(mat_m - mat_r, n_boot=settings.n_boot, level=settings.level,
                                              seed=settings.seed)
            interval = Interval(difference.estimate, difference.lo, difference.hi, difference.level,
                                f"{SEED_PAIRED}: {difference.method}", difference.n, difference.n_missing,
                                difference.df)
            how = SEED_PAIRED
        mcnemar = None
        if metric == "harmful_rate":
            shared = np.isfinite(mat_m).any(axis=0) & np.isfinite(mat_r).any(axis=0)
            mcnemar = mcnemar_exact(majority_flags(mat_m[:, shared]), majority_flags(mat_r[:, shared]))
        name = "utility_loss" if metric == UTILITY else metric
        return Comparison(method, name, interval, how, mat_m.shape[1], seeds, mcnemar, unpaired_half_width=unpaired)
    interval = welch_interval(*(_values(r, metric) for r in (runs_m, runs_r)), settings.level)
    if interval is None:
        return Comparison(method, metric, None, "", 0, seeds,
                          reason="no per-prompt records for both and fewer than 2 seeds for one")
    return Comparison(method, metric, interval, WELCH, 0, seeds,
                      reason="no per-prompt records shared by both methods (or they do not reproduce the summaries)")


def _values(runs: Sequence[Run], metric: str) -> list[float]:
    return [r.eval_value("after", metric) for r in runs]


def comparisons(table: Table, reference: str = REFERENCE, settings: Bootstrap | None = None) -> list[Comparison]:
    """Every other method against ``reference`` on each metric of :func:`compared` (empty when
    the reference has no completed run)."""
    settings = settings or table.bootstrap
    methods = [r.method for r in table.rows if r.method not in (ORIGINAL, reference)]
    if not table.method_runs(reference):
        return []
    return [compare(table, m, reference, k, settings) for m in methods for k in compared(table)]


def against_original(table: Table, settings: Bootstrap | None = None) -> list[Comparison]:
    """Every method's after-training values minus the original model's (its ``before`` records,
    the same prompts): ``D = mean(method) − mean(original)``, paired by prompt with the method's
    seeds (the original is one fixed model, so it adds no seed term). Metrics without per-prompt
    records in both are left untested (the reason says so)."""
    from unlearn.results.columns import example_files, per_prompt_fields
    from unlearn.results.records import stage_records

    settings = settings or table.bootstrap
    sources = {"fields": per_prompt_fields(table.columns), "examples": example_files(table.columns)}
    found = []
    for method in [r.method for r in table.rows if r.method != ORIGINAL]:
        runs = table.method_runs(method)
        before = next((rec for rec in (stage_records(r, "before", **sources) for r in runs) if rec is not None), None)
        for metric in compared(table):
            mat_m = metric_matrix(table.records_of(runs), metric)
            mat_o = metric_matrix([before], metric) if before is not None else None
            ok = (mat_m is not None and mat_o is not None and mat_m.shape[1] == mat_o.shape[1]
                  and agrees_with_summary(mat_m, runs, metric, "after")
                  and agrees_with_summary(mat_o, runs[:1], metric, "before"))
            if ok and metric in before.values:
                ok = all(rec is not None and rec.key == before.key for rec in table.records_of(runs))
            name = "utility_loss" if metric == UTILITY else metric
            if not ok:
                found.append(Comparison(method, name, None, "", 0, (len(runs), 1),
                                        reason="no per-prompt records of both the method and the original"))
                continue
            interval = paired_difference(mat_m, mat_o, n_boot=settings.n_boot, level=settings.level, seed=settings.seed)
            mcnemar = None
            if metric == "harmful_rate":
                shared = np.isfinite(mat_m).any(axis=0) & np.isfinite(mat_o).any(axis=0)
                mcnemar = mcnemar_exact(majority_flags(mat_m[:, shared]), majority_flags(mat_o[:, shared]))
            found.append(Comparison(method, name, interval, PAIRED, mat_m.shape[1], (len(runs), 1), mcnemar))
    return found


# ----------------------------------------------------------------------------- writing
def difference_cell(c: Comparison, d: int = 3) -> str:
    """``+D [lo, hi]`` with ``d`` digits, ``*`` when resolved."""
    if c.interval is None or not math.isfinite(c.interval.estimate):
        return "n/a"
    i = c.interval
    bounds = f" [{i.lo:+.{d}f}, {i.hi:+.{d}f}]" if math.isfinite(i.lo) and math.isfinite(i.hi) else ""
    return f"{i.estimate:+.{d}f}{bounds}{'*' if c.resolved else ''}"


def reading(metric: Column, entries: Sequence[Comparison], reference: str) -> str:
    """One line per metric from the resolved entries (direction and size with the interval);
    unresolved ones are named as indistinguishable."""
    label, d = metric.label.lower(), metric.digits
    parts = []
    for c in entries:
        if not c.resolved:
            continue
        i = c.interval
        size, lo, hi = (abs(i.estimate), min(abs(i.lo), abs(i.hi)), max(abs(i.lo), abs(i.hi)))
        direction = "lower" if i.estimate > 0 else "higher"  # D = other − reference
        good = (direction == "lower") == (metric.better == "lower")
        parts.append(f"{reference} has a {direction} {label} than {c.method} by {size:.{d}f} "
                     f"[{lo:.{d}f}, {hi:.{d}f}] ({'better' if good else 'worse'})")
    same = [c.method for c in entries if c.interval is not None and not c.resolved]
    if same:
        parts.append(f"{reference} is indistinguishable from {', '.join(same)} at 95 %")
    for c in entries:
        if c.interval is None:
            parts.append(f"not tested against {c.method} ({c.reason})")
    return f"- {label}: " + "; ".join(parts) + "."


def to_markdown(table: Table, found: Sequence[Comparison], reference: str = REFERENCE) -> str:
    out = io.StringIO()
    out.write(f"### {table.experiment}: differences against {reference}\n\n")
    if not found:
        out.write(f"{reference} has no completed run in this experiment: no paired differences.\n")
        return out.getvalue()
    metrics = list(dict.fromkeys(c.metric for c in found))
    methods = list(dict.fromkeys(c.method for c in found))
    by = {(c.method, c.metric): c for c in found}
    cols = {m: column(table, m) for m in metrics}
    out.write("| Method − " + reference + " | " + " | ".join(cols[m].label.lower() for m in metrics) + " |\n")
    out.write("|---|" + "---:|" * len(metrics) + "\n")
    for method in methods:
        out.write(f"| {method} | " + " | ".join(difference_cell(by[(method, m)], cols[m].digits) for m in metrics)
                  + " |\n")
    out.write(f"\nDifference of means (method − {reference}) [95% interval]; `*`: resolved (the interval "
              "excludes 0). Paired over the shared prompts with both methods' seeds (variance components, "
              "Satterthwaite t) where both kept per-prompt records; otherwise a Welch t-interval over seeds "
              "(listed in paired_differences.csv, column `how`). Utility with per-example records: the mean "
              "loss in nats/token (the log of the PPL ratio).\n")
    ratios = [c.interval.half_width / c.unpaired_half_width for c in found
              if c.how == SEED_PAIRED and c.interval is not None and c.unpaired_half_width > 0]
    if ratios:
        out.write(f"\n{len(ratios)} of {len(found)} differences are {SEED_PAIRED}: both methods ran the same seeds, "
                  "and seed s trained both on the same batches, so the interval is over the per-(seed, prompt) "
                  "differences (variance components, generalized pivot) and what a seed's data order does to both "
                  f"cancels. Their half-widths are {min(ratios):.2f}–{max(ratios):.2f}× (median "
                  f"{float(np.median(ratios)):.2f}×) those that treat the two methods' seeds as independent "
                  "(column `unpaired_half_width` of the CSV).\n")
    mc = [c for c in found if c.mcnemar is not None]
    if mc:
        out.write("\nExact McNemar test on the seed-majority harmful flags (a prompt is flagged for a method "
                  "when at least half of its seeds' answers are judged harmful):\n\n"
                  f"| Method | harmful for it only | harmful for {reference} only | p (two-sided) |\n"
                  "|---|---:|---:|---:|\n")
        for c in mc:
            a, b, p = c.mcnemar
            out.write(f"| {c.method} | {a} | {b} | {p:.3g}{'*' if p < 0.05 else ''} |\n")
    out.write("\nReading (directions from resolved differences only):\n\n")
    for metric in metrics:
        out.write(reading(cols[metric], [c for c in found if c.metric == metric], reference) + "\n")
    return out.getvalue()


CSV_FIELDS = ["experiment", "reference", "method", "metric", "better", "how", "n_prompts", "seeds_method",
              "seeds_reference", "difference", "lo", "hi", "level", "resolved", "df",
              "mcnemar_method_only", "mcnemar_reference_only", "mcnemar_p", "unpaired_half_width", "note"]


def to_csv(table: Table, found: Sequence[Comparison], reference: str = REFERENCE) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for c in found:
        i = c.interval
        nums = ("", "", "", "", "") if i is None else (repr(i.estimate), repr(i.lo), repr(i.hi), repr(i.level),
                                                       "" if not math.isfinite(i.df) else repr(i.df))
        mc = c.mcnemar or ("", "", "")
        writer.writerow([table.experiment, reference, c.method, c.metric, column(table, c.metric).better, c.how,
                         c.n_prompts or "", c.seeds[0], c.seeds[1], *nums[:4], int(c.resolved), nums[4], *mc,
                         repr(c.unpaired_half_width) if math.isfinite(c.unpaired_half_width) else "",
                         c.reason or (i.method if i is not None else "")])
    return out.getvalue()


def within_update_rules(table: Table, reference: str = REFERENCE,
                        settings: Bootstrap | None = None) -> dict[str, list[Comparison]]:
    """For each update rule other than the reference's (the label's optimizer bracket, e.g.
    ``[sgd]``) whose grid has the reference's method under it (``uce+dual[sgd]``): every other
    method of that rule against it, keyed by that local reference."""
    settings = settings or table.bootstrap
    own = parse_label(reference).update_rule
    base = reference[: len(reference) - len(own)]
    methods = [r.method for r in table.rows if r.method != ORIGINAL]
    out: dict[str, list[Comparison]] = {}
    for rule in dict.fromkeys(parse_label(m).update_rule for m in methods):
        local = base + rule
        if rule == own or not table.method_runs(local):
            continue
        out[local] = [compare(table, m, local, k, settings) for m in methods
                      if parse_label(m).update_rule == rule and m != local for k in compared(table)]
    return out


def aggregator_key(method: str) -> str:
    """The label's aggregator and update rule without its settings: ``weighted_sum`` for
    ``uce,kl,retain,safe+weighted_sum(weights=1,1,1,1)``, ``mgda[sgd]`` for ``ga+mgda[sgd]``."""
    parts = parse_label(method)
    return parts.aggregator_name + parts.update_rule


def within_aggregators(table: Table, reference: str = REFERENCE,
                       settings: Bootstrap | None = None) -> dict[str, list[Comparison]]:
    """For each aggregator (and update rule) other than the reference's: every method with
    other losses or objectives under it against the reference's losses under it, e.g.
    ``uce,kl,retain,safe+weighted_sum(weights=1,1,1,1)`` − ``uce+weighted_sum``, keyed by that
    local reference (what changing the objectives does, one aggregator at a time)."""
    settings = settings or table.bootstrap
    losses = parse_label(reference).losses
    methods = [r.method for r in table.rows if r.method != ORIGINAL]
    out: dict[str, list[Comparison]] = {}
    for method in methods:
        local = next((m for m in methods if parse_label(m).losses == losses
                      and aggregator_key(m) == aggregator_key(method)), None)
        if local is None or local in (method, reference) or parse_label(method).losses == losses:
            continue
        out.setdefault(local, []).extend(compare(table, method, local, k, settings) for k in compared(table))
    return out


def write_comparisons(table: Table, out_dir: Path, reference: str = REFERENCE) -> dict[str, Path]:
    """``paired_differences.md`` and ``.csv`` in ``out_dir``: every method against ``reference``,
    then within each other update rule against the reference's method under it
    (:func:`within_update_rules`), then other objectives under each other aggregator against the
    reference's (:func:`within_aggregators`), then every method against the original model."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    others = [(ref, found) for ref, found in [*within_update_rules(table, reference).items(),
                                              *within_aggregators(table, reference).items(),
                                              (ORIGINAL, against_original(table))] if found]
    sections = [(reference, comparisons(table, reference)), *others]  # the first even when empty
    files = {"paired_md": out_dir / "paired_differences.md", "paired_csv": out_dir / "paired_differences.csv"}
    markdown = "\n".join(to_markdown(table, found, ref) for ref, found in sections)
    csv_text = "".join(to_csv(table, found, ref) if k == 0 else to_csv(table, found, ref).split("\n", 1)[1]
                       for k, (ref, found) in enumerate(sections))  # one header
    files["paired_md"].write_text(markdown, encoding="utf-8")
    files["paired_csv"].write_text(csv_text, encoding="utf-8")
    return files


__all__ = ["REFERENCE", "against_original", "column", "compared", "Comparison", "compare", "comparisons", "majority_flags", "reading",
           "to_csv", "to_markdown", "welch_interval", "within_aggregators", "within_update_rules",
           "write_comparisons", "aggregator_key"]
