"""What the judge-free metrics add to an evaluation of the embedded model.

Times, in one process on the same model, the ``preference`` metric (held-out safe/unsafe pairs,
no generation) and, for scale, the ``utility`` metric (held-out TruthfulQA answers), each
``--rounds`` times interleaved, and prints the medians, their ratio and the pair count.

    python experiments/bench_judge_free.py --threads 2 --batch-size 50 --compare-dtype \
        --out docs/results/judge_free/bench_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from harness import DEFAULT_DATA_DIR, compose_config, eval_context, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=50, help="eval.batch_size (paper_embedded: 50)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-answer-tokens", type=int, default=None, help="default: conf/metric/preference.yaml")
    parser.add_argument("--compare-prefix", action="store_true",
                        help="also time the preference metric without the shared prompt prefix")
    parser.add_argument("--compare-dtype", action="store_true",
                        help="also time the preference metric with float32 products (compute_dtype=float32)")
    parser.add_argument("--out", default="outputs/bench/judge_free.json")
    args = parser.parse_args()

    import torch

    from unlearn.data.pku_saferlhf import load_pku_saferlhf
    from unlearn.data.truthfulqa import load_truthfulqa
    from unlearn.evaluation import shared_prompt
    from unlearn.evaluation.metrics import build_metrics
    from unlearn.evaluation.stage import preference_pairs

    torch.set_num_threads(args.threads)
    cfg = compose_config(f"data_dir={args.data_dir}")
    loaded = load_model(cfg)
    pairs = preference_pairs(load_pku_saferlhf(args.data_dir).eval)
    normal = [(e.prompt, e.response) for e in load_truthfulqa(args.data_dir).eval]
    ctx = eval_context(loaded, cfg, normal=normal, batch_size=args.batch_size, preference_pairs=pairs)
    preference = "preference" if args.max_answer_tokens is None else {
        "_target_": "unlearn.evaluation.metrics.preference.PreferenceMargin", "max_answer_tokens": args.max_answer_tokens}
    metrics = {m.name: m for m in build_metrics([preference, "utility"])}
    float32 = build_metrics([{"_target_": "unlearn.evaluation.metrics.preference.PreferenceMargin",
                              "max_answer_tokens": metrics["preference"].max_answer_tokens,
                              "compute_dtype": "float32"}])[0]

    def unshared_prefix():  # the chat template's common prefix encoded with every prompt again
        saved, shared_prompt.MIN_SHARED_PREFIX = shared_prompt.MIN_SHARED_PREFIX, 10**9
        try:
            return metrics["preference"].compute(ctx)
        finally:
            shared_prompt.MIN_SHARED_PREFIX = saved

    runs = {"preference": lambda: metrics["preference"].compute(ctx), "utility": lambda: metrics["utility"].compute(ctx)}
    if args.compare_prefix:
        runs["preference_unshared_prefix"] = unshared_prefix
    if args.compare_dtype:
        runs["preference_float32"] = lambda: float32.compute(ctx)
    times: dict[str, list[float]] = {name: [] for name in runs}
    margins: dict[str, float] = {}
    per_pair: dict[str, list[float]] = {}
    for r in range(args.rounds):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            t0 = time.perf_counter()
            out = runs[name]()
            times[name].append(time.perf_counter() - t0)
            if "preference_margin" in out.intervals:
                margins[name] = out.intervals["preference_margin"].estimate
                per_pair[name] = [row["margin"] for row in out.files["preference"]]
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {"model": loaded.name, "threads": args.threads, "batch_size": args.batch_size, "rounds": args.rounds,
              "n_preference_pairs": len(metrics["preference"].select(pairs)), "n_utility_examples": len(normal),
              "max_answer_tokens": metrics["preference"].max_answer_tokens,
              "median_s": medians, "times_s": times, "preference_over_utility": medians["preference"] / medians["utility"],
              "machine": f"{platform.machine()} {os.cpu_count()} cpus", "torch": torch.__version__,
              "preference_margin": margins}
    if args.compare_dtype:
        from unlearn.models.precision import resolve_compute_dtype

        moved = [abs(a - b) for a, b in zip(per_pair["preference"], per_pair["preference_float32"], strict=True)]
        result["default_compute_dtype"] = resolve_compute_dtype(metrics["preference"].compute_dtype, ctx.device)
        result["default_over_float32"] = medians["preference"] / medians["preference_float32"]
        result["margin_moved_by_precision"] = {
            "mean_abs": sum(moved) / len(moved), "max_abs": max(moved),
            "signs_changed": sum((a > 0) != (b > 0) for a, b in zip(per_pair["preference"],
                                                                      per_pair["preference_float32"], strict=True))}
    if args.compare_prefix:
        result["shared_over_unshared_prefix"] = medians["preference"] / medians["preference_unshared_prefix"]
    print(json.dumps({k: v for k, v in result.items() if k != "times_s"}, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
