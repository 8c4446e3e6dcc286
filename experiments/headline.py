"""README's headline: dual against weighted sum and MGDA under each update rule, from a results folder.

    python experiments/headline.py docs/results/paper_embedded

Reads the folder that ``python -m unlearn.results`` wrote (``paired_differences.csv``,
``hypervolume_paired.csv``, ``runs.csv``) and prints two Markdown tables:

1. per update rule (AdamW, ``[sgd]``, ``[metric_adam,…]``) and per other aggregator, dual minus it
   on each axis: the judge-free margin ℓ(safe) − ℓ(unsafe) on the held-out pairs (forgetting that
   separates safe from unsafe), the harmful rate (judge), the utility loss (held-out TruthfulQA
   NLL per token), fluency perplexity, and the loss-space hypervolume of each forgetting
   coordinate ``hypervolume_paired.csv`` holds (held-out margin, forget NLL); paired by (seed, prompt), or
   by seed for the hypervolumes, 95 %, ``*`` when the interval excludes 0, then ``dual better`` or
   ``dual worse`` by each axis's direction;
2. per method, fluency perplexity against the original's: the mean difference with its paired
   interval and the per-seed range (the collapse is a seed far above the original);

then how much pairing narrowed the intervals: the unpaired half-width over the paired one, median
and range over every method-vs-method comparison that has both.

``--readme`` prints table 1 as README shows it instead: the four axes, Unicode minus signs, a
resolved difference in bold and marked ``(worse)`` when dual is worse.

Nothing is recomputed: every interval is the results module's, read from its files.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from unlearn.identity import parse_label

AXES = {  # metric -> (column title, higher is better)
    "preference_margin": ("margin (nats/token) ↑", True),
    "harmful_rate": ("harmful rate ↓", False),
    "utility_loss": ("utility loss ↓", False),
    "fluency_ppl": ("fluency PPL ↓", False),
}
DUAL = "dual"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def oriented(difference: float, lo: float, hi: float, sign: float) -> tuple[float, float, float]:
    """``sign`` × (difference, interval), the interval's ends in order (+ 0.0: no "-0.000")."""
    d, a, b = (sign * x + 0.0 for x in (difference, lo, hi))
    return d, min(a, b), max(a, b)


def cell(difference: float, lo: float, hi: float, higher_better: bool, sign: float = 1.0) -> str:
    """``dual − other`` as ``+0.012 [−0.003, +0.027]``, starred and read when resolved."""
    d, a, b = oriented(difference, lo, hi, sign)
    text = f"{d:+.3f} [{a:+.3f}, {b:+.3f}]"
    if a > 0 or b < 0:
        text += "* " + ("dual better" if (d > 0) == higher_better else "dual worse")
    return text


DISPLAY = {"adamw": "AdamW", "sgd": "SGD", "metric_adam,preconditioned": "MetricAdam",
           "weighted_sum": "weighted sum", "mgda": "MGDA"}  # README's names; others print as they are


def readme_cell(difference: float, lo: float, hi: float, higher_better: bool, digits: int) -> str:
    """``dual − other`` (from a stored ``other − dual``) as README writes it."""
    d, a, b = oriented(difference, lo, hi, -1.0)
    text = f"{d:+.{digits}f} [{a:+.{digits}f}, {b:+.{digits}f}]".replace("-", "−")
    if a > 0 or b < 0:
        text = f"**{text}**" + ("" if (d > 0) == higher_better else " (worse)")
    return text


def coordinates(hv: list[dict[str, str]]) -> list[str]:
    """The forgetting coordinates of ``hypervolume_paired.csv``, in file order."""
    return list(dict.fromkeys(row["forgetting"] for row in hv))


def hypervolume_cell(hv: list[dict[str, str]], dual: str, other: str, coordinate: str) -> str:
    """dual − other in hypervolume, from the stored pair (either order), paired by seed."""
    for row in hv:
        if row["forgetting"] == coordinate and {row["a"], row["b"]} == {dual, other} and row["lo"]:
            sign = 1.0 if row["a"] == dual else -1.0
            return cell(float(row["difference"]), float(row["lo"]), float(row["hi"]), True, sign)
    return "n/a"


def dual_pairs(paired: list[dict[str, str]]) -> list[tuple[str, str, str]]:
    """(update rule, dual's label, the other aggregator's label) for every aggregator with dual's
    losses under each update rule that has a dual row, in the file's order."""
    rows = [r for r in paired if r["reference"] != "original"]
    duals = {parse_label(r["reference"]).update_rule: r["reference"] for r in rows
             if parse_label(r["reference"]).aggregator_name == DUAL}
    out = []
    for rule, dual in duals.items():
        for other in dict.fromkeys(r["method"] for r in rows if r["reference"] == dual
                                   and parse_label(r["method"]).losses == parse_label(dual).losses
                                   and parse_label(r["method"]).update_rule == rule):
            out.append((rule, dual, other))
    return out


def differences(paired: list[dict[str, str]], dual: str, other: str) -> dict[str, dict[str, str]]:
    """metric -> the stored row ``other − dual`` (finite values only)."""
    return {r["metric"]: r for r in paired if r["reference"] == dual and r["method"] == other
            and r["difference"] not in ("", "nan")}


def comparisons_table(paired: list[dict[str, str]], hv: list[dict[str, str]]) -> str:
    """Table 1 of the module docstring."""
    volumes = coordinates(hv)
    head = ["update rule", "dual − …", *(AXES[k][0] for k in AXES), *(f"hypervolume ({c}) ↑" for c in volumes), "seeds"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rule, dual, other in dual_pairs(paired):
        found = differences(paired, dual, other)
        cells = [cell(float(r["difference"]), float(r["lo"]), float(r["hi"]), higher, -1.0)  # flipped: dual − other
                 if (r := found.get(metric)) else "n/a" for metric, (_, higher) in AXES.items()]
        seeds = next((f"{r['seeds_reference']}" for r in found.values()), "")
        out.append(f"| {rule.strip('[]') or 'adamw'} | {parse_label(other).aggregator_name} | " + " | ".join(cells)
                   + "".join(f" | {hypervolume_cell(hv, dual, other, c)}" for c in volumes) + f" | {seeds} |")
    return "\n".join(out)


def readme_table(paired: list[dict[str, str]]) -> str:
    """Table 1 in README's form (module docstring)."""
    heads = {"preference_margin": "margin, nats/token", "harmful_rate": "harmful rate",
             "utility_loss": "utility loss", "fluency_ppl": "fluency PPL"}
    out = ["| update rule | dual − | " + " | ".join(heads.values()) + " |", "|---|---|" + "---|" * len(heads)]
    for rule, dual, other in dual_pairs(paired):
        found = differences(paired, dual, other)
        cells = [readme_cell(float(r["difference"]), float(r["lo"]), float(r["hi"]), AXES[metric][1],
                             2 if metric == "fluency_ppl" else 3) if (r := found.get(metric)) else "n/a"
                 for metric in heads]
        rule_name, aggregator = rule.strip("[]") or "adamw", parse_label(other).aggregator_name
        out.append(f"| {DISPLAY.get(rule_name, rule_name)} | {DISPLAY.get(aggregator, aggregator)} | "
                   + " | ".join(cells) + " |")
    return "\n".join(out)


def fluency_table(paired: list[dict[str, str]], runs: list[dict[str, str]]) -> str:
    """Table 2 of the module docstring."""
    out = ["| method | fluency PPL − original's [95 %] | per-seed PPL (min–max) | seeds |", "|---|---|---|---:|"]
    for r in paired:
        if r["reference"] != "original" or r["metric"] != "fluency_ppl" or r["difference"] in ("", "nan"):
            continue
        values = [float(x["after/fluency_ppl"]) for x in runs if x["method"] == r["method"]
                  and x["status"] == "completed" and x["after/fluency_ppl"] not in ("", "nan")]
        span = f"{min(values):.2f}–{max(values):.2f}" if values else "n/a"
        d, lo, hi = float(r["difference"]), float(r["lo"]), float(r["hi"])
        star = "*" if lo > 0 or hi < 0 else ""
        out.append(f"| {r['method']} | {d:+.2f} [{lo:+.2f}, {hi:+.2f}]{star} | {span} | {len(values)} |")
    return "\n".join(out)


def pairing_gain(paired: list[dict[str, str]]) -> str:
    """The unpaired/paired half-width ratio over the method-vs-method rows (module docstring)."""
    ratios = []
    for r in paired:
        if r["reference"] == "original" or r.get("unpaired_half_width", "") in ("", "nan"):
            continue
        half = (float(r["hi"]) - float(r["lo"])) / 2
        if half > 0 and math.isfinite(half):
            ratios.append(float(r["unpaired_half_width"]) / half)
    if not ratios:
        return "pairing: no comparison has both half-widths"
    return (f"pairing: unpaired / paired half-width median {statistics.median(ratios):.2f} "
            f"(range {min(ratios):.2f}–{max(ratios):.2f}) "
            f"over {len(ratios)} comparisons")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="a results folder, e.g. docs/results/paper_embedded")
    p.add_argument("--readme", action="store_true", help="print table 1 as README shows it, and nothing else")
    args = p.parse_args(argv)
    try:
        paired = read_csv(args.folder / "paired_differences.csv")
        hv = read_csv(args.folder / "hypervolume_paired.csv")
        runs = read_csv(args.folder / "runs.csv")
    except FileNotFoundError as exc:
        print(f"error: {exc.filename} is missing: run python -m unlearn.results <sweep dir> --out <folder> first",
              file=sys.stderr)
        return 2
    if args.readme:
        print(readme_table(paired))
        return 0
    print(comparisons_table(paired, hv))
    print()
    print(fluency_table(paired, runs))
    print()
    print(pairing_gain(paired))
    return 0


if __name__ == "__main__":
    sys.exit(main())
