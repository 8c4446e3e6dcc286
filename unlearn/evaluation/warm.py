"""``python -m unlearn.evaluation.warm [overrides]``: fill the shared caches a sweep's jobs all need.

Every job of a sweep evaluates the same original model with the same judge: the judge is trained
once and the original model's evaluation is cached under ``cache_dir`` (keyed by
:func:`unlearn.evaluation.stage.cache_key`). Parallel jobs that start together would each miss
both caches and redo the work on one thread each. The sweep driver (:mod:`unlearn.results.sweep`)
therefore runs this first, with every core (``threads`` defaults to ``os.cpu_count()``):

1. build the judge (trained and cached, with its validation counts);
2. evaluate the original model (``EvaluationStage.before``), which writes the cache.

The cache keys exclude ``threads`` (:data:`unlearn.identity.NON_RESULT_KEYS`), so the jobs hit
them. Nothing is written outside ``cache_dir``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def warm(overrides: Sequence[str]) -> dict[str, float]:
    """Train/load the judge and cache the original model's evaluation; returns timings (s)."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    torch.set_num_threads(int(cfg.threads) if cfg.threads else (os.cpu_count() or 1))
    from unlearn.evaluation.stage import EvaluationStage

    if not cfg.eval.get("enabled", True):
        return {}
    t0 = time.perf_counter()
    loaded = instantiate(cfg.model)
    stage = EvaluationStage(cfg, loaded, instantiate(cfg.dataset.forget), instantiate(cfg.dataset.normal))
    _ = stage.judge
    t1 = time.perf_counter()
    result = stage.before(loaded.model)
    t2 = time.perf_counter()
    return {"judge_s": t1 - t0, "original_eval_s": t2 - t1, "cached": float(result.get("eval/before/cached", 0))}


def main(argv: Sequence[str] | None = None) -> int:
    times = warm(sys.argv[1:] if argv is None else argv)
    print("warmed the shared caches: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
