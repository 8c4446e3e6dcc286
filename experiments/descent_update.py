"""Does the update that reaches the weights lower every objective? (docs/geometry.md)

Runs ``--steps`` steps of the default job (embedded SmolLM2, UCE, real PKU + TruthfulQA, batch
4 + 4, 256 tokens, evaluation off) for each optimizer × aggregator, then reads ``metrics.jsonl``:

* share of steps with any ``descent_update/*`` < 0 (the real update raised an objective to
  first order), per objective and overall;
* median ``cos/direction_update`` = cos(d, u);
* the probe (losses on fixed training examples) before and after.

Optimizers: ``sgd`` (the paper's θ ← θ − lr d), ``adamw`` (the default), ``metric_adam`` with
``trainer.aggregation_metric=preconditioned`` (weights computed on K_P = G P Gᵀ).

    python experiments/descent_update.py --steps 20 --out outputs/descent
    python experiments/descent_update.py --steps 10 --optimizers sgd --aggregators dual \
        --sgd-lr 0.1 0.3 1.0 --out outputs/descent_lr     # choosing SGD's lr (training split)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OBJECTIVES = ("forget", "kl", "retain")
VARIANTS = {
    "sgd": ["optimizer=sgd"],
    "adamw": ["optimizer=adamw"],
    "metric_adam": ["optimizer=metric_adam", "trainer.aggregation_metric=preconditioned"],
}


def summarise(run_dir: Path) -> dict:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in lines if not r.get("skipped")]
    negative = {n: sum(r[f"descent_update/{n}"] < 0 for r in steps) for n in OBJECTIVES}
    any_negative = sum(any(r[f"descent_update/{n}"] < 0 for n in OBJECTIVES) for r in steps)
    promised_negative = sum(any(r[f"descent/{n}"] < 0 for n in OBJECTIVES) for r in steps)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "steps": len(steps),
        "skipped": len(lines) - len(steps),
        "share_any_descent_update_negative": any_negative / max(1, len(steps)),
        "steps_with_negative_descent_update": negative,
        "share_any_descent_negative": promised_negative / max(1, len(steps)),
        "median_cos_direction_update": statistics.median(r["cos/direction_update"] for r in steps),
        "min_cos_direction_update": min(r["cos/direction_update"] for r in steps),
        "median_update_norm": statistics.median(r["update_norm"] for r in steps),
        "probe_initial": {k.split("/", 2)[2]: v for k, v in summary.items() if k.startswith("initial/probe/")},
        "probe_final": {k.split("/", 2)[2]: v for k, v in summary.items() if k.startswith("final/probe/")},
        "median_step_s": statistics.median(r["time/step_s"] for r in steps),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--optimizers", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--aggregators", nargs="+", default=["dual", "mgda"])
    parser.add_argument("--sgd-lr", type=float, nargs="+", default=[None], help="SGD rates (default: the YAML's)")
    parser.add_argument("--model", default="smollm2_135m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides for every run")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(REPO / "outputs" / "descent"))
    args = parser.parse_args(argv)

    from hydra import compose, initialize_config_dir

    from unlearn.experiment import run_experiment

    out = Path(args.out)
    results = {}
    for optimizer in args.optimizers:
        for lr in args.sgd_lr if optimizer == "sgd" else [None]:
            for aggregator in args.aggregators:
                name = f"{optimizer}{'' if lr is None else f'_lr{lr:g}'}+{aggregator}"
                overrides = [f"data_dir={args.data_dir}", f"model={args.model}", f"aggregator={aggregator}",
                             f"trainer.max_steps={args.steps}", "eval.enabled=false", "logger.mode=disabled",
                             "trainer.save_model=false", "trainer.checkpoint_every=0",
                             "trainer.progress_bar=false", f"threads={args.threads}", *VARIANTS[optimizer],
                             *([f"trainer.optimizer.lr={lr}"] if lr is not None else []), *args.extra]
                with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
                    cfg = compose("config", overrides=overrides)
                run_dir = out / name
                run_experiment(cfg, run_dir)
                results[name] = {"lr": cfg.trainer.optimizer.lr, "overrides": overrides, **summarise(run_dir)}
                print(json.dumps({name: results[name]}), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{'run':<26}{'lr':>9}{'any g·u<0':>11}{'any g·d<0':>11}{'med cos(d,u)':>14}"
          f"{'forget':>16}{'kl':>8}{'retain':>14}")
    for name, r in results.items():
        pi, pf = r["probe_initial"], r["probe_final"]
        print(f"{name:<26}{r['lr']:>9.2g}{100 * r['share_any_descent_update_negative']:>10.0f}%"
              f"{100 * r['share_any_descent_negative']:>10.0f}%{r['median_cos_direction_update']:>14.3f}"
              f"{pi.get('forget', float('nan')):>8.3f}→{pf.get('forget', float('nan')):<7.3f}"
              f"{pf.get('kl', float('nan')):>8.3f}{pi.get('retain', float('nan')):>7.2f}→{pf.get('retain', float('nan')):<6.2f}")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
