"""A run's objectives and their separate gradients.

The ``objectives`` config group lists them: each has a ``name``, a ``loss`` (a callable
``loss(logits, labels, ref_logits) → scalar`` with a ``needs_reference`` flag) and the ``data``
source it is computed on (:mod:`unlearn.data.sources`). MOLLM's three (``objectives=mollm``)::

    forget  L_fgt  on forget batches   (the ``loss`` group: UCE by default; GA and NPO as options)
    kl      L_KL   on normal batches   KL(p_ref ‖ p_θ)
    retain  L_rt   on normal batches   cross-entropy

Objectives on the same source share one forward pass (one backward pass each on that graph), the
reference forward runs under ``torch.no_grad`` and only when an objective of that source needs
it, and each source's graph is freed before the next source's forward pass.

Besides the objectives, :meth:`Objectives.losses` reports fixed measures that do not depend on
the method, so that runs of different objective lists stay comparable (probes, loss-space
fronts): ``forget_nll`` on forget batches, ``kl`` and ``retain`` on normal batches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from unlearn.data.sources import source
from unlearn.losses import AnswerCrossEntropy, KLToReference, kl_to_reference, retain_cross_entropy
from unlearn.losses.tokens import answer_token_logprobs, masked_mean

OBJECTIVES = ("forget", "kl", "retain")  # MOLLM's objectives, the default (identity.DEFAULT_OBJECTIVES)
Batches = Mapping[str, dict[str, torch.Tensor]]  # data source → batch


@dataclass(frozen=True)
class Objective:
    """One objective: ``loss`` on batches of the ``data`` source."""

    name: str
    loss: Any
    data: str

    def __post_init__(self) -> None:
        source(self.data)  # an unknown source fails here, naming the known ones
        if not callable(self.loss):
            raise TypeError(f"objective {self.name!r}: loss {self.loss!r} is not callable")


def mollm_objectives(forget_loss: Any) -> list[Objective]:
    """MOLLM's three: ``forget_loss`` on forget data, KL and retain cross-entropy on normal data."""
    return [Objective("forget", forget_loss, "forget"), Objective("kl", KLToReference(), "normal"),
            Objective("retain", AnswerCrossEntropy(), "normal")]


@dataclass
class ObjectiveValues:
    losses: dict[str, float]
    grads: list[list[torch.Tensor]]  # ordered as Objectives.names


class Objectives:
    """Losses and per-objective gradients for one micro-batch per data source.

    ``reference`` is a context-manager factory that yields a callable returning reference
    logits: a frozen copy of the model, or the LoRA model with its adapter disabled.
    ``compute_dtype``: ``float32`` runs the forward passes as loaded; ``bfloat16`` runs them under
    ``torch.autocast`` (mixed precision: weights, gradients and losses stay in the loaded dtype,
    the logits are cast to float32 before every loss; :mod:`unlearn.models.precision`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        params: Sequence[torch.Tensor],
        objectives: Sequence[Objective],
        reference: Callable[[], AbstractContextManager[Callable[..., torch.Tensor]]],
        compute_dtype: str = "float32",
    ) -> None:
        from unlearn.models.precision import COMPUTE_DTYPES

        if compute_dtype not in COMPUTE_DTYPES[1:]:
            raise ValueError(f"trainer.compute_dtype must be float32 or bfloat16, got {compute_dtype!r}")
        self.compute_dtype = compute_dtype
        objectives = list(objectives)
        names = [o.name for o in objectives]
        if not objectives:
            raise ValueError("a run needs at least one objective (objectives.list is empty)")
        if len(set(names)) != len(names):
            raise ValueError(f"objective names must be distinct, got {names}")
        self.model = model
        self.params = list(params)
        self.objectives = objectives
        self.reference = reference

    @classmethod
    def mollm(cls, model, params, forget_loss, reference) -> Objectives:
        """MOLLM's three objectives with ``forget_loss`` (:func:`mollm_objectives`)."""
        return cls(model, params, mollm_objectives(forget_loss), reference)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.objectives)

    @property
    def sources(self) -> tuple[str, ...]:
        """The data sources the objectives read, in order of first use."""
        return tuple(dict.fromkeys(o.data for o in self.objectives))

    def precision(self, batch: dict[str, torch.Tensor]) -> AbstractContextManager:
        """The context of a forward pass in ``compute_dtype``."""
        from unlearn.models.precision import compute_precision

        return compute_precision(self.compute_dtype, batch["input_ids"].device)

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The trained model's logits (with autograd when grad mode is on)."""
        with self.precision(batch):
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return logits if self.compute_dtype == "float32" else logits.float()

    def reference_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The frozen reference model's logits (never tracked by autograd)."""
        with torch.no_grad(), self.reference() as ref, self.precision(batch):
            logits = ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return logits if self.compute_dtype == "float32" else logits.float()

    def _of(self, data: str) -> list[tuple[int, Objective]]:
        return [(i, o) for i, o in enumerate(self.objectives) if o.data == data]

    def source_losses(self, data: str, batch: dict[str, torch.Tensor], measures: bool = False
                      ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The objectives of source ``data`` on ``batch`` from one forward pass, and (``measures``)
        the fixed measures of that source (module docstring)."""
        objectives = [o for _, o in self._of(data)]
        needs_ref = any(getattr(o.loss, "needs_reference", False) for o in objectives) or \
            (measures and data == "normal")
        ref = self.reference_logits(batch) if needs_ref else None
        logits = self.logits(batch)
        values = {o.name: o.loss(logits, batch["labels"], ref) for o in objectives}
        extra: dict[str, torch.Tensor] = {}
        if measures and data == "forget":
            logp, mask = answer_token_logprobs(logits, batch["labels"])
            extra["forget_nll"] = -masked_mean(logp, mask)
        if measures and data == "normal":
            extra["kl"] = kl_to_reference(logits, ref, batch["labels"])
            extra["retain"] = retain_cross_entropy(logits, batch["labels"])
        return values, extra

    @torch.no_grad()
    def losses(self, batches: Batches) -> dict[str, float]:
        """Values, no gradients, on the given sources' batches (others may be missing): every
        objective of those sources and their fixed measures (an objective's own value wins on a
        name both have, e.g. MOLLM's ``kl``)."""
        out: dict[str, float] = {}
        for data, batch in batches.items():
            values, extra = self.source_losses(data, batch, measures=True)
            out.update({k: float(v) for k, v in extra.items()})
            out.update({k: float(v) for k, v in values.items()})
        return out

    def _grad(self, loss: torch.Tensor, retain_graph: bool) -> list[torch.Tensor]:
        return list(
            torch.autograd.grad(
                loss, self.params, retain_graph=retain_graph, allow_unused=True, materialize_grads=True
            )
        )

    def losses_and_grads(self, batches: Batches) -> ObjectiveValues:
        """Raises FloatingPointError (before that source's backward passes) if a loss is not
        finite. One source's graph is freed before the next source's forward pass."""
        grads: list[list[torch.Tensor] | None] = [None] * len(self.objectives)
        losses: dict[str, float] = {}
        for data in self.sources:
            values, _ = self.source_losses(data, _batch(batches, data))
            for name, loss in values.items():
                _check_finite(name, loss)
            members = self._of(data)
            for k, (i, objective) in enumerate(members):
                grads[i] = self._grad(values[objective.name], retain_graph=k < len(members) - 1)
                losses[objective.name] = values[objective.name].item()
        return ObjectiveValues(losses={n: losses[n] for n in self.names}, grads=grads)


def _batch(batches: Batches, data: str) -> dict[str, torch.Tensor]:
    if data not in batches:
        raise KeyError(f"no batch of the {data!r} source was given (have {sorted(batches)})")
    return batches[data]


def _check_finite(name: str, loss: torch.Tensor) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss/{name} is {loss.item()}")


def weighted_backward(objectives: Objectives, batches: Batches, weights: Sequence[float],
                      scale: float = 1.0) -> dict[str, float]:
    """One backward pass of ``scale · Σ_i c_i L_i`` into ``.grad`` (accumulating).

    The fixed-weight fast path: what a one-script weighted-sum baseline costs. No per-objective
    gradients exist, so ``grad_norm/*`` and ``descent/*`` cannot be logged on such a step.
    """
    if len(weights) != len(objectives.names):
        raise ValueError(f"{len(weights)} weights for {len(objectives.names)} objectives "
                         f"{list(objectives.names)}; set aggregator.weights to one number per objective")
    values: dict[str, torch.Tensor] = {}
    for data in objectives.sources:
        values.update(objectives.source_losses(data, _batch(batches, data))[0])
    for name, loss in values.items():
        _check_finite(name, loss)
    total = sum(w * values[n] for w, n in zip(weights, objectives.names, strict=True))
    (scale * total).backward()
    return {n: values[n].item() for n in objectives.names}
