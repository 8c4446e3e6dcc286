"""What the data-parallel and the sharded tests share: tiny forget/normal examples and a loss
that is NaN once (a non-finite loss on one rank only)."""

from __future__ import annotations

import math

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
