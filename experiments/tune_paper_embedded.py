"""Tune experiment=paper_embedded on the training split only, and print what each setting does.

Each candidate is one ``python -m unlearn.run experiment=paper_embedded <method overrides>`` run with
``eval.split=train``: generations, harmful rate and fluency come from *training* prompts, and
utility from training TruthfulQA answers, so no held-out prompt is looked at while choosing
(the results module lists such runs as "excluded", never as results). The probe
(``probe/*``: losses on fixed training examples) shows the forget loss and the KL to the
original model on the same examples before and after.

    python experiments/tune_paper_embedded.py --lr 3e-5 5e-5 --methods "loss=uce aggregator=dual" --jobs 2
    python experiments/tune_paper_embedded.py --lr 5e-5 --steps 25 40 \
        --methods "loss=uce aggregator=dual" "loss=ga aggregator=weighted_sum aggregator.weights=[0.5,1,1]"
    python experiments/tune_paper_embedded.py --pairs 3e-5:25 5e-5:15      # same lr × steps, cheaper

A method is the overrides that compose it (space-separated). Runs go to
outputs/tuning/paper_embedded/<overrides as a folder name>/lr<lr>_steps<n>/ and a finished run is not
redone; ``--jobs 2`` runs two at a time with one torch thread each (the fastest use of 2 cores).
"""

from __future__ import annotations

import argparse
import re
import itertools
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def slug(overrides: str) -> str:
    """A folder name for a set of overrides (Hydra's grammar forbids '=' in a run dir override)."""
    return re.sub(r"[^\w.+,-]+", "_", overrides.replace("=", "-")).strip("_")
COLUMNS = [
    ("probe/forget", "initial/probe/forget", "final/probe/forget"),
    ("probe/kl", None, "final/probe/kl"),
    ("train HR", "eval/before/harmful_rate", "eval/after/harmful_rate"),
    ("fluency PPL", "eval/before/fluency_ppl", "eval/after/fluency_ppl"),
    ("distinct-2", "eval/before/distinct_2", "eval/after/distinct_2"),
    ("utility PPL", "eval/before/utility_ppl", "eval/after/utility_ppl"),
]


def run_one(method: str, lr: str, steps: int, args: argparse.Namespace) -> Path:
    run_dir = Path(args.out) / slug(method) / f"lr{lr}_steps{steps}"
    summary = run_dir / "summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("status") == "completed":
        return run_dir
    overrides = [
        "experiment=paper_embedded", *method.split(), f"trainer.optimizer.lr={lr}",
        f"trainer.max_steps={steps}", "eval.split=train", f"eval.n_prompts={args.prompts}",
        f"eval.utility_max_examples={args.prompts}", f"threads={1 if args.jobs > 1 else 2}",
        "logger=disabled", f"hydra.run.dir={run_dir}", *args.overrides,
    ]
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f"lr{lr}_steps{steps}.log", "w") as log:
        subprocess.run([sys.executable, "-m", "unlearn.run", *overrides], cwd=REPO, stdout=log,
                       stderr=subprocess.STDOUT, env={**os.environ, "WANDB_MODE": "disabled"}, check=False)
    return run_dir


def row(run_dir: Path) -> str:
    path = run_dir / "summary.json"
    if not path.is_file():
        return f"{run_dir}: no summary.json (see the .log beside it)"
    s = json.loads(path.read_text())
    if s.get("status") != "completed":
        return f"{run_dir}: {s.get('status')} ({s.get('error')})"
    cells = []
    for _, before, after in COLUMNS:
        b = f"{s[before]:.3g} → " if before and before in s else ""
        cells.append(f"{b}{s.get(after, float('nan')):.3g}")
    return f"| {s['method']} | {run_dir.name} | " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["loss=uce aggregator=dual"],
                        help="each a quoted set of overrides that composes the method")
    parser.add_argument("--lr", nargs="+", default=["3e-5", "5e-5"])
    parser.add_argument("--steps", nargs="+", type=int, default=[25])
    parser.add_argument("--pairs", nargs="+", default=None, metavar="LR:STEPS",
                        help="(lr, steps) pairs instead of the --lr × --steps grid, e.g. 3e-5:25 5e-5:15")
    parser.add_argument("--prompts", type=int, default=32, help="training prompts generated per run")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "outputs" / "tuning" / "paper_embedded"))
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args(argv)
    pairs = ([(lr, int(steps)) for lr, steps in (p.split(":") for p in args.pairs)] if args.pairs
             else list(itertools.product(args.lr, args.steps)))
    grid = [(method, lr, steps) for method in args.methods for lr, steps in pairs]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        dirs = list(pool.map(lambda g: run_one(*g, args), grid))
    print("| method | setting | " + " | ".join(c[0] for c in COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for run_dir in dirs:
        print(row(run_dir))


if __name__ == "__main__":
    main()
