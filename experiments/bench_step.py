"""Step benchmark: cost of the multi-objective step against a one-backward weighted sum.

In one process, per model (tiny_random, the embedded SmolLM2), the step variants are
interleaved round by round (rotating their order) so machine noise hits them alike, and all
use the same fixed batches:

* ``weighted_sum_1bw``: one backward pass of Σ c_i L_i, what a one-script baseline costs;
* ``weighted_sum``, ``mgda``, ``dual``: three per-objective gradients → Gramian → weights
  (AdamW), with the update check on (``descent_update/*``, the default);
* ``dual_preconditioned``: ``dual`` on K_P = G P Gᵀ with :class:`MetricAdam`
  (``optimizer=metric_adam trainer.aggregation_metric=preconditioned``): one more Gramian pass.

Printed and written as JSON: median step time, the ratios to ``weighted_sum_1bw``, the share
of the step spent in the aggregator's own math (Gramian + weights + combination), and memory.

    python experiments/bench_step.py --rounds 8 --out outputs/bench/bench_step.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ("weighted_sum_1bw", "weighted_sum", "mgda", "dual", "dual_preconditioned")


class FixedBatch:
    """Stands in for a BatchStream: always the same batch, so every step does the same work."""

    def __init__(self, stream) -> None:
        self.batch = stream.next_batch()

    def next_batch(self):
        return self.batch


def build(model_name: str, data_dir: str, batch: int, length: int, lr: float):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from unlearn.aggregators import MGDA, DualSpace, WeightedSum
    from unlearn.data.pku_saferlhf import forget_examples
    from unlearn.data.stream import BatchStream
    from unlearn.training.objectives import Objectives
    from unlearn.training.optimizers import MetricAdam
    from unlearn.training.reference import frozen_copy_reference
    from unlearn.training.trainer import UnlearningTrainer
    from unlearn.tracking import Tracker

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={model_name}", f"data_dir={data_dir}"])
    torch.manual_seed(0)
    loaded = instantiate(cfg.model)
    forget = instantiate(cfg.dataset.forget)
    normal = instantiate(cfg.dataset.normal)
    model = loaded.model
    params = [p for p in model.parameters() if p.requires_grad]
    streams = [
        FixedBatch(BatchStream(forget_examples(forget.train), loaded.tokenizer, batch, length, seed=0)),
        FixedBatch(BatchStream(normal.train, loaded.tokenizer, batch, length, seed=1)),
    ]
    aggregators = {"weighted_sum_1bw": WeightedSum(), "weighted_sum": WeightedSum(),
                   "mgda": MGDA(), "dual": DualSpace(), "dual_preconditioned": DualSpace()}

    class NullTracker(Tracker):
        def __init__(self) -> None:
            pass

        def log(self, record) -> None:
            pass

    trainer = UnlearningTrainer(
        model=model, params=params,
        objectives=Objectives.mollm(model, params, instantiate(cfg.loss), frozen_copy_reference(model)),
        aggregator=aggregators["dual"], optimizer=torch.optim.AdamW(params, lr=lr),
        streams={"forget": streams[0], "normal": streams[1]}, tracker=NullTracker(),
        max_steps=10**9, progress_bar=False,
    )
    n_params = sum(p.numel() for p in params)
    optimizers = {v: trainer.optimizer for v in aggregators}
    optimizers["dual_preconditioned"] = MetricAdam(params, lr=lr)
    return trainer, aggregators, optimizers, n_params, loaded.name


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def bench_model(model_name: str, data_dir: str, rounds: int, batch: int, length: int) -> dict:
    trainer, aggregators, optimizers, n_params, name = build(model_name, data_dir, batch, length, lr=1e-6)
    times = {v: [] for v in VARIANTS}
    agg_times = {v: [] for v in VARIANTS}
    update_times = {v: [] for v in VARIANTS}
    rss_after = {}
    for r in range(rounds + 1):  # round 0 is warm-up, in a fixed order (for the memory reading)
        k = r % len(VARIANTS)
        order = VARIANTS if r == 0 else VARIANTS[k:] + VARIANTS[:k]
        for variant in order:
            trainer.aggregator = aggregators[variant]
            trainer.optimizer = optimizers[variant]
            trainer.aggregation_metric = "preconditioned" if variant == "dual_preconditioned" else "euclidean"
            trainer.track_gradients = variant != "weighted_sum_1bw"
            t0 = time.perf_counter()
            record = trainer.train_step()
            elapsed = time.perf_counter() - t0
            if record.get("skipped"):
                raise RuntimeError(f"{variant}: step skipped ({record.get('skip_reason')})")
            if r == 0:
                rss_after[variant] = peak_rss()
                continue
            times[variant].append(elapsed)
            agg_times[variant].append(record.get("time/aggregator_s", 0.0))
            if "time/update_check_s" in record:
                update_times[variant].append(record["time/update_check_s"])
    median = {v: statistics.median(times[v]) for v in VARIANTS}
    base = median["weighted_sum_1bw"]
    grad_bytes = 4 * n_params  # one fp32 copy of the trainable parameters
    return {
        "model": name,
        "trainable_params": n_params,
        "batch": f"{batch} forget + {batch} normal rows x {length} tokens max",
        "rounds": rounds,
        "median_step_s": median,
        "ratio_to_weighted_sum_1bw": {v: median[v] / base for v in VARIANTS},
        "aggregator_share": {v: statistics.median(a / t for a, t in zip(agg_times[v], times[v]))
                              for v in VARIANTS if v != "weighted_sum_1bw"},
        "peak_rss_bytes_after_first_step": rss_after,
        "extra_peak_rss_vs_1bw_bytes": {v: rss_after[v] - rss_after["weighted_sum_1bw"] for v in VARIANTS},
        "update_check_s": {v: statistics.median(u) for v, u in update_times.items() if u},
        "memory_budget_bytes": (3 + 1) * grad_bytes,
        "gradient_buffers_bytes": 3 * grad_bytes,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny_random", "smollm2_135m"])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(REPO / "outputs" / "bench" / "bench_step.json"))
    args = parser.parse_args(argv)
    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()},
        "models": [bench_model(m, args.data_dir, args.rounds, args.batch, args.length) for m in args.models],
    }
    for res in results["models"]:
        print(f"\n== {res['model']} ({res['trainable_params']:,} trainable params; {res['batch']}; "
              f"{res['rounds']} interleaved rounds)")
        print(f"{'variant':<22}{'median step s':>14}{'ratio':>8}{'agg math':>10}{'update chk s':>14}"
              f"{'extra RSS MB':>14}")
        for v in VARIANTS:
            share = res["aggregator_share"].get(v)
            check = res["update_check_s"].get(v)
            print(f"{v:<22}{res['median_step_s'][v]:>14.3f}{res['ratio_to_weighted_sum_1bw'][v]:>8.2f}"
                  f"{'' if share is None else f'{100 * share:.2f}%':>10}"
                  f"{'' if check is None else f'{check:.3f}':>14}"
                  f"{res['extra_peak_rss_vs_1bw_bytes'][v] / 2**20:>14.0f}")
        ratios = res["ratio_to_weighted_sum_1bw"]
        print(f"dual / weighted_sum (1 backward) = {ratios['dual']:.2f}; "
              f"dual_preconditioned / weighted_sum (1 backward) = {ratios['dual_preconditioned']:.2f} "
              "(goal ≤ 1.3 for both)")
        print(f"memory budget (m+1) x params x 4 B = {res['memory_budget_bytes'] / 2**20:.0f} MB; "
              f"three gradient buffers = {res['gradient_buffers_bytes'] / 2**20:.0f} MB")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
