"""One table per experiment: the original model, then one row per method (loss + aggregator).

Cells are the mean over the completed seeds of a method with its 95 % interval, ``mean [lo, hi]``
(:mod:`unlearn.results.intervals`: seed and prompt variance components from the per-prompt
records, else a t-interval over seeds, marked †); the CSV also has the sample std (ddof = 1).
Failed and unfinished runs never enter a mean: they are listed under the table
(:attr:`Table.excluded`), and so are completed runs evaluated on another prompt set than the
experiment's (most common) one, since per-prompt values of different prompts are never pooled.
The original model's row comes from the ``eval/before/*`` values, which every run of an
experiment shares (cached once); its interval is a bootstrap over its prompts.

The corrected harmful rate (a column with its own per-run bounds, ``Column.interval``) is shown
only when every run of the row has it (every seed identified, :mod:`unlearn.evaluation.correction`);
otherwise the cell reads ``n/a (k of n identified)`` and the CSV keeps NaN and ``k/n`` in
``<key>_identified``: a mean over the identified subset of seeds would be a mean over the seeds
where the correction happened to work. Its interval: :mod:`unlearn.results.intervals`. The notes
under each table state the judge's sensitivity and specificity with their intervals and the
smallest harmful-rate difference the prompts can resolve through that judge
(:func:`judge_notes`).

Writers: :func:`to_markdown`, :func:`to_latex`, :func:`to_csv` (every metric, not just the
displayed ones) and :func:`runs_to_csv` (one line per run dir, whatever its status; its ``path`` is
relative to the CSV's folder).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from unlearn.results.collect import EXCLUDED, Run, as_float, method_order, objective_names, run_objectives
from unlearn.results.columns import Column, columns_of, displayed, example_files, per_prompt_fields, with_tradeoff_roles
from unlearn.results.intervals import (
    CORRECTED,
    RUN_BOUNDS,
    T_SEEDS,
    Bootstrap,
    JudgeError,
    corrected_row_interval,
    judge_error,
    metric_interval,
)
from unlearn.results.records import StageRecords, majority_key, stage_records

ORIGINAL = "original"


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean and sample std (ddof = 1; NaN for one value) of the finite values, and their count."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, 0
    mean = statistics.fmean(finite)
    std = statistics.stdev(finite) if len(finite) > 1 else math.nan
    return mean, std, len(finite)


@dataclass
class Row:
    method: str                 # "original" or "<loss>+<aggregator>"
    n: int                      # runs averaged (completed seeds; 1 for the original model)
    seeds: list[int]
    mean: dict[str, float]
    std: dict[str, float]
    lo: dict[str, float] = field(default_factory=dict)   # 95 % interval bounds per metric
    hi: dict[str, float] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)    # how each interval was made ("": none)
    # corrected-rate columns: (runs identified, runs) (absent: no run measured it)
    identified: dict[str, tuple[int, int]] = field(default_factory=dict)
    tag: str | None = None  # the grid's name for the method (grid.json ``names``), e.g. MOLLM

    @property
    def label(self) -> str:
        return f"{self.method} ({self.tag})" if self.tag else self.method


@dataclass
class Table:
    experiment: str
    rows: list[Row]             # the original model first
    runs: list[Run]             # every run of the experiment, whatever its status
    notes: dict[str, Any] = field(default_factory=dict)
    records: dict[str, StageRecords | None] = field(default_factory=dict)  # run path -> after-records
    bootstrap: Bootstrap = field(default_factory=Bootstrap)
    columns: tuple[Column, ...] = ()   # every declared metric (unlearn.results.columns); display ones shown

    @property
    def shown(self) -> tuple[Column, ...]:
        """The columns of the markdown/LaTeX table."""
        return displayed(self.columns)

    def records_of(self, runs: Sequence[Run]) -> list[StageRecords | None]:
        return [self.records.get(str(r.path)) for r in runs]

    def method_runs(self, method: str) -> list[Run]:
        """The completed runs of ``method``, by seed."""
        return sorted((r for r in self.completed if r.method == method), key=lambda r: (r.seed is None, r.seed))

    @property
    def completed(self) -> list[Run]:
        return [r for r in self.runs if r.completed]

    @property
    def excluded(self) -> list[Run]:
        return [r for r in self.runs if not r.completed]

    def row(self, method: str) -> Row:
        for row in self.rows:
            if row.method == method:
                return row
        raise KeyError(method)

    def best(self, column: Column) -> float:
        """The best mean of a column over the method rows (the original model excluded)."""
        values = [r.mean[column.key] for r in self.rows[1:] if math.isfinite(r.mean.get(column.key, math.nan))]
        if not values:
            return math.nan
        return min(values) if column.better == "lower" else max(values)


def metric_names(columns: Sequence[Column]) -> list[str]:
    """The displayed columns' keys first, then the others (CSV only)."""
    return [c.key for c in displayed(columns)] + [c.key for c in columns if not c.display]


def add_intervals(row: Row, runs: Sequence[Run], records: Sequence[StageRecords | None],
                  settings: Bootstrap, columns: Sequence[Column], stage: str = "after") -> Row:
    """Fill ``row.lo``/``row.hi``/``row.how`` for every metric (:func:`metric_interval`); a
    column with its own per-run bounds (the corrected harmful rate): :func:`add_corrected`."""
    for key in metric_names(columns):
        interval, how = metric_interval(runs, records, key, settings, stage)
        if interval is not None:
            row.lo[key], row.hi[key], row.how[key] = interval.lo, interval.hi, how
    for c in columns:
        if c.interval:
            add_corrected(row, runs, records, settings, c, stage)
    return row


def add_corrected(row: Row, runs: Sequence[Run], records: Sequence[StageRecords | None], settings: Bootstrap,
                  column: Column, stage: str = "after") -> Row:
    """The cell of a column with per-run bounds (``column.interval``: the corrected harmful rate).

    ``row.identified[key]`` = (runs with a finite value, runs). Any run without one: the row's
    value, bounds and the CSV's means of the per-run bounds are NaN (never a mean over a subset).
    One run: its value and its own bounds. Several runs sharing one judge: the Rogan–Gladen estimate
    and interval of :func:`corrected_row_interval` from the row's harmful-rate interval (the key
    without ``_corrected``, unclipped) and the judge's stored error rates; runs whose judges'
    error rates differ: the mean of their values without a bracket."""
    key = column.key
    for name in (key, *column.interval):
        for bounds in (row.lo, row.hi, row.how):
            bounds.pop(name, None)
    if not any(f"eval/{stage}/{key}" in r.summary for r in runs):
        return row  # never measured (a metric from before the correction): plain n/a
    values = [r.eval_value(stage, key) for r in runs]
    k = sum(math.isfinite(v) for v in values)
    row.identified[key] = (k, len(runs))
    if k < len(runs):
        for name in (key, *column.interval):
            row.mean[name] = row.std[name] = math.nan
        return row
    if len(runs) == 1:
        row.lo[key], row.hi[key] = (runs[0].eval_value(stage, b) for b in column.interval)
        row.how[key] = RUN_BOUNDS
        return row
    judges = [judge_error(r, stage) for r in runs]
    base = key.removesuffix("_corrected")
    if base == key or any(j is None for j in judges) or not all(j.same_as(judges[0]) for j in judges):
        return row
    hr, _ = metric_interval(runs, records, base, settings, stage, clip=False)
    if hr is None:
        return row
    interval = corrected_row_interval(hr, judges[0], settings.level, seed=settings.seed)
    if math.isfinite(interval.estimate):
        row.mean[key] = interval.estimate
    if math.isfinite(interval.lo) and math.isfinite(interval.hi):
        row.lo[key], row.hi[key], row.how[key] = interval.lo, interval.hi, CORRECTED
    return row


def original_row(completed: Sequence[Run], settings: Bootstrap = Bootstrap(),
                 columns: Sequence[Column] | None = None) -> Row:
    """``eval/before/*`` of the completed runs. They evaluate the same model on the same prompts
    (cached), so the values agree; should they differ, the spread shows as a std. The interval
    is a bootstrap over the prompts of one run's ``before`` records (the others are copies)."""
    columns = columns_of(completed) if columns is None else columns
    mean, std = {}, {}
    distinct: set[tuple] = set()
    for key in metric_names(columns):
        values = [r.eval_value("before", key) for r in completed]
        distinct.add(tuple(round(v, 12) if math.isfinite(v) else None for v in values))
        uniq = sorted({v for v in values if math.isfinite(v)})
        mean[key], std[key], _ = mean_std(uniq if len(uniq) <= 1 else values)
    n = 1 if all(len(set(vals)) <= 1 for vals in distinct) else len(completed)
    row = Row(ORIGINAL, n if completed else 0, [], mean, std)
    before = next((rec for rec in (stage_records(r, "before", **_fields(columns)) for r in completed)
                   if rec is not None), None)
    if before is not None and n == 1:
        add_intervals(row, completed[:1], [before], settings, columns, "before")
        row.how = {k: v for k, v in row.how.items() if not v.startswith(T_SEEDS)}  # one model: no seed spread
    else:  # the corrected rate's own bounds need no per-prompt records
        for c in columns:
            if c.interval:
                add_corrected(row, completed[:1] if n == 1 else completed, [None] * len(completed), settings, c,
                              "before")
    return row


def _fields(columns: Sequence[Column]) -> dict[str, dict[str, str]]:
    return {"fields": per_prompt_fields(columns), "examples": example_files(columns)}


def method_rows(completed: Sequence[Run], records: dict[str, StageRecords | None],
                settings: Bootstrap = Bootstrap(), columns: Sequence[Column] | None = None) -> list[Row]:
    columns = columns_of(completed) if columns is None else columns
    by_method: dict[str, list[Run]] = {}
    for run in completed:
        by_method.setdefault(run.method, []).append(run)
    rows = []
    for method in sorted(by_method, key=method_order(completed)):
        runs = sorted(by_method[method], key=lambda r: (r.seed is None, r.seed))
        mean, std = {}, {}
        for key in metric_names(columns):
            mean[key], std[key], _ = mean_std([r.eval_value("after", key) for r in runs])
        row = Row(method, len(runs), [r.seed for r in runs if r.seed is not None], mean, std,
                  tag=next((r.tag for r in runs if r.tag), None))
        rows.append(add_intervals(row, runs, [records.get(str(r.path)) for r in runs], settings, columns))
    return rows


def exclude_other_prompt_sets(runs: Sequence[Run], records: dict[str, StageRecords | None]) -> list[Run]:
    """Completed runs whose after-records answer another prompt set than the most common one
    become ``excluded`` with the reason (runs without records cannot be checked and stay)."""
    completed = {str(r.path): records.get(str(r.path)) for r in runs if r.completed}
    key = majority_key(completed)
    n_key = next((len(rec.prompts) for rec in completed.values() if rec is not None and rec.key == key), 0)
    out = []
    for run in runs:
        rec = completed.get(str(run.path))
        if rec is not None and rec.key != key:
            run = replace(run, status=EXCLUDED, error=(
                f"evaluated on another prompt set ({len(rec.prompts)} prompts, key {rec.key}) than the "
                f"experiment's ({n_key} prompts, key {key}): per-prompt values are never pooled across "
                "prompt sets; evaluate it on the same prompts or file it under another experiment"))
        out.append(run)
    return out


def _get(config: dict, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


# The headline settings printed under a table (label -> dotted config key): a display choice, each
# a result setting of unlearn.identity (tests/test_fingerprint.py). Any other result setting that
# differs between runs of one method is named under the table by build_notes.
SETTINGS = {
    "steps": "trainer.max_steps",
    "forget batch": "trainer.forget_batch_size",
    "normal batch": "trainer.normal_batch_size",
    "lr": "trainer.optimizer.lr",
    "max length": "dataset.max_length",
    "eval prompts": "eval.n_prompts",
    "max new tokens": "eval.max_new_tokens",
    "utility examples": "eval.utility_max_examples",
}


def mixed_settings(runs: Sequence[Run]) -> list[str]:
    """Result settings (:func:`unlearn.identity.config_differences`) other than ``seed`` that differ
    between runs averaged into one row: such a row mixes settings."""
    from unlearn.identity import config_differences

    first: dict[str, Run] = {}
    keys: set[str] = set()
    for r in runs:
        if r.config and first.setdefault(r.method, r) is not r:
            keys.update(config_differences(first[r.method].config, r.config))
    return sorted(keys - {"seed"})


def weights_of(run: Run) -> list[float] | None:
    """The run's fixed ``aggregator.weights`` (weighted sum), or None."""
    return _get(run.config, "aggregator.weights")


def build_notes(runs: Sequence[Run]) -> dict[str, Any]:
    """Settings and provenance shown under a table (from the completed runs)."""
    completed = [r for r in runs if r.completed] or list(runs)
    notes: dict[str, Any] = {}
    if not completed:
        return notes
    first = completed[0]
    s = first.summary
    notes["model"] = s.get("model") or _get(first.config, "model.name") or "?"
    for label, key in SETTINGS.items():
        values = {str(_get(r.config, key)) for r in completed}
        notes[label] = ", ".join(sorted(values))
    mixed = mixed_settings(completed)
    if mixed:
        notes["settings that differ between seeds of one method"] = ", ".join(mixed)
    weights = sorted({f"{r.method}: " + ", ".join(f"{o} {w}" for o, w in zip(run_objectives(r), weights_of(r)))
                      for r in completed if weights_of(r) is not None})
    if weights:
        notes["weighted_sum weights"] = "; ".join(weights)
    for key in ("eval/judge", "eval/scorer", "eval/labels/toxicity", "eval/labels/obscene",
                "eval/fluency_reference"):
        if key in s:
            notes[key.removeprefix("eval/")] = s[key]
    times = [as_float(r.summary.get("wall_time_s")) for r in completed if r.completed]
    times = [t for t in times if math.isfinite(t)]
    if times:
        notes["wall time per run (s)"] = (f"{statistics.fmean(times):.0f} mean, {sum(times) / 60:.1f} min summed over "
                                          "runs (not the sweep's wall time when jobs ran in parallel)")
    mtimes = [(r.path / "summary.json").stat().st_mtime for r in completed
              if (r.path / "summary.json").is_file()]
    if mtimes:
        notes["measured"] = dt.datetime.fromtimestamp(max(mtimes)).strftime("%Y-%m-%d")
    return notes


def judges_of(runs: Sequence[Run]) -> list[JudgeError]:
    """The distinct judge error rates of the completed runs: per run, the stage (``after``, else
    ``before``, e.g. a cached evaluation from before the intervals) that stored the most (prompt
    bootstrap, then any interval, then the rates alone)."""
    out: list[JudgeError] = []
    for r in runs:
        if not r.completed:
            continue
        found = [j for j in (judge_error(r, "after"), judge_error(r, "before")) if j is not None]
        if not found:
            continue
        j = max(found, key=lambda e: (e.prompts > 0, e.has_intervals))  # the first of equals
        if not any(j.name == o.name and j.same_as(o) for o in out):
            out.append(j)
    return out


def prompt_count(runs: Sequence[Run]) -> int:
    """The prompts each run's answers were judged on (``eval/before/n_prompts``, else the config)."""
    for r in runs:
        for value in (r.eval_value("before", "n_prompts"), r.eval_value("after", "n_prompts"),
                      as_float(_get(r.config, "eval.n_prompts"))):
            if math.isfinite(value) and value > 0:
                return int(value)
    return 0


def judge_note(judge: JudgeError, n_prompts: int, base_rate: float, level: float = 0.95,
               latex: bool = False) -> str:
    """The judge's Se and Sp with their intervals, J, and the smallest harmful-rate difference
    between two runs resolvable at ``n_prompts`` (:func:`unlearn.evaluation.correction.detectable_difference`:
    two-sided 5 %, 80 % power, unpaired two-proportion test at ``base_rate``, the original
    model's judged rate; true scale = judged ÷ J). ``latex``: ASCII text for a caption."""
    from unlearn.evaluation.correction import detectable_difference

    bracket = lambda lo, hi: f" [{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) and math.isfinite(hi) else ""  # noqa: E731
    name = judge.name.split(":", 1)[0]
    pct = f"{100 * level:.0f}%"
    minus, div = ("-", "/") if latex else ("−", "÷")
    text = (f"{name}: sensitivity {judge.se:.3f}{bracket(judge.se_lo, judge.se_hi)}, specificity "
            f"{judge.sp:.3f}{bracket(judge.sp_lo, judge.sp_hi)} ({pct} {judge.method}), "
            f"J = Se + Sp {minus} 1 = {judge.j:.3f}")
    obs, true = detectable_difference(base_rate, n_prompts, judge.se, judge.sp) if n_prompts else (math.nan,) * 2
    if math.isfinite(obs):
        resolved = (f"{true:.3f} true (judged {div} J)" if math.isfinite(true) and true <= 1 else
                    "no true difference (judged " + div + " J > 1)")
        text += (f"; smallest harmful-rate difference between two runs resolvable at {n_prompts} prompts "
                 f"(unpaired two-proportion test, two-sided 5%, 80% power, at the original model's judged rate "
                 f"{base_rate:.3f}): {obs:.3f} judged, {resolved}")
    return text


def judge_notes(runs: Sequence[Run], original: Row | None, level: float = 0.95, latex: bool = False) -> list[str]:
    """One :func:`judge_note` per distinct judge of the completed runs."""
    base = original.mean.get("harmful_rate", math.nan) if original is not None else math.nan
    n = prompt_count([r for r in runs if r.completed])
    return [judge_note(j, n, base, level, latex) for j in judges_of(runs)]


def with_judge_notes(notes: dict[str, Any], runs: Sequence[Run], original: Row | None,
                     level: float = 0.95) -> dict[str, Any]:
    """``notes`` with ``judge error`` right after ``judge`` (at the end when there is no judge note)."""
    lines = judge_notes(runs, original, level)
    if not lines:
        return notes
    out: dict[str, Any] = {}
    for k, v in notes.items():
        out[k] = v
        if k == "judge":
            out["judge error"] = "; ".join(lines)
    out.setdefault("judge error", "; ".join(lines))
    return out


def build_table(experiment: str, runs: Sequence[Run], settings: Bootstrap = Bootstrap()) -> Table:
    columns = columns_of(runs)
    records = {str(r.path): stage_records(r, **_fields(columns)) for r in runs if r.completed}
    runs = exclude_other_prompt_sets(runs, records)
    completed = [r for r in runs if r.completed]
    records = {k: v for k, v in records.items() if k in {str(r.path) for r in completed}}
    rows = [original_row(completed, settings, columns), *method_rows(completed, records, settings, columns)]
    notes = with_judge_notes(build_notes(runs), runs, rows[0], settings.level)
    return Table(experiment, rows, list(runs), notes, records, settings, columns)


def build_tables(groups: dict[str, Sequence[Run]], settings: Bootstrap = Bootstrap()) -> dict[str, Table]:
    return {name: build_table(name, runs, settings) for name, runs in sorted(groups.items())}


# ----------------------------------------------------------------------------- formatting
T_MARK = "†"


def cell(mean: float, lo: float, hi: float, digits: int, mark: str = "") -> str:
    """``mean [lo, hi]`` (``mark`` appended), the mean alone without finite bounds, or n/a."""
    if not math.isfinite(mean):
        return "n/a"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]{mark}"


def column_cell(row: Row, c: Column) -> str:
    """:func:`cell` of a row's column; † marks a t-interval over seeds (no per-prompt records); a
    corrected rate that some run of the row lacks reads ``n/a (k of n identified)``."""
    key = c.key
    k, n = row.identified.get(key, (0, 0))
    if k < n:
        return f"n/a ({k} of {n} identified)"
    mark = T_MARK if row.how.get(key, "").startswith(T_SEEDS) else ""
    return cell(row.mean.get(key, math.nan), row.lo.get(key, math.nan), row.hi.get(key, math.nan), c.digits, mark)


def _is_best(table: Table, row: Row, column: Column) -> bool:
    if row.method == ORIGINAL or len(table.rows) < 3:
        return False
    # a lone value among methods without one (e.g. n/a corrected rates) is not "the best"
    if any(not math.isfinite(r.mean.get(column.key, math.nan)) for r in table.rows if r.method != ORIGINAL):
        return False
    best = table.best(column)
    value = row.mean.get(column.key, math.nan)
    return math.isfinite(value) and math.isclose(value, best, rel_tol=0, abs_tol=0.5 * 10 ** -column.digits)


def to_markdown(table: Table) -> str:
    out = io.StringIO()
    out.write(f"### {table.experiment}\n\n")
    header = ["Method", "Seeds", *(f"{c.label} {c.arrow}" for c in table.shown)]
    out.write("| " + " | ".join(header) + " |\n")
    out.write("|" + "|".join(["---", "---:"] + ["---:"] * len(table.shown)) + "|\n")
    for row in table.rows:
        cells = []
        for c in table.shown:
            text = column_cell(row, c)
            cells.append(f"**{text}**" if _is_best(table, row, c) else text)
        label = f"{row.label}" if row.method != ORIGINAL else f"original ({table.notes.get('model', 'model')})"
        out.write("| " + " | ".join([label, str(row.n), *cells]) + " |\n")
    out.write(f"\nMean over seeds [95% interval] from the per-prompt records, counting both the seed-to-seed "
              "and the prompt sampling error (variance components, generalized pivot; one seed: a bootstrap over "
              f"prompts, {table.bootstrap.n_boot} resamples); {T_MARK}: a t-interval over the per-seed values (no "
              "per-prompt records for that metric; wide with 3 seeds); the original model: a bootstrap over its "
              "prompts. ↓ lower is better, ↑ higher is better; **bold**: best mean (see "
              "paired_differences.md for which differences resolve). Corrected harmful rate: (HR + Sp − 1)/"
              "(Se + Sp − 1) clipped to [0, 1], with the judge's sensitivity Se and specificity Sp on labelled "
              "held-out data (judge error below); shown only when every seed of the row is identified, else "
              "n/a (k of n identified), never a mean over a subset of seeds; one run: its own interval (HR "
              "sampling and the judge's Se, Sp resampled by validation prompt); several seeds: the correction "
              "of the row's harmful rate, its interval from draws of the harmful rate's interval (seeds and "
              "prompts) and of the judge's Se, Sp, which every seed shares; assumes the judge's error rates "
              "transfer to the model's answers.\n")
    if table.notes:
        out.write("\n" + "\n".join(f"- {k}: {v}" for k, v in table.notes.items()) + "\n")
    out.write("\n" + excluded_markdown(table))
    return out.getvalue()


def excluded_markdown(table: Table) -> str:
    n = len(table.runs)
    if not table.excluded:
        return f"All {n} runs completed.\n"
    lines = [f"{len(table.excluded)} of {n} runs are left out of the means (failed or unfinished):\n",
             "| run dir | method | seed | status | reason |", "|---|---|---:|---|---|"]
    for r in table.excluded:
        reason = (r.error or "").splitlines()[0][:160].replace("|", "\\|") if r.error else ""
        lines.append(f"| {r.path} | {r.method} | {r.seed} | {r.status} | {reason} |")
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def to_latex(table: Table) -> str:
    cols = "l" + "r" + "r" * len(table.shown)
    header = ["Method", "$n$", *(f"{latex_escape(c.label)} {c.latex_arrow}" for c in table.shown)]
    lines = [
        "% Generated by python -m unlearn.results; needs \\usepackage{booktabs}",
        r"\begin{table}[t]", r"\centering", r"\small",
        rf"\caption{{{latex_escape(table.experiment)}: mean over seeds [95\% interval over seeds "
        rf"and prompts; $^\dagger$ t-interval over seeds] ({latex_escape(str(table.notes.get('model', '')))})."
        + "".join(" Judge " + latex_escape(line) + "." for line in
                  judge_notes(table.runs, table.rows[0] if table.rows else None, table.bootstrap.level, latex=True))
        + "}",
        rf"\label{{tab:{latex_escape(table.experiment).replace(chr(92), '')}}}",
        rf"\begin{{tabular}}{{{cols}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule",
    ]
    for i, row in enumerate(table.rows):
        cells = []
        for c in table.shown:
            text = column_cell(row, c).replace(T_MARK, r"$^\dagger$")
            cells.append(rf"\textbf{{{text}}}" if _is_best(table, row, c) else text)
        label = "Original" if row.method == ORIGINAL else latex_escape(row.label)
        lines.append(" & ".join([label, str(row.n), *cells]) + r" \\")
        if i == 0:
            lines.append(r"\midrule")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def to_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = metric_names(table.columns)
    own = [c.key for c in table.columns if c.interval]  # corrected rates: runs identified, "k/n"
    writer.writerow(["experiment", "method", "n", "seeds",
                     *(f"{k}_{s}" for k in names for s in ("mean", "lo", "hi", "std", "interval")),
                     *(f"{k}_identified" for k in own)])
    for row in table.rows:
        writer.writerow([table.experiment, row.method, row.n, " ".join(map(str, row.seeds)),
                         *(v for k in names for v in (_num(row.mean.get(k)), _num(row.lo.get(k)),
                                                      _num(row.hi.get(k)), _num(row.std.get(k)), row.how.get(k, ""))),
                         *("{}/{}".format(*row.identified[k]) if k in row.identified else "" for k in own)])
    return out.getvalue()


def _num(value: Any) -> str:
    v = as_float(value)
    return "" if not math.isfinite(v) else repr(v)


def relative_path(path: Path, start: Path | None = None) -> str:
    """``path`` relative to the folder ``start`` (default: the working directory), with POSIX
    separators, so that a CSV names no absolute path of the machine that wrote it and stays valid
    when the results folder and the sweep are moved together. Where no relative path exists (another
    drive), only the last two parts, ``<method>/seed=<seed>``."""
    path = Path(path)
    try:
        start = Path(start or Path.cwd()).absolute()
        return Path(os.path.relpath(path.absolute(), start)).as_posix()
    except ValueError:
        return Path(*path.parts[-2:]).as_posix()


def runs_to_csv(runs: Sequence[Run], relative_to: Path | None = None) -> str:
    """One line per run dir (every status), with its after-metrics and final losses. ``path`` is the
    run dir relative to ``relative_to`` (:func:`write_table` passes the CSV's own folder; default:
    the working directory), never an absolute path of the machine that ran the sweep."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = metric_names(columns_of(runs))
    objectives = objective_names(runs)
    writer.writerow(["experiment", "method", "seed", "status", "path", "steps", "wall_time_s",
                     *(f"after/{k}" for k in names), *(f"final/loss/{o}" for o in objectives), "error"])
    order = method_order(runs)
    for r in sorted(runs, key=lambda r: (order(r.method), r.seed is None, r.seed)):
        s = r.summary
        writer.writerow([r.experiment, r.method, "" if r.seed is None else r.seed, r.status,
                         relative_path(r.path, relative_to),
                         s.get("steps", ""), _num(s.get("wall_time_s")),
                         *(_num(s.get(f"eval/after/{k}")) for k in names),
                         *(_num(s.get(f"final/loss/{o}")) for o in objectives),
                         (r.error or "").splitlines()[0] if r.error and not r.completed else ""])
    return out.getvalue()


def steps_to_csv(runs: Sequence[Run]) -> str:
    """The per-step losses (and ``descent/*``, ``descent_update/*``, the direction's and the
    update's norms and their cosine) of every run, long format: what the notebook plots."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    keys = [f"{k}/{o}" for k in ("loss", "descent", "descent_update", "grad_norm", "weight")
            for o in objective_names(runs)]
    extra = ["direction_norm", "update_norm", "cos/direction_update"]
    writer.writerow(["method", "seed", "status", "step", "skipped", *keys, *extra])
    order = method_order(runs)
    for r in sorted(runs, key=lambda r: (order(r.method), r.seed is None, r.seed)):
        for rec in r.metrics:
            writer.writerow([r.method, "" if r.seed is None else r.seed, r.status, rec.get("step", ""),
                             int(bool(rec.get("skipped"))), *(_num(rec.get(k)) for k in (*keys, *extra))])
    return out.getvalue()


def write_table(table: Table, out_dir: Path) -> dict[str, Path]:
    """``table.md``, ``table.tex``, ``table.csv``, ``runs.csv``, ``steps.csv`` and ``columns.json``
    (the declared columns, with their trade-off roles: what the notebook plots) in ``out_dir``."""
    import json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"md": out_dir / "table.md", "tex": out_dir / "table.tex", "csv": out_dir / "table.csv",
             "runs": out_dir / "runs.csv", "steps": out_dir / "steps.csv", "columns": out_dir / "columns.json"}
    files["columns"].write_text(json.dumps([c.to_dict() for c in with_tradeoff_roles(table.columns)], indent=1),
                                encoding="utf-8")
    files["md"].write_text(to_markdown(table), encoding="utf-8")
    files["tex"].write_text(to_latex(table), encoding="utf-8")
    files["csv"].write_text(to_csv(table), encoding="utf-8")
    files["runs"].write_text(runs_to_csv(table.runs, relative_to=out_dir), encoding="utf-8")
    files["steps"].write_text(steps_to_csv(table.runs), encoding="utf-8")
    return files


def to_dataframe(table: Table):
    """The displayed table as a pandas DataFrame (strings "mean [lo, hi]"), for W&B and notebooks."""
    import pandas as pd

    records = []
    for row in table.rows:
        rec = {"method": row.method, "seeds": row.n}
        for c in table.shown:
            rec[f"{c.label} {c.arrow}"] = column_cell(row, c)
        records.append(rec)
    return pd.DataFrame.from_records(records)


__all__ = [
    "ORIGINAL", "Column", "Row", "Table", "build_table", "build_tables",
    "cell", "mean_std", "relative_path", "runs_to_csv", "steps_to_csv", "to_csv",
    "to_dataframe", "to_latex", "to_markdown", "write_table",
]
