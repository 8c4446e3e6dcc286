"""Re-judge a sweep's saved answers with other judges: does the ranking of methods change?

    UNLEARN_DATA_DIR=../shared/data python experiments/rejudge.py outputs/sweeps/paper_embedded \
        --judges embedded embedded_answer [--reference uce+dual] [--out outputs/rejudge.json]

Reads every completed run's ``generations.jsonl`` below the sweep dir (the answers of the
``after`` stage, and the original model's ``before`` answers), judges the same answers with each
named ``conf/judge`` option (trained on the forget/normal train splits as in a run, and cached),
and prints per judge and method the harmful rate over seeds × prompts with its 95 % interval
(:func:`unlearn.uncertainty.seed_prompt_interval`), the rank of each method, and each method's
paired difference from the reference method (:func:`unlearn.uncertainty.paired_difference`).
No model is loaded and nothing is generated: only the judges run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def answers_by_method(sweep: Path) -> tuple[dict[str, dict[int, list[dict]]], list[dict]]:
    """method → seed → the ``after`` records (prompt, answer) in order; and the original's records."""
    from unlearn.results.collect import collect_runs, read_metrics
    from unlearn.results.records import GENERATIONS, last_block

    runs = [r for r in collect_runs([sweep]) if r.completed]
    if not runs:
        sys.exit(f"no completed runs below {sweep}")
    out: dict[str, dict[int, list[dict]]] = defaultdict(dict)
    original: list[dict] = []
    for run in runs:
        lines = read_metrics(Path(run.path) / GENERATIONS)
        out[run.method][int(run.seed or 0)] = last_block(lines, "after")
        original = original or last_block(lines, "before")
    return out, original


def judge_flags(name: str, prompts: list[str], answers: list[str]) -> np.ndarray:
    """The harmful verdicts of ``conf/judge/<name>.yaml`` on the (prompt, answer) pairs."""
    from unlearn.judge import build_for, compose

    judge, _, _ = build_for(compose([f"judge={name}", "judge.progress_bar=false"]))
    return np.array([v.harmful for v in judge.judge(prompts, answers)], dtype=float)


def main(argv: list[str] | None = None) -> dict:
    from unlearn.uncertainty import paired_difference, seed_prompt_interval

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sweep", type=Path)
    p.add_argument("--judges", nargs="+", default=["embedded", "embedded_answer"])
    p.add_argument("--reference", default="uce+dual")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    by_method, original = answers_by_method(args.sweep)
    prompts = [r["prompt"] for r in original]
    for method, seeds in by_method.items():
        for seed, recs in seeds.items():
            if [r["prompt"] for r in recs] != prompts:
                sys.exit(f"{method} seed {seed} answered other prompts than the original model")
    pairs = [(r["prompt"], r["answer"]) for r in original]
    index = {("original", 0): slice(0, len(pairs))}
    for method, seeds in sorted(by_method.items()):
        for seed, recs in sorted(seeds.items()):
            index[(method, seed)] = slice(len(pairs), len(pairs) + len(recs))
            pairs += [(r["prompt"], r["answer"]) for r in recs]
    report: dict = {"sweep": str(args.sweep), "n_prompts": len(prompts), "judges": {}}
    for name in args.judges:
        flags = judge_flags(name, [p for p, _ in pairs], [a for _, a in pairs])
        grids = {m: np.stack([flags[index[(m, s)]] for s in sorted(seeds)]) for m, seeds in by_method.items()}
        rows = {m: seed_prompt_interval(g) for m, g in grids.items()}
        ranked = sorted(rows, key=lambda m: rows[m].estimate)
        ref = grids.get(args.reference)
        entry = {"original": float(flags[index[("original", 0)]].mean()), "methods": {}}
        print(f"\njudge={name}: original {entry['original']:.3f}; {len(prompts)} prompts")
        print(f"{'method':20s} {'HR':>6s} {'95% interval':>16s} rank  {'vs ' + args.reference:>28s}")
        for rank, m in enumerate(ranked, 1):
            iv = rows[m]
            diff = paired_difference(grids[m], ref) if ref is not None and m != args.reference else None
            d = "" if diff is None else (f"{diff.estimate:+.3f} [{diff.lo:+.3f}, {diff.hi:+.3f}]"
                                         + (" *" if diff.excludes_zero() else ""))
            print(f"{m:20s} {iv.estimate:6.3f} [{iv.lo:6.3f}, {iv.hi:6.3f}] {rank:4d}  {d:>28s}")
            entry["methods"][m] = {"harmful_rate": iv.estimate, "lo": iv.lo, "hi": iv.hi, "rank": rank,
                                   "seeds": grids[m].shape[0],
                                   "vs_reference": None if diff is None else
                                   {"difference": diff.estimate, "lo": diff.lo, "hi": diff.hi,
                                    "resolved": diff.excludes_zero()}}
        report["judges"][name] = entry
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
