"""Read run dirs into :class:`Run` records.

A run dir is any folder holding ``.hydra/config.yaml`` or ``summary.json`` (what
:func:`unlearn.experiment.run_experiment` writes). Given sweep dirs, every run dir below them is
found (``wandb/``, ``checkpoints/``, ``model/`` and hidden folders such as ``.stale/`` are not
searched). Nothing here imports torch: reading results is cheap.

Status of a run:

* ``completed``: ``summary.json`` says so; the only runs that enter a table's means;
* ``failed``: ``summary.json`` says ``failed`` (its ``error`` is kept);
* ``unfinished``: ``summary.json`` says ``running`` (killed, or still going) or is missing or
  unreadable.
* ``excluded``: completed, but evaluated on the training prompts (``eval.split=train``, a
  tuning run): listed, never averaged with held-out results.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unlearn.identity import hydra_label_context, method_label, parse_label

COMPLETED, FAILED, UNFINISHED, EXCLUDED = "completed", "failed", "unfinished", "excluded"
GRID_FILE = "grid.json"  # written by the sweep driver: the rows' labels in grid order, the reference
SKIP_DIRS = {"wandb", "checkpoints", "model", "__pycache__"}
OBJECTIVES = ("forget", "kl", "retain")  # MOLLM's (identity.DEFAULT_OBJECTIVES): runs older than the list
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "infinity": math.inf,
               "-infinity": -math.inf}


@dataclass
class Run:
    """One run dir: its status, method, seed, summary, config and per-step metrics."""

    path: Path
    experiment: str
    method: str
    seed: int | None
    status: str
    summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    grid_position: int | None = None  # the method's row in its sweep's grid.json (None: not listed)
    tag: str | None = None            # the grid's name for the method (grid.json ``names``), e.g. MOLLM

    @property
    def loss(self) -> str:
        """The label's losses: ``uce``, ``ga,mismatch,kl``."""
        return parse_label(self.method).losses

    @property
    def aggregator(self) -> str:
        """The label's aggregator with its settings and update rule: ``mgda[sgd]``."""
        return parse_label(self.method).aggregation

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    def eval_value(self, stage: str, metric: str) -> float:
        """``eval/<stage>/<metric>`` from the summary as a float (NaN when absent)."""
        return as_float(self.summary.get(f"eval/{stage}/{metric}"))


def as_float(value: Any) -> float:
    """A number from JSON: floats pass, ``"nan"``/``"inf"`` strings (how the suite writes
    non-finite values) and ``None``/missing become floats (NaN for anything unusable)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        key = value.strip().lower()
        if key in _NON_FINITE:
            return _NON_FINITE[key]
        try:
            return float(key)
        except ValueError:
            return math.nan
    return math.nan


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Lines of ``metrics.jsonl``; a torn last line (a killed run) and blank lines are skipped."""
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return records
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def read_yaml(path: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    try:
        value = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # noqa: BLE001 - a missing or broken file: the run is listed, not fatal
        return {}
    return value if isinstance(value, dict) else {}


def method_from_config(config: dict[str, Any], hydra: dict[str, Any] | None = None) -> str:
    """The method's label from a run's config and its ``.hydra/hydra.yaml`` node (Hydra's choices
    and config search path; :func:`unlearn.identity.method_label`)."""
    return method_label(config, *hydra_label_context(hydra))


def experiment_name(run_dir: Path, default: str) -> str:
    """The ``experiment=`` choice recorded by Hydra in ``.hydra/hydra.yaml``, else ``default``."""
    hydra = read_yaml(run_dir / ".hydra" / "hydra.yaml")
    choices = ((hydra.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
    chosen = choices.get("experiment")
    if chosen:
        return str(chosen)
    for override in read_yaml_list(run_dir / ".hydra" / "overrides.yaml"):
        key, _, value = str(override).lstrip("+~").partition("=")
        if key == "experiment" and value:
            return value
    return default


def read_yaml_list(path: Path) -> list[Any]:
    from omegaconf import OmegaConf

    try:
        value = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # noqa: BLE001
        return []
    return value if isinstance(value, list) else []


def is_run_dir(path: Path) -> bool:
    return (path / "summary.json").is_file() or (path / ".hydra" / "config.yaml").is_file()


def find_run_dirs(root: Path) -> Iterator[Path]:
    """``root`` itself if it is a run dir, else every run dir below it (sorted, no hidden dirs)."""
    root = Path(root)
    if is_run_dir(root):
        yield root
        return
    if not root.is_dir():
        return
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.name.startswith(".") and child.name not in SKIP_DIRS:
            yield from find_run_dirs(child)


def run_status(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return UNFINISHED
    status = summary.get("status")
    if status == COMPLETED:
        return EXCLUDED if summary.get("eval/split") == "train" else COMPLETED
    if status == FAILED:
        return FAILED
    return UNFINISHED


def load_run(run_dir: Path, default_experiment: str = "default") -> Run:
    run_dir = Path(run_dir)
    summary = read_json(run_dir / "summary.json")
    config = read_yaml(run_dir / ".hydra" / "config.yaml")
    status = run_status(summary)
    summary = summary or {}
    hydra = read_yaml(run_dir / ".hydra" / "hydra.yaml").get("hydra") if config else None
    # the label by today's rule when the config is there (older summaries may hold an older label)
    method = method_from_config(config, hydra) if config else summary.get("method") or "?"
    seed = summary.get("seed", config.get("seed"))
    error = summary.get("error")
    if status == EXCLUDED:
        error = "evaluated on training prompts (eval.split=train): a tuning run, not a result"
    if status == UNFINISHED and not error:
        error = ("summary.json says status=running (killed or still running)" if summary
                 else "no readable summary.json")
    return Run(
        path=run_dir,
        experiment=experiment_name(run_dir, default_experiment),
        method=str(method),
        seed=int(seed) if isinstance(seed, int | float) and not isinstance(seed, bool) else None,
        status=status,
        summary=summary,
        config=config,
        metrics=read_metrics(run_dir / "metrics.jsonl"),
        error=error,
    )


def collect_runs(roots: Iterable[str | Path]) -> list[Run]:
    """Every run below the given sweep (or run) dirs. A run dir found twice is read once.
    Runs without an ``experiment=`` choice are filed under the name of the root they came from."""
    runs, seen = [], set()
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such sweep or run dir")
        default = root.resolve().name or "default"
        grid = read_json(root / GRID_FILE) or {}
        order, names = list(grid.get("methods") or []), dict(grid.get("names") or {})
        for run_dir in find_run_dirs(root):
            key = run_dir.resolve()
            if key in seen:
                continue
            seen.add(key)
            run = load_run(run_dir, default)
            run.grid_position = order.index(run.method) if run.method in order else None
            run.tag = names.get(run.method)
            runs.append(run)
    return runs


def grid_reference(roots: Iterable[str | Path]) -> str | None:
    """The ``reference`` row named by the first sweep's ``grid.json`` (None without one)."""
    for root in roots:
        reference = (read_json(Path(root) / GRID_FILE) or {}).get("reference")
        if reference:
            return str(reference)
    return None


def method_order(runs: Sequence[Run]):
    """A sort key for method labels: the grid's row order (``grid.json``), then unlisted methods
    by name. The order of a table is the experiment's, never a list in the code."""
    position: dict[str, float] = {}
    for run in runs:
        p = math.inf if run.grid_position is None else float(run.grid_position)
        position[run.method] = min(position.get(run.method, math.inf), p)
    return lambda method: (position.get(method, math.inf), method)


def group_by_experiment(runs: Sequence[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.experiment, []).append(run)
    return groups


def metric_series(run: Run, key: str) -> tuple[list[int], list[float]]:
    """``(steps, values)`` of one ``metrics.jsonl`` key; skipped steps and absent values left out."""
    steps, values = [], []
    for record in run.metrics:
        if record.get("skipped") or key not in record:
            continue
        steps.append(int(record.get("step", len(steps) + 1)))
        values.append(as_float(record[key]))
    return steps, values


def run_objectives(run: Run) -> tuple[str, ...]:
    """The run's objectives in order (``summary.json``'s ``objectives``; MOLLM's for older runs)."""
    names = run.summary.get("objectives")
    return tuple(str(n) for n in names) if isinstance(names, list) and names else OBJECTIVES


def objective_names(runs: Sequence[Run]) -> tuple[str, ...]:
    """Every objective of ``runs``, in order of first appearance (MOLLM's when there is no run)."""
    return tuple(dict.fromkeys(n for r in runs for n in run_objectives(r))) or OBJECTIVES


__all__ = [
    "COMPLETED", "FAILED", "OBJECTIVES", "objective_names", "run_objectives", "UNFINISHED", "Run", "as_float", "collect_runs",
    "find_run_dirs", "group_by_experiment", "load_run", "method_from_config", "metric_series",
    "read_metrics", "grid_reference", "method_order", "GRID_FILE",
]
