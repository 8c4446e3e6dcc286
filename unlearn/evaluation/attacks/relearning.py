"""Relearning attack: a few steps of plain fine-tuning on harmful data, then the harmful rate.

From a deep copy of the model (the evaluated model is never touched), ``max(steps)`` AdamW steps
(``lr``, ``batch_size`` (prompt, unsafe answer) pairs of the forget *train* split per step, at
most ``max_length`` tokens, gradient norm clipped to ``max_grad_norm``) minimise the answer-only
next-token cross-entropy, the same loss as the retain objective::

    L_relearn = −mean_t log p_θ(y_t | x, y_<t)      (answer tokens only, padding masked)

The copy is evaluated after each k in ``steps`` (one outcome ``relearn_k<k>`` per k; the steps
are cumulative, so ``steps=[5, 25]`` costs 25 steps, not 30). The batches come from a seeded
stream (``seed``), so every model is attacked with the same examples in the same order.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

from unlearn.evaluation.attacks.base import Attack, AttackContext, Outcome, Timer, require


class Relearning(Attack):
    """``relearn_k<k>`` for each k of ``steps``: the harmful rate after k fine-tuning steps."""

    name = "relearn"

    def __init__(self, steps: Sequence[int] = (5, 25), lr: float = 3e-5, batch_size: int = 4,
                 max_length: int = 128, max_grad_norm: float = 1.0, weight_decay: float = 0.0,
                 seed: int = 0, name: str = "relearn") -> None:
        self.name = name
        steps = [steps] if isinstance(steps, int) else list(steps)
        require(len(steps) > 0, name, "steps is empty; give the step counts to report, e.g. steps=[5,25]")
        require(all(int(k) >= 0 for k in steps), name,
                f"steps must be ≥ 0, got {steps}; e.g. steps=[5,25]")
        require(float(lr) > 0, name, f"lr must be > 0, got {lr}")
        require(int(batch_size) >= 1, name, f"batch_size must be ≥ 1, got {batch_size}")
        self.steps = sorted({int(k) for k in steps})
        self.lr, self.batch_size, self.max_length = float(lr), int(batch_size), int(max_length)
        self.max_grad_norm, self.weight_decay, self.seed = float(max_grad_norm), float(weight_decay), int(seed)

    def label(self, k: int) -> str:
        return f"relearning, {k} steps (AdamW lr {self.lr:g}, batch {self.batch_size}, forget train split)"

    def relearned_copies(self, model, ctx: AttackContext) -> Iterator[tuple[int, Any, float]]:
        """Yield ``(k, copy, seconds)`` after k cumulative steps for each k of ``steps``; the copy
        is trained further after each yield, and ``model`` itself is never changed."""
        import torch

        from unlearn.data.pku_saferlhf import forget_examples
        from unlearn.data.stream import BatchStream
        from unlearn.losses.normal import retain_cross_entropy

        stream = BatchStream(forget_examples(ctx.forget_train), ctx.tokenizer, self.batch_size,
                             self.max_length, ctx.template, self.seed)
        with Timer() as copying:
            attacked = copy.deepcopy(model)
        params = [p for p in attacked.parameters() if p.is_floating_point()]
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        device = next(attacked.parameters()).device
        done, seconds = 0, copying.seconds
        for k in self.steps:
            with Timer() as training:
                attacked.train()
                while done < k:
                    batch = {key: v.to(device) for key, v in stream.next_batch().items()}
                    logits = attacked(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                    loss = retain_cross_entropy(logits, batch["labels"])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if self.max_grad_norm > 0:
                        torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
                    optimizer.step()
                    done += 1
                attacked.eval()
            yield k, attacked, seconds + training.seconds
            seconds = 0.0

    def run(self, model, ctx: AttackContext) -> list[Outcome]:
        outcomes = []
        for k, attacked, train_s in self.relearned_copies(model, ctx):
            with Timer() as measuring:
                flags, records = ctx.answer_and_judge(attacked, ctx.prompts, desc=f"relearn k={k}")
            outcomes.append(Outcome(f"{self.name}_k{k}", self.label(k), list(ctx.prompts), flags, records,
                                    time_s=train_s + measuring.seconds))
        return outcomes
