"""What every evaluation metric shares: the context it reads and what it returns.

A metric is one :class:`Metric` subclass plus one ``conf/metric/<name>.yaml`` whose ``_target_``
names it; ``eval.metrics`` lists the ones a run computes. The stage generates the answers once
(greedy, :mod:`unlearn.evaluation.generation`), then calls ``compute(ctx)`` of each metric in
order. A metric declares its summary keys as :class:`~.columns.Column` objects (``columns``):
the stage records the declarations in ``summary.json`` (``eval/columns``) and the results tables
build their columns from them, so a new metric needs no list entry anywhere.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from unlearn.errors import UnlearnError
from unlearn.evaluation.decoding import DecodingSettings
from unlearn.evaluation.metrics.columns import Column


class MetricConfigError(UnlearnError):
    """An ``eval.metrics`` entry is unknown or has an invalid setting."""


@dataclass
class EvalContext(DecodingSettings):
    """The model under evaluation, its answers to the evaluation prompts and the shared parts;
    the decoding settings (template, lengths, batch, bootstrap) are the keyword-only fields of
    :class:`~unlearn.evaluation.decoding.DecodingSettings`.

    ``judge`` and ``scorer`` are built on first use (a run without a harm metric never trains
    the judge); ``reference`` is the fixed LM of fluency (:class:`~unlearn.evaluation.stage.ReferenceLM`)."""

    model: Any
    tokenizer: Any
    prompts: list[str]
    generations: list                       # unlearn.evaluation.generation.Generation, one per prompt
    normal_pairs: list[tuple[str, str]]     # held-out normal (prompt, answer) pairs (utility)
    reference: Any
    get_judge: Callable[[], Any]
    get_scorer: Callable[[], Any]
    labels: dict[str, Any] = field(default_factory=dict)   # what the metrics said they used
    # held-out (prompt, safe answer, unsafe answer) triples of the forget data (likelihood metrics)
    preference_pairs: list[tuple[str, str, str]] = field(default_factory=list)
    # the original model's per-prompt records at this evaluation's prompts (None: this *is* the
    # original model's evaluation); length-controlled metrics compare against its answers
    baseline: list[dict[str, Any]] | None = None
    # per-prompt values written by the metrics computed so far in this evaluation (name → list)
    per_prompt: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def answers(self) -> list[str]:
        return [g.answer for g in self.generations]

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def judge(self):
        return self.get_judge()

    @property
    def scorer(self):
        return self.get_scorer()


@dataclass
class MetricOutput:
    """``intervals`` → ``<key>``, ``<key>_lo``, ``<key>_hi`` (and ``<key>_n_missing``);
    ``values`` → plain summary values; ``per_prompt`` → fields added to each prompt's line of
    ``generations.jsonl``; ``labels`` → ``eval/labels/…``-style text (full keys, e.g.
    ``eval/judge``); ``files`` → ``<name>.jsonl`` lines for this stage (e.g. ``utility``)."""

    intervals: dict[str, Any] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    per_prompt: dict[str, list[Any]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    files: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class Metric(ABC):
    """Base class: :meth:`compute` returns one :class:`MetricOutput`; ``columns`` declares the
    summary keys the tables show or keep."""

    name: str = "metric"
    columns: tuple[Column, ...] = ()
    # False for a metric that reads only the model (likelihoods), not generated answers: an
    # evaluation whose metrics all say False generates nothing (cheap periodic curves)
    needs_answers: bool = True
    # True for a metric that compares with the original model's answers (``EvalContext.baseline``):
    # ``python -m unlearn.evaluate`` then evaluates the original model first (cached)
    needs_baseline: bool = False

    @abstractmethod
    def compute(self, ctx: EvalContext) -> MetricOutput:
        """Measure ``ctx.model`` / its answers; must leave the model unchanged."""

    def settings(self) -> dict[str, Any]:
        """What the result depends on beyond the config entry (e.g. a data file's hash); {} by default."""
        return {}


def require(condition: bool, metric: str, message: str) -> None:
    """Raise :class:`MetricConfigError` ``"metric <metric>: <message>"`` unless ``condition``."""
    if not condition:
        raise MetricConfigError(f"metric {metric}: {message}")

