"""Where a sweep's time goes, from the runs' own timers: ``budget.md`` and ``budget.csv``.

Per completed run, in seconds (``summary.json`` and ``metrics.jsonl``):

    run                        = wall_time_s
    training                   = train_time_s
    training/steps             = Σ time/step_s             (forward, backward, aggregation, update)
    training/probes, other     = training − steps           (loss-space probes, data, checkpoints)
    evaluation                 = eval/after/time_s
    evaluation/<metric>        = eval/after/time/<metric>_s
    evaluation/decoding, other = evaluation − Σ metrics     (greedy answers, records, intervals)
    start-up, saving           = run − training − evaluation (imports, model load, saved weights)

Each part as the mean, median, minimum and maximum over runs (the median resists a run that was
paused or shared its cores), the sum over runs and its share of the summed run time. The
evaluation of the original model is cached across runs (``eval/before``) and not counted. ``elapsed`` is the span from the first run's start (its ``summary.json`` time
minus its run time) to the last run's end: the sweep's wall clock when it ran without a pause.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from unlearn.results.collect import Run, as_float

FIELDS = ["part", "runs", "mean_s", "median_s", "min_s", "max_s", "total_s", "share"]
METRIC_PREFIX = "eval/after/time/"


def run_parts(run: Run) -> dict[str, float]:
    """The parts of one run's time (module docstring); NaN where the run did not record one."""
    s = run.summary
    wall, training, evaluation = (as_float(s.get(k)) for k in ("wall_time_s", "train_time_s", "eval/after/time_s"))
    steps = math.fsum(as_float(m["time/step_s"]) for m in run.metrics if "time/step_s" in m)
    metrics = {k[len(METRIC_PREFIX):-2]: as_float(v) for k, v in s.items()
               if k.startswith(METRIC_PREFIX) and k.endswith("_s")}
    parts = {"run": wall, "training": training, "training/steps": steps, "training/probes, other": training - steps,
             "evaluation": evaluation}
    parts.update({f"evaluation/{name}": value for name, value in sorted(metrics.items(), key=lambda kv: -kv[1])})
    parts["evaluation/decoding, other"] = evaluation - math.fsum(metrics.values())
    parts["start-up, saving"] = wall - training - (0.0 if math.isnan(evaluation) else evaluation)
    return parts


def budget_rows(runs: Sequence[Run]) -> list[dict[str, float | str | int]]:
    """One dict per part (:data:`FIELDS`) over the completed runs, in the docstring's order."""
    parts = [run_parts(r) for r in runs if r.completed]
    names = list(dict.fromkeys(name for p in parts for name in p))
    total_run = math.fsum(p["run"] for p in parts if math.isfinite(p["run"]))
    rows = []
    for name in names:
        values = [p[name] for p in parts if name in p and math.isfinite(p[name])]
        if not values:
            continue
        total = math.fsum(values)
        rows.append({"part": name, "runs": len(values), "mean_s": total / len(values),
                     "median_s": statistics.median(values), "min_s": min(values),
                     "max_s": max(values), "total_s": total, "share": total / total_run if total_run else math.nan})
    return rows


def elapsed_s(runs: Sequence[Run]) -> float:
    """Last end minus first start over the completed runs (module docstring); NaN without runs."""
    spans = []
    for run in runs:
        path, wall = run.path / "summary.json", as_float(run.summary.get("wall_time_s"))
        if run.completed and path.is_file() and math.isfinite(wall):
            end = path.stat().st_mtime
            spans.append((end - wall, end))
    return max(e for _, e in spans) - min(s for s, _ in spans) if spans else math.nan


def to_csv(runs: Sequence[Run]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()}
                     for row in budget_rows(runs))
    return out.getvalue()


def to_markdown(runs: Sequence[Run], experiment: str) -> str:
    rows = budget_rows(runs)
    done = sum(r.completed for r in runs)
    lines = [f"### {experiment}: where the time goes", "",
             f"{done} completed runs; seconds per run (mean, median [min, max]), the sum over runs and its "
             "share of the summed run time (`unlearn.results.budget`).", "",
             "| part | mean s | median [min, max] s | sum over runs | share |", "|---|---:|---:|---:|---:|"]
    for row in rows:
        parent, _, child = str(row["part"]).rpartition("/")
        lines.append(f"| {'&nbsp;&nbsp;' + child if parent else child} | {row['mean_s']:.0f} | {row['median_s']:.0f} "
                     f"[{row['min_s']:.0f}, {row['max_s']:.0f}] | {row['total_s'] / 60:.1f} min | {row['share']:.0%} |")
    elapsed = elapsed_s(runs)
    if math.isfinite(elapsed):
        lines += ["", f"First start to last end: {elapsed / 60:.1f} min (the sweep's wall clock if it ran without "
                  "a pause; a resumed sweep includes its gaps)."]
    return "\n".join(lines) + "\n"


def write_budget(runs: Sequence[Run], experiment: str, out_dir: Path) -> dict[str, Path]:
    """``budget.md`` and ``budget.csv`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"budget_md": out_dir / "budget.md", "budget_csv": out_dir / "budget.csv"}
    files["budget_md"].write_text(to_markdown(runs, experiment), encoding="utf-8")
    files["budget_csv"].write_text(to_csv(runs), encoding="utf-8")
    return files


__all__ = ["budget_rows", "elapsed_s", "run_parts", "to_csv", "to_markdown", "write_budget"]
