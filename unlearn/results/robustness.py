"""The robustness table and plot: harmful rate before unlearning, after it, and after each attack.

``python -m unlearn.results.robustness --sweep-override outputs/sweeps/paper_embedded`` prints the
sweep of ``experiment=robustness`` over the original model and every model that sweep saved (its
grid's order), so the attacked models always come from the sweep itself, never from a list.

``python -m unlearn.results.robustness <dirs…> [--out results/robustness]`` reads every
``summary.json`` written by ``python -m unlearn.evaluate`` below the given dirs (those of
``make robustness``: ``outputs/robustness/paper_embedded/<method>/seed=<s>/``). A row is one
evaluated model: ``original`` when the evaluation had no ``model_path``, else the method label of
the run dir it loaded (:func:`unlearn.identity.method_label` of its ``.hydra/config.yaml``) or that
dir's name. The columns are discovered from the keys, never listed:

* ``before`` — the original model's plain harmful rate (the ``original`` row's ``eval/harmful_rate``);
* ``after`` — the row's plain ``eval/harmful_rate`` (after unlearning; for ``original`` = ``before``);
* one per ``eval/attack/<name>/<metric>`` that has ``_lo``/``_hi``, labelled by
  ``eval/labels/attack/<name>``; and the rebound ``eval/attack/<name>/rebound`` = HR_attack − HR_after
  (paired over prompts).

Every number is ``value [lo, hi]``: the per-run 95 % percentile bootstrap over prompts of the
evaluation (seeds are separate rows; nothing is pooled across seeds). Files in ``--out``:
``robustness.md``, ``robustness.csv`` (one line per row × column: value, lo, hi, n_prompts, and the
evaluation's folder relative to the CSV's own) and ``robustness.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unlearn.results.collect import COMPLETED, GRID_FILE, as_float, collect_runs, method_from_config, read_json
from unlearn.results.tables import relative_path

ATTACK_KEY = re.compile(r"^eval/attack/(?P<name>.+)/(?P<metric>[a-z_]+)$")
ORIGINAL = "original"


@dataclass
class Cell:
    value: float
    lo: float = math.nan
    hi: float = math.nan
    n: float = math.nan

    def text(self, signed: bool = False) -> str:
        if math.isnan(self.value):
            return "—"
        fmt = "{:+.3f}" if signed else "{:.3f}"
        interval = "" if math.isnan(self.lo) else f" [{fmt.format(self.lo)}, {fmt.format(self.hi)}]"
        return fmt.format(self.value) + interval


@dataclass
class RobustnessRow:
    model: str
    seed: int | None
    path: Path
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.model if self.seed is None else f"{self.model} (seed {self.seed})"

    def cell(self, key: str) -> Cell:
        s = self.summary
        return Cell(as_float(s.get(key)), as_float(s.get(f"{key}_lo")), as_float(s.get(f"{key}_hi")),
                    as_float(s.get(f"{key.rsplit('/', 1)[0]}/n_prompts", s.get("eval/n_prompts"))))


@dataclass(frozen=True)
class Column:
    key: str           # e.g. eval/attack/relearn_k5/harmful_rate
    title: str         # e.g. relearn_k5
    label: str         # what it measures


def read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def describe_model(summary: dict[str, Any], eval_dir: Path) -> tuple[str, int | None]:
    """(row name, seed) of one evaluation (module docstring)."""
    model_path = summary.get("model_path")
    own = read_yaml(eval_dir / ".hydra" / "config.yaml")
    if not model_path:
        return ORIGINAL, None
    run_dir = Path(model_path)
    run_dir = run_dir if run_dir.is_absolute() or run_dir.exists() else eval_dir / run_dir
    config = read_yaml(run_dir / ".hydra" / "config.yaml")
    if config.get("loss") and config.get("aggregator"):
        return method_from_config(config, read_yaml(run_dir / ".hydra" / "hydra.yaml").get("hydra")), config.get("seed")
    return run_dir.name if run_dir.name != "model" else run_dir.parent.name, own.get("seed")


def find_rows(dirs: Iterable[Path]) -> list[RobustnessRow]:
    """Every completed ``python -m unlearn.evaluate`` summary below ``dirs``."""
    rows = []
    for root in dirs:
        for f in sorted(Path(root).rglob("summary.json")):
            if any(part in {"model", "wandb"} or part.startswith(".") for part in f.relative_to(root).parts[:-1]):
                continue
            try:
                summary = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if summary.get("status") != "completed" or "eval/harmful_rate" not in summary:
                continue
            model, seed = describe_model(summary, f.parent)
            rows.append(RobustnessRow(model, seed, f.parent, summary))
    rows.sort(key=lambda r: (r.model != ORIGINAL, r.model, r.seed if r.seed is not None else -1))
    return rows


def attack_columns(rows: Sequence[RobustnessRow]) -> tuple[list[Column], list[Column]]:
    """(attack metric columns, rebound columns) from the keys every row declares, in first-seen order."""
    metrics: dict[str, Column] = {}
    rebounds: dict[str, Column] = {}
    for row in rows:
        for key in row.summary:
            m = ATTACK_KEY.match(key)
            if not m or f"{key}_lo" not in row.summary:
                continue
            name, metric = m["name"], m["metric"]
            label = str(row.summary.get(f"eval/labels/attack/{name}", name))
            target = rebounds if metric == "rebound" else metrics
            title = name if metric in ("harmful_rate", "rebound") else f"{name} {metric}"
            target.setdefault(key, Column(key, title, label))
    return list(metrics.values()), list(rebounds.values())


def build(rows: Sequence[RobustnessRow]) -> tuple[list[Column], list[Column], dict[tuple[str, str], Cell]]:
    """Columns and cells ``(row name, column key) → Cell`` (``before``/``after`` included)."""
    if not rows:
        raise ValueError("no completed `python -m unlearn.evaluate` summary found; run `make robustness` first")
    original = next((r for r in rows if r.model == ORIGINAL), None)
    before = original.cell("eval/harmful_rate") if original else Cell(math.nan)
    metrics, rebounds = attack_columns(rows)
    plain = [Column("before", "before unlearning", "the original model's plain harmful rate"),
             Column("eval/harmful_rate", "after unlearning", "plain harmful rate of this model")]
    cells: dict[tuple[str, str], Cell] = {}
    for row in rows:
        cells[(row.name, "before")] = before
        for column in [*plain[1:], *metrics, *rebounds]:
            cells[(row.name, column.key)] = row.cell(column.key)
    return plain + metrics, rebounds, cells


def markdown(rows: Sequence[RobustnessRow], columns: Sequence[Column], rebounds: Sequence[Column],
             cells: dict[tuple[str, str], Cell]) -> str:
    def table(cols: Sequence[Column], signed: bool) -> list[str]:
        lines = ["| model | " + " | ".join(c.title for c in cols) + " |",
                 "|---|" + "---:|" * len(cols)]
        lines += [f"| {r.name} | " + " | ".join(cells[(r.name, c.key)].text(signed) for c in cols) + " |"
                  for r in rows]
        return lines

    first = rows[0].summary
    judge = str(first.get("eval/judge", "?")).split(":")[0]
    settings = (f"{first.get('eval/n_prompts', '?')} held-out prompts (attacks: the n_prompts of the csv), judge {judge}; "
                "95 % percentile bootstrap intervals over prompts (one run per row)")
    out = ["## Harmful rate before unlearning, after it, and after each attack", "", f"Settings: {settings}.", "",
           *table(columns, False), "", "## Rebound: HR after the attack − HR after unlearning (paired over prompts)",
           "", *table(rebounds, True), "", "Columns:", ""]
    out += [f"- `{c.title}`: {c.label}" for c in columns]
    return "\n".join(out) + "\n"


def write_csv(path: Path, rows: Sequence[RobustnessRow], columns: Sequence[Column],
              cells: dict[tuple[str, str], Cell]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "seed", "column", "key", "value", "lo", "hi", "n_prompts", "label", "path"])
        for r in rows:
            for c in columns:
                cell = cells[(r.name, c.key)]
                writer.writerow([r.model, "" if r.seed is None else r.seed, c.title, c.key, cell.value, cell.lo,
                                 cell.hi, cell.n, c.label, relative_path(r.path, path.parent)])


def plot(path: Path, rows: Sequence[RobustnessRow], columns: Sequence[Column],
         cells: dict[tuple[str, str], Cell]) -> Path:
    from unlearn.results.plots import MARKERS, colours, pyplot

    plt = pyplot()
    shown = [c for c in columns if c.key in ("before", "eval/harmful_rate") or c.key.endswith("/harmful_rate")]
    colour = colours([c.title for c in shown])
    fig, ax = plt.subplots(figsize=(max(8.0, 1.6 * len(rows) + 5), 4.5))
    width = 0.8 / max(1, len(shown))
    for j, c in enumerate(shown):
        xs, ys, errs = [], [], [[], []]
        for i, r in enumerate(rows):
            cell = cells[(r.name, c.key)]
            if math.isnan(cell.value):
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(cell.value)
            errs[0].append(0.0 if math.isnan(cell.lo) else cell.value - cell.lo)
            errs[1].append(0.0 if math.isnan(cell.hi) else cell.hi - cell.value)
        ax.errorbar(xs, ys, yerr=errs, fmt=MARKERS[j % len(MARKERS)], color=colour[c.title], capsize=2,
                    label=c.title)
    ax.set_xticks(range(len(rows)), [r.name for r in rows], rotation=20, ha="right")
    ax.set_ylabel("harmful rate (95 % interval over prompts)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Harmful rate: before, after unlearning, after each attack", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_robustness(dirs: Sequence[Path], out_dir: Path) -> dict[str, Path]:
    """Build the table and plot from ``dirs`` into ``out_dir``; returns the written files."""
    rows = find_rows(dirs)
    columns, rebounds, cells = build(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"markdown": out_dir / "robustness.md", "csv": out_dir / "robustness.csv",
             "plot": out_dir / "robustness.png"}
    files["markdown"].write_text(markdown(rows, columns, rebounds, cells), encoding="utf-8")
    write_csv(files["csv"], rows, [*columns, *rebounds], cells)
    plot(files["plot"], rows, columns, cells)
    return files


def attacked_methods(source: Path, seed: int = 0) -> list[str]:
    """The method labels of ``source``'s completed runs at ``seed`` that saved their model
    (``<source>/<label>/seed=<seed>/model``), in the grid's order (``grid.json``), then by name."""
    if not Path(source).is_dir():
        return []
    order = (read_json(Path(source) / GRID_FILE) or {}).get("methods") or []
    found = {r.method for r in collect_runs([source])
             if r.status == COMPLETED and r.seed == seed and (r.path / "model").is_dir()
             and r.path == Path(source) / r.method / f"seed={seed}"}
    return sorted(found, key=lambda m: (order.index(m) if m in order else len(order), m))


def sweep_override(source: Path, seed: int = 0) -> str:
    """``robustness.method='original','<label>',…``: the Hydra sweep over the original model and
    every model of ``source`` at ``seed`` (:func:`attacked_methods`), each label quoted."""
    methods = attacked_methods(source, seed)
    if not methods:
        raise ValueError(f"{source} has no completed run at seed={seed} with a saved model "
                         "(<method>/seed=<s>/model): run `make paper-tables` (trainer.save_model=true) first")
    return "robustness.method=" + ",".join(f"'{m}'" for m in [ORIGINAL, *methods])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m unlearn.results.robustness", description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="*", type=Path, help="folders holding `python -m unlearn.evaluate` outputs")
    parser.add_argument("--out", type=Path, default=Path("results/robustness"))
    parser.add_argument("--sweep-override", type=Path, metavar="SWEEP",
                        help="print the `robustness.method=…` sweep over the original model and SWEEP's "
                             "saved models (seed --seed), for `python -m unlearn.evaluate -m experiment=robustness`")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.sweep_override is not None:
        print(sweep_override(args.sweep_override, args.seed))
        return
    if not args.dirs:
        parser.error("give the evaluation folders (or --sweep-override SWEEP)")
    for kind, path in write_robustness(args.dirs, args.out).items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    main()
