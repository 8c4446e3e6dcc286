"""How the evaluation generates and scores answers, in one object shared by metrics and attacks.

:class:`DecodingSettings` is the base of :class:`~unlearn.evaluation.metrics.base.EvalContext`
and :class:`~unlearn.evaluation.attacks.base.AttackContext`: the prompt template and length, the
greedy answer's token limit, the batch size and the bootstrap of the intervals are read from the
config once (:meth:`DecodingSettings.from_config`) and are the same for the plain evaluation and
every attack on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

BOOTSTRAP = {"n_boot": 2000, "level": 0.95, "seed": 0}  # per-run intervals over prompts


@dataclass(kw_only=True)
class DecodingSettings:
    """``template``/``max_length``: the dataset's prompt format and token cut; ``max_new_tokens``:
    greedy answer length; ``batch_size``: generation and scoring batches; ``compute_dtype``:
    ``float32`` or ``bfloat16`` (greedy decoding and the fluency and utility likelihoods under
    autocast, :mod:`unlearn.models.precision`); ``bootstrap``: the percentile bootstrap of every
    per-run interval."""

    template: str = "auto"
    max_length: int = 256
    max_new_tokens: int = 128
    batch_size: int = 16
    progress_bar: bool = False
    compute_dtype: str = "float32"
    bootstrap: dict[str, Any] = field(default_factory=lambda: dict(BOOTSTRAP))

    @classmethod
    def from_config(cls, cfg: Any) -> DecodingSettings:
        """From a run's config: ``dataset.template``/``max_length`` and ``eval.max_new_tokens``/
        ``batch_size``/``progress_bar``/``compute_dtype``."""
        return cls(template=cfg.dataset.template, max_length=int(cfg.dataset.max_length),
                   max_new_tokens=int(cfg.eval.max_new_tokens), batch_size=int(cfg.eval.batch_size),
                   progress_bar=bool(cfg.eval.get("progress_bar", False)),
                   compute_dtype=str(cfg.eval.get("compute_dtype", "float32")))

    def decoding(self) -> dict[str, Any]:
        """These settings as keyword arguments (for another context of the same evaluation)."""
        return {f.name: getattr(self, f.name) for f in fields(DecodingSettings)}
