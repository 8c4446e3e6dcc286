"""Training-split comparison of two rows of a sweep: their objectives on the training batches.

    python experiments/training_split.py docs/results/paper_embedded \\
        --pair "uce+dual[sgd]" uce+dual --pair "uce+dual[metric_adam,preconditioned]" uce+dual

Reads ``steps.csv`` of a results folder (every run's per-step losses on the batches it trained
on, each batch seen once, before that step's update) and gives, per objective, each row's mean
over the last ``--last`` steps, and the difference a − b paired by seed (seed s gives both rows
the same batches) with a t-interval over the seeds both ran. Lower is better for every
objective (the forget loss is the unlearning loss being minimised). No held-out prompt is read:
this is the split on which the default may be chosen.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from unlearn.results.intervals import LEVEL, t_interval


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def tail_means(rows: list[dict[str, str]], method: str, last: int) -> dict[str, dict[int, float]]:
    """objective -> seed -> mean of ``loss/<objective>`` over the run's last ``last`` unskipped steps."""
    by_seed: dict[int, list[dict[str, str]]] = {}
    for row in rows:
        if row["method"] == method and row["status"] == "completed" and row.get("skipped", "0") in ("0", ""):
            by_seed.setdefault(int(row["seed"]), []).append(row)
    out: dict[str, dict[int, float]] = {}
    for seed, steps in by_seed.items():
        tail = sorted(steps, key=lambda r: int(r["step"]))[-last:]
        for key in tail[0]:
            if key.startswith("loss/"):
                values = [float(r[key]) for r in tail if r[key] not in ("", "nan")]
                if values:
                    out.setdefault(key[len("loss/"):], {})[seed] = math.fsum(values) / len(values)
    return out


def compare(rows: list[dict[str, str]], a: str, b: str, last: int) -> list[str]:
    """Markdown lines: objective, mean a, mean b, a − b [interval] paired by seed, seeds."""
    ma, mb = tail_means(rows, a, last), tail_means(rows, b, last)
    lines = [f"| objective | {a} | {b} | {a} − {b} [95 %, paired by seed] | seeds |", "|---|---:|---:|---|---:|"]
    for objective in [o for o in ma if o in mb]:
        seeds = sorted(set(ma[objective]) & set(mb[objective]))
        if not seeds:
            continue
        diffs = [ma[objective][s] - mb[objective][s] for s in seeds]
        interval = t_interval(diffs, LEVEL)
        text = "n/a" if interval is None else f"{interval.estimate:+.3f} [{interval.lo:+.3f}, {interval.hi:+.3f}]"
        if interval is not None and (interval.lo > 0 or interval.hi < 0):
            text += "* " + ("a lower" if interval.estimate < 0 else "a higher")
        avg = [math.fsum(m[objective][s] for s in seeds) / len(seeds) for m in (ma, mb)]
        lines.append(f"| {objective} | {avg[0]:.3f} | {avg[1]:.3f} | {text} | {len(seeds)} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="a results folder with steps.csv, e.g. docs/results/paper_embedded")
    p.add_argument("--pair", nargs=2, action="append", metavar=("A", "B"), required=True,
                   help="two method labels; repeat for more pairs")
    p.add_argument("--last", type=int, default=5, help="steps at the end of training to average (default 5)")
    args = p.parse_args(argv)
    path = args.folder / "steps.csv"
    if not path.is_file():
        print(f"error: {path} is missing: run python -m unlearn.results <sweep dir> --out <folder> first",
              file=sys.stderr)
        return 2
    rows = read_rows(path)
    known = {r["method"] for r in rows}
    for a, b in args.pair:
        missing = [m for m in (a, b) if m not in known]
        if missing:
            print(f"error: no runs of {', '.join(missing)} in {path}; known: {', '.join(sorted(known))}", file=sys.stderr)
            return 2
        print("\n".join(compare(rows, a, b, args.last)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
