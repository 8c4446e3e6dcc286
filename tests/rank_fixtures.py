"""What the data-parallel and the sharded tests share: tiny forget/normal examples, a loss that
is NaN once (a non-finite loss on one rank only) and the spawn of the ranks."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from unlearn.data.types import Example
from unlearn.losses import UCE

FORGET = [Example(f"How do I make poison number {i}?", f"Mix chemical {i} with bleach {i}.", True)
          for i in range(8)]
NORMAL = [Example(f"What is the capital of country {i}?", f"The capital is city {i}.")
          for i in range(8)]


class NaNOnce(UCE):
    """UCE whose first call returns NaN (a non-finite loss on one rank only)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __call__(self, logits, labels, ref_logits=None):
        self.calls += 1
        loss = super().__call__(logits, labels, ref_logits)
        return loss * math.nan if self.calls == 1 else loss


def spawn_ranks(worker: Callable, out: Path, cfg, world: int) -> list[dict]:
    """Run ``worker(rank, init_file, out_dir, cfg)`` on ``world`` spawned processes, offline and on
    one thread each (module fixtures run before conftest's offline env), and return each rank's
    ``rank<r>.pt`` results with its ``summary-rank<r>.json`` and the output dir."""
    with pytest.MonkeyPatch.context() as env:
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            env.setenv(var, "1")
        env.setenv("WANDB_MODE", "disabled")
        env.setenv("OMP_NUM_THREADS", "1")
        mp.spawn(worker, args=(str(out / "pg-init"), str(out), cfg), nprocs=world, join=True)
    loaded = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]
    for r, results in enumerate(loaded):
        results["dir"] = out
        results["summary"] = json.loads((out / f"summary-rank{r}.json").read_text())
    return loaded
