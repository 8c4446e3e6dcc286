"""Losses on fixed training batches: a learning curve that is not batch-to-batch noise.

``loss/*`` in ``metrics.jsonl`` is measured on each step's own batch, so with batches of 4 it
jumps by more than unlearning moves it. The probe evaluates the three objectives, under
``torch.no_grad``, on the same ``size`` forget-train and normal-train examples every time:

    probe/forget  = L_fgt on the fixed forget examples   (UCE, GA or NPO: the run's forget loss)
    probe/forget_nll = -mean_t log p_θ(y_t) of the harmful answers (comparable across losses)
    probe/kl      = KL(p_ref ‖ p_θ) on the fixed normal examples
    probe/retain  = cross-entropy on the fixed normal examples

Each value is the mean over batches of ``batch_size`` rows (the training batch size, so the
probe needs no more memory than a step). The examples come from the training split only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from unlearn.data.stream import BatchStream
from unlearn.data.types import Example
from unlearn.losses import kl_to_reference, retain_cross_entropy
from unlearn.losses.tokens import answer_token_logprobs, masked_mean
from unlearn.training.objectives import ThreeObjectives


class LossProbe:
    def __init__(
        self,
        objectives: ThreeObjectives,
        forget: Sequence[Example],
        normal: Sequence[Example],
        tokenizer,
        size: int,
        batch_size: int,
        max_length: int,
        template: str = "auto",
    ) -> None:
        if size < 1 or batch_size < 1:
            raise ValueError(f"probe size and batch size must be ≥ 1, got {size} and {batch_size}")
        self.objectives = objectives
        self.forget = _fixed_batches(forget[:size], tokenizer, batch_size, max_length, template)
        self.normal = _fixed_batches(normal[:size], tokenizer, batch_size, max_length, template)

    @torch.no_grad()
    def __call__(self) -> dict[str, float]:
        obj = self.objectives
        device = next(obj.model.parameters()).device
        was_training = obj.model.training
        obj.model.eval()
        sums = dict.fromkeys(("forget", "forget_nll", "kl", "retain"), 0.0)
        try:
            for batch in self.forget:
                batch = {k: v.to(device) for k, v in batch.items()}
                ref = obj._ref_logits(batch) if obj.forget_loss.needs_reference else None
                logits = obj._logits(batch)
                sums["forget"] += float(obj.forget_loss(logits, batch["labels"], ref))
                logp, mask = answer_token_logprobs(logits, batch["labels"])
                sums["forget_nll"] += float(-masked_mean(logp, mask))
            for batch in self.normal:
                batch = {k: v.to(device) for k, v in batch.items()}
                logits = obj._logits(batch)
                sums["kl"] += float(kl_to_reference(logits, obj._ref_logits(batch), batch["labels"]))
                sums["retain"] += float(retain_cross_entropy(logits, batch["labels"]))
        finally:
            obj.model.train(was_training)
        counts = {"forget": len(self.forget), "forget_nll": len(self.forget),
                  "kl": len(self.normal), "retain": len(self.normal)}
        return {f"probe/{k}": v / counts[k] for k, v in sums.items()}


def _fixed_batches(
    examples: Sequence[Example], tokenizer, batch_size: int, max_length: int, template: str
) -> list[dict[str, torch.Tensor]]:
    """The examples, in order, as padded batches of at most ``batch_size`` rows."""
    batches = []
    for start in range(0, len(examples), batch_size):
        chunk = list(examples[start : start + batch_size])
        batches.append(BatchStream(chunk, tokenizer, len(chunk), max_length, template).next_batch())
    return batches
