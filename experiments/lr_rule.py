"""One learning-rate rule for every (method, optimizer) row, applied on the training split only.

**Rule.** A row gets the largest rate of the ladder r₀·2ᵏ whose run, with the experiment's step
budget, ends with ``final/probe/kl`` ≤ the bound and every loss finite. ``final/probe/kl`` is
KL(p_original ‖ p_θ) on 16 fixed *training* TruthfulQA answers (``trainer.probe_size``) after the
last step. The bound is the drift of the suite's default, uce+dual with AdamW at its chosen rate,
measured in the same way first: every row may move as far from the original model as the default
does, and no further. r₀ is the optimizer's own default rate (its option file; the experiment's
``trainer.optimizer.lr`` would otherwise give SGD AdamW's rate). No held-out prompt
is generated or judged, and the evaluation stage is off.

Search: from r₀, double while the rule holds (or halve until it does), at most ``--max-tries``
runs per row; the answer is exact on the ladder, not between its rungs.

**No rung passes.** Where every rung tried drifts past the bound (the probe KL need not fall with
the rate: a retain objective fits the same TruthfulQA answers the probe reads at any rate), the
row gets the tried rung with the smallest probe KL, the nearest the ladder comes to the rule, and
the result says so (``"chosen_by": "smallest probe KL: no rung passes"``); r₀ if no run finished.

    UNLEARN_DATA_DIR=../shared/data python experiments/lr_rule.py \\
        --rows "loss=uce aggregator=weighted_sum optimizer=sgd" "loss=uce aggregator=dual optimizer=sgd" \\
        --out docs/results/lr_rule/rates_bfloat16_a.json

Runs go to outputs/lr_rule/<row>/lr<rate>/; a finished run is not redone, an interrupted one is
moved to ``lr<rate>.interrupted-<n>`` and run again. An existing ``--out`` of the same experiment
and overrides keeps its bound and its finished rows (a stopped search continues where it was).
"""

from __future__ import annotations

import argparse
import re
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def slug(overrides: str) -> str:
    """A folder name for a set of overrides (Hydra's grammar forbids '=' in a run dir override)."""
    return re.sub(r"[^\w.+-]+", "_", overrides.replace("=", "-")).strip("_")  # no ',': Hydra reads it as a sweep
DEFAULT_ROW = "loss=uce aggregator=dual"
PROBE = ["eval.enabled=false", "trainer.probe_size=16", "trainer.heldout_probe_size=0", "trainer.save_model=false",
         "logger=disabled", "seed=0"]


RECORDED = ("final/probe/kl", "final/probe/forget_nll", "final/probe/forget", "final/probe/retain")


def passes(summary: dict, bound: float) -> bool:
    """The rule's test: the run completed, its losses are finite and its probe KL is within the bound."""
    if summary.get("status") != "completed":
        return False
    values = [v for k, v in summary.items() if k.startswith(("final/loss/", "final/probe/"))]
    kl = summary.get("final/probe/kl")
    return (isinstance(kl, int | float) and math.isfinite(kl) and kl <= bound
            and all(isinstance(v, int | float) and math.isfinite(v) for v in values))


def ladder_search(start: float, ok: Callable[[float], bool], max_tries: int = 5) -> float | None:
    """The largest ``start·2^k`` with ``ok`` true, searched by doubling (or halving) from
    ``start``; None when no rung within ``max_tries`` passes. Assumes ``ok`` is monotone in the rate."""
    rate, tried = start, 0
    if ok(rate):
        best = rate
        while tried < max_tries - 1:
            tried += 1
            rate *= 2
            if not ok(rate):
                return best
            best = rate
        return best
    while tried < max_tries - 1:
        tried += 1
        rate /= 2
        if ok(rate):
            return rate
    return None


def choose(start: float, found: float | None, kls: dict[float, float | None]) -> tuple[float, str]:
    """The row's rate and how the rule reached it: the ladder's answer or, where no rung passed,
    the tried rate with the smallest finite probe KL (``kls``: rate → KL), else r₀."""
    if found is not None:
        return found, "largest passing rung"
    finite = {lr: kl for lr, kl in kls.items() if isinstance(kl, int | float) and math.isfinite(kl)}
    if not finite:
        return start, "r0: no rung finished"
    return min(finite, key=finite.get), "smallest probe KL: no rung passes"


def run(row: str, lr: float, args: argparse.Namespace) -> dict:
    run_dir = Path(args.runs) / slug(row) / f"lr{lr:.3g}"
    summary = run_dir / "summary.json"
    if not (summary.is_file() and json.loads(summary.read_text()).get("status") == "completed"):
        if run_dir.exists():  # an interrupted search run: kept aside, the rung is run again from the start
            run_dir.rename(run_dir.with_name(f"{run_dir.name}.interrupted-{len(list(run_dir.parent.glob('*.interrupted-*')))}"))
        cmd = [sys.executable, "-m", "unlearn.run", *experiment_override(args.experiment), *row.split(),
               f"trainer.optimizer.lr={lr}", f"threads={args.threads}", *PROBE, f"hydra.run.dir={run_dir}",
               *args.overrides]
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir.parent / f"lr{lr:.3g}.log", "w") as log:
            subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=False,
                           env={**os.environ, "WANDB_MODE": "disabled"})
    return json.loads(summary.read_text()) if summary.is_file() else {"status": "missing"}


def experiment_override(experiment: str) -> list[str]:
    """``experiment=<name>``, or nothing for ``--experiment ""`` (the suite's defaults, what
    ``python -m unlearn.run`` runs)."""
    return [f"experiment={experiment}"] if experiment else []


def optimizer_default_lr(row: str) -> float:
    """r₀: the rate of the row's optimizer option file (an experiment's ``trainer.optimizer.lr``
    overrides it, so it is read without the experiment)."""
    from harness import compose_config

    return float(compose_config(*row.split()).trainer.optimizer.lr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="paper_embedded",
                        help='a conf/experiment option; "" for the defaults of python -m unlearn.run')
    parser.add_argument("--rows", nargs="+", required=True, help="each a quoted set of overrides composing the row")
    parser.add_argument("--bound", type=float, default=None,
                        help="probe KL bound (default: the default row's own probe KL, measured first)")
    parser.add_argument("--max-tries", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", default=str(REPO / "outputs" / "lr_rule"))
    parser.add_argument("--out", default=str(REPO / "outputs" / "lr_rule" / "rates.json"))
    parser.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides for every run")
    args = parser.parse_args(argv)

    from harness import compose_config

    reference = None
    bound = args.bound
    done: dict = {}
    if Path(args.out).is_file():  # a search stopped part-way: its bound and finished rows are kept
        saved = json.loads(Path(args.out).read_text())
        if saved.get("experiment") == args.experiment and saved.get("overrides") == args.overrides and (
                bound is None or bound == saved.get("bound")):
            bound, reference = saved["bound"], saved.get("reference")
            done = {row: found for row, found in saved.get("rows", {}).items()  # rows whose runs all ran
                    if found.get("tried") is not None and all(t.get("status") == "completed"
                                                               for t in found["tried"].values())}
            print(f"resuming {args.out}: bound {bound:.4g}, {len(done)} row(s) done", flush=True)
    if bound is None:
        lr0 = float(compose_config(*experiment_override(args.experiment)).trainer.optimizer.lr)
        summary = run(DEFAULT_ROW, lr0, args)
        reference = {"row": DEFAULT_ROW, "lr": lr0, **{k: summary.get(k) for k in RECORDED}}
        bound = summary.get("final/probe/kl")
        if not isinstance(bound, int | float) or not math.isfinite(bound):
            raise SystemExit(f"the default row did not give a probe KL (see {args.runs}); pass --bound")
        print(f"bound: probe KL of {DEFAULT_ROW} at lr {lr0:g} = {bound:.4g}", flush=True)
    result = {"experiment": args.experiment, "rule": "largest r0*2^k with final/probe/kl <= bound and finite losses; the smallest KL tried where none passes",
              "bound": bound, "reference": reference,
              "overrides": args.overrides, "rows": dict(done)}
    for row in args.rows:
        if row in done:
            continue
        tried: dict[float, dict] = {}

        def ok(lr: float) -> bool:
            summary = run(row, lr, args)
            tried[lr] = {k: summary.get(k) for k in ("status", *RECORDED, "error")}
            return passes(summary, bound)

        start = optimizer_default_lr(row)
        found = ladder_search(start, ok, args.max_tries)
        chosen, chosen_by = choose(start, found, {lr: t["final/probe/kl"] for lr, t in tried.items()})
        result["rows"][row] = {"start": start, "chosen_lr": chosen, "chosen_by": chosen_by, "tried": {f"{k:.3g}": v for k, v in sorted(tried.items())}}
        kls = ", ".join(f"{k:.3g}: KL {v['final/probe/kl']}" for k, v in sorted(tried.items()))
        print(f"{row}: lr {chosen} (tried {kls})", flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # after every row: a stopped search keeps its rows
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
