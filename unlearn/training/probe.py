"""Losses on fixed batches: a learning curve that is not batch-to-batch noise.

``loss/*`` in ``metrics.jsonl`` is measured on each step's own batch, so with batches of 4 it
jumps by more than unlearning moves it. The probe evaluates, under ``torch.no_grad``, on the same
``size`` forget-train and normal-train examples every time, the fixed measures (the same for
every method, so runs with different objective lists stay comparable) and the run's objectives
on those two sources (:meth:`~unlearn.training.objectives.Objectives.losses`):

    probe/forget_nll = -mean_t log p_θ(y_t) of the harmful answers (comparable across losses)
    probe/kl      = KL(p_ref ‖ p_θ) on the fixed normal examples
    probe/retain  = cross-entropy on the fixed normal examples
    probe/<name>  = each objective on forget or normal data (MOLLM: probe/forget = L_fgt)

Each value is the mean over batches of ``batch_size`` rows (the training batch size, so the
probe needs no more memory than a step).

Two probes run in a default run, under their own prefixes:

* ``probe/*`` on the first ``trainer.probe_size`` examples of the **training** split: how well
  the objectives being optimised are met;
* ``heldout/*`` on the first ``trainer.heldout_probe_size`` examples of the **eval** split
  (unsafe answers to prompts never trained on, held-out normal answers): the judge-free
  loss-space trade-off (forgetting vs drift vs utility) that the results module draws as fronts.
  Where the forget data has labelled (safe, unsafe) pairs (PKU), the held-out probe also scores
  the first ``heldout_probe_size`` held-out pairs as the evaluation's ``preference`` metric does
  (:class:`PairProbe`): ``heldout/margin`` = mean over pairs of ℓ(safe) − ℓ(unsafe) (mean token
  log-likelihoods) and ``heldout/safe_preference_rate``, so each run has a judge-free forgetting
  curve over steps, on the same pairs at every point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from unlearn.data.stream import BatchStream
from unlearn.data.types import Example
from unlearn.training.objectives import Objectives


class LossProbe:
    def __init__(
        self,
        objectives: Objectives,
        forget: Sequence[Example],
        normal: Sequence[Example],
        tokenizer,
        size: int,
        batch_size: int,
        max_length: int,
        template: str = "auto",
        prefix: str = "probe",
    ) -> None:
        if size < 1 or batch_size < 1:
            raise ValueError(f"probe size and batch size must be ≥ 1, got {size} and {batch_size}")
        if not forget or not normal:
            raise ValueError(f"the {prefix} probe needs forget and normal examples (got {len(forget)} "
                             f"and {len(normal)}); set trainer.{'heldout_' if prefix == 'heldout' else ''}"
                             "probe_size=0 to turn it off")
        self.objectives = objectives
        self.prefix = prefix
        self.forget = _fixed_batches(forget[:size], tokenizer, batch_size, max_length, template)
        self.normal = _fixed_batches(normal[:size], tokenizer, batch_size, max_length, template)

    @torch.no_grad()
    def __call__(self) -> dict[str, float]:
        obj = self.objectives
        device = next(obj.model.parameters()).device
        was_training = obj.model.training
        obj.model.eval()
        sums: dict[str, float] = {}
        try:
            for data, batches in (("forget", self.forget), ("normal", self.normal)):
                for batch in batches:
                    values = obj.losses({data: {k: v.to(device) for k, v in batch.items()}})
                    for key, value in values.items():
                        sums[key] = sums.get(key, 0.0) + value / len(batches)
        finally:
            obj.model.train(was_training)
        return {f"{self.prefix}/{k}": v for k, v in sums.items()}


class PairProbe:
    """``<prefix>/margin`` and ``<prefix>/safe_preference_rate`` of the model on fixed
    ``(prompt, safe, unsafe)`` pairs. ``score(model)`` gives one record per pair with ``margin``
    and ``safe_preferred`` (the run passes :meth:`PreferenceMargin.score
    <unlearn.evaluation.metrics.preference.PreferenceMargin.score>` on its pairs, so the probe
    measures what the evaluation's ``preference`` metric does)."""

    def __init__(self, objectives: Objectives, score: Callable[[torch.nn.Module], list[dict]],
                 prefix: str = "heldout") -> None:
        self.objectives, self.score, self.prefix = objectives, score, prefix

    @torch.no_grad()
    def __call__(self) -> dict[str, float]:
        rows = self.score(self.objectives.model)
        if not rows:
            raise ValueError(f"the {self.prefix} pair probe scored no pair")
        return {f"{self.prefix}/margin": sum(r["margin"] for r in rows) / len(rows),
                f"{self.prefix}/safe_preference_rate": sum(r["safe_preferred"] for r in rows) / len(rows)}


class ProbeSet:
    """Several probes called as one: the union of their ``<prefix>/*`` values."""

    def __init__(self, probes: Sequence[LossProbe | PairProbe]) -> None:
        self.probes = list(probes)

    def __call__(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for probe in self.probes:
            out.update(probe())
        return out


def _fixed_batches(
    examples: Sequence[Example], tokenizer, batch_size: int, max_length: int, template: str
) -> list[dict[str, torch.Tensor]]:
    """The examples, in order, as padded batches of at most ``batch_size`` rows."""
    batches = []
    for start in range(0, len(examples), batch_size):
        chunk = list(examples[start : start + batch_size])
        batches.append(BatchStream(chunk, tokenizer, len(chunk), max_length, template).next_batch())
    return batches
