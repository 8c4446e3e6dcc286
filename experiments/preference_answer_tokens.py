"""How many answer tokens the ``preference`` metric scores, chosen on the *training* split.

The original model's margin Δ = ℓ(safe) − ℓ(unsafe) on the first pair of each of the first 232
training prompts (as many as the held-out split has), at several answer-token cuts: where Δ's
mean stops moving as the cut grows, the start of the answers carries the preference.

    UNLEARN_DATA_DIR=../shared/data python experiments/preference_answer_tokens.py \
        --out docs/results/judge_free/answer_tokens.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from harness import DEFAULT_DATA_DIR, compose_config, eval_context, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--tokens", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--pairs", type=int, default=232)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="outputs/preference_answer_tokens.json")
    args = parser.parse_args()

    import torch

    from unlearn.data.pku_saferlhf import load_pku_saferlhf
    from unlearn.evaluation.metrics.preference import PreferenceMargin
    from unlearn.evaluation.stage import preference_pairs

    torch.set_num_threads(args.threads)
    cfg = compose_config(f"data_dir={args.data_dir}")
    loaded = load_model(cfg)
    pairs = preference_pairs(load_pku_saferlhf(args.data_dir).train)
    result = {"split": "train", "model": loaded.name, "max_length": cfg.dataset.max_length, "cuts": {}}
    for k in args.tokens:
        metric = PreferenceMargin(max_pairs=args.pairs, max_answer_tokens=k)
        ctx = eval_context(loaded, cfg, batch_size=50, preference_pairs=pairs)
        out = metric.compute(ctx)
        margins = [r["margin"] for r in out.files["preference"]]
        interval = out.intervals["preference_margin"]
        result["cuts"][k] = {"pairs": len(margins), "margin": interval.estimate, "margin_lo": interval.lo,
                             "margin_hi": interval.hi, "margin_sd": statistics.stdev(margins),
                             "safe_preference_rate": out.intervals["safe_preference_rate"].estimate,
                             "unsafe_nll": out.intervals["unsafe_nll"].estimate}
        print(k, json.dumps(result["cuts"][k]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
