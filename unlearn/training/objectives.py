"""The three MOLLM objectives and their separate gradients.

    forget  L_fgt  on the forget batch       (UCE by default; GA and NPO as options)
    kl      L_KL   on the normal batch       KL(p_ref ‖ p_θ)
    retain  L_rt   on the normal batch       cross-entropy

KL and retain share one forward pass over the normal batch (two backward passes on one
graph); the reference forward runs under ``torch.no_grad``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from unlearn.losses import ForgetLoss, kl_to_reference, retain_cross_entropy
from unlearn.losses.tokens import answer_token_logprobs, masked_mean

OBJECTIVES = ("forget", "kl", "retain")


@dataclass
class ObjectiveValues:
    losses: dict[str, float]
    grads: list[list[torch.Tensor]]  # ordered as OBJECTIVES


class ThreeObjectives:
    """Computes the losses and per-objective gradients for one (forget, normal) micro-batch.

    ``reference`` is a context-manager factory that yields a callable returning reference
    logits: a frozen copy of the model, or the LoRA model with its adapter disabled.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        params: Sequence[torch.Tensor],
        forget_loss: ForgetLoss,
        reference: Callable[[], AbstractContextManager[Callable[..., torch.Tensor]]],
    ) -> None:
        self.model = model
        self.params = list(params)
        self.forget_loss = forget_loss
        self.reference = reference

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The trained model's logits (with autograd when grad mode is on)."""
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def reference_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The frozen reference model's logits (never tracked by autograd)."""
        with torch.no_grad(), self.reference() as ref:
            return ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])

    def forget_objective(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L_fgt, logits)`` on a forget batch."""
        ref = self.reference_logits(batch) if self.forget_loss.needs_reference else None
        logits = self.logits(batch)
        return self.forget_loss(logits, batch["labels"], ref), logits

    def normal_objectives(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L_KL, L_rt)`` on a normal batch, sharing one forward pass."""
        ref = self.reference_logits(batch)
        logits = self.logits(batch)
        return kl_to_reference(logits, ref, batch["labels"]), retain_cross_entropy(logits, batch["labels"])

    @torch.no_grad()
    def losses(
        self,
        forget_batch: dict[str, torch.Tensor] | None = None,
        normal_batch: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, float]:
        """The objectives' values, no gradients: ``forget`` and ``forget_nll`` (−mean log p of the
        harmful answer tokens, comparable across forget losses) on ``forget_batch``, ``kl`` and
        ``retain`` on ``normal_batch``; either batch may be omitted."""
        out: dict[str, float] = {}
        if forget_batch is not None:
            loss, logits = self.forget_objective(forget_batch)
            logp, mask = answer_token_logprobs(logits, forget_batch["labels"])
            out.update(forget=float(loss), forget_nll=float(-masked_mean(logp, mask)))
        if normal_batch is not None:
            kl, retain = self.normal_objectives(normal_batch)
            out.update(kl=float(kl), retain=float(retain))
        return out

    def _grad(self, loss: torch.Tensor, retain_graph: bool) -> list[torch.Tensor]:
        return list(
            torch.autograd.grad(
                loss, self.params, retain_graph=retain_graph, allow_unused=True, materialize_grads=True
            )
        )

    def losses_and_grads(
        self, forget_batch: dict[str, torch.Tensor], normal_batch: dict[str, torch.Tensor]
    ) -> ObjectiveValues:
        """Raises FloatingPointError (before any backward pass) if a loss is not finite.

        The forget graph is freed before the normal forward pass (one graph in memory at a time)."""
        l_forget, _ = self.forget_objective(forget_batch)
        _check_finite("forget", l_forget)
        g_forget = self._grad(l_forget, retain_graph=False)

        l_kl, l_retain = self.normal_objectives(normal_batch)
        _check_finite("kl", l_kl)
        _check_finite("retain", l_retain)
        g_kl = self._grad(l_kl, retain_graph=True)
        g_retain = self._grad(l_retain, retain_graph=False)
        return ObjectiveValues(
            losses={"forget": l_forget.item(), "kl": l_kl.item(), "retain": l_retain.item()},
            grads=[g_forget, g_kl, g_retain],
        )


def _check_finite(name: str, loss: torch.Tensor) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss/{name} is {loss.item()}")


def weighted_backward(
    objectives: ThreeObjectives,
    forget_batch: dict[str, torch.Tensor],
    normal_batch: dict[str, torch.Tensor],
    weights: Sequence[float],
    scale: float = 1.0,
) -> dict[str, float]:
    """One backward pass of ``scale · Σ_i c_i L_i`` into ``.grad`` (accumulating).

    The fixed-weight fast path: what a one-script weighted-sum baseline costs. No per-objective
    gradients exist, so ``grad_norm/*`` and ``descent/*`` cannot be logged on such a step.
    """
    l_forget, _ = objectives.forget_objective(forget_batch)
    l_kl, l_retain = objectives.normal_objectives(normal_batch)
    for name, loss in zip(OBJECTIVES, (l_forget, l_kl, l_retain)):
        _check_finite(name, loss)
    total = weights[0] * l_forget + weights[1] * l_kl + weights[2] * l_retain
    (scale * total).backward()
    return {"forget": l_forget.item(), "kl": l_kl.item(), "retain": l_retain.item()}
