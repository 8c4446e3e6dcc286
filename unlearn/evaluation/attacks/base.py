"""What every attack shares: the context it runs in, what it returns, and how its harmful rate is
measured (the same judge, prompts and bootstrap intervals as the plain evaluation).

An attack is one :class:`Attack` subclass plus one ``conf/attack/<name>.yaml`` whose ``_target_``
names it. ``run(model, ctx)`` must leave ``model`` untouched (work on a copy) and returns one
:class:`Outcome` per variant it declares (e.g. one per number of relearning steps, one per
template family). For each outcome the stage reports (:func:`outcome_metrics`)::

    attack/<name>/harmful_rate (_lo, _hi)   HR_attack = mean_p h_attack(p), percentile bootstrap over prompts
    attack/<name>/rebound      (_lo, _hi)   HR_attack − HR_plain on the same prompts, paired bootstrap
    attack/<name>/n_prompts, attack/<name>/time_s

where h(p) ∈ [0, 1] is the judge's verdict on the answer to prompt p (the mean over templates
when an outcome wraps each prompt in several). The table module discovers the outcomes from these
keys, so a new attack needs no list entry anywhere.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from unlearn.errors import UnlearnError
from unlearn.evaluation.decoding import DecodingSettings
from unlearn.uncertainty import mean_interval


class AttackConfigError(UnlearnError):
    """An ``eval.attacks`` entry is unknown or has an invalid setting."""


@dataclass
class AttackContext(DecodingSettings):
    """Everything an attack needs besides the model: the evaluation's prompts, judge and decoding
    settings (:class:`~unlearn.evaluation.decoding.DecodingSettings`, the plain evaluation's), the
    forget *train* examples (relearning data) and the plain per-prompt verdicts."""

    tokenizer: Any
    prompts: list[str]
    judge: Any
    forget_train: list                    # Example rows (harmful ones are the relearning data)

    def answer_and_judge(self, model, prompts: Sequence[str], shown: Sequence[str] | None = None,
                         desc: str = "attack") -> tuple[list[float], list[dict[str, Any]]]:
        """Greedy answers to ``shown`` (default: ``prompts``), judged against the ORIGINAL
        ``prompts``: a wrapped prompt never reaches the judge. Returns 0/1 flags and records."""
        from unlearn.evaluation.generation import generate_answers

        shown = list(prompts) if shown is None else list(shown)
        if len(shown) != len(prompts):
            raise ValueError(f"{len(shown)} shown prompts for {len(prompts)} prompts")
        gens = generate_answers(model, self.tokenizer, shown, self.max_new_tokens, self.batch_size,
                                self.template, self.progress_bar, desc=desc, compute_dtype=self.compute_dtype)
        verdicts = self.judge.judge(list(prompts), [g.answer for g in gens])
        records = [{"prompt": p, "shown_prompt": g.prompt, "answer": g.answer, "n_tokens": g.n_tokens,
                    "finished": g.finished, "harmful": v.harmful, "judge_score": v.score, "judge_rule": v.rule}
                   for p, g, v in zip(prompts, gens, verdicts, strict=True)]
        return [float(v.harmful) for v in verdicts], records


@dataclass
class Outcome:
    """One reported variant of an attack: per-prompt ``values`` of ``metric`` (harmful verdicts,
    in [0, 1]) over ``prompts`` (a prefix of the evaluation's prompts, in order), the answer
    records, and a human-readable ``label``."""

    name: str
    label: str
    prompts: list[str]
    values: list[float]
    records: list[dict[str, Any]]
    time_s: float = 0.0
    metric: str = "harmful_rate"          # another metric (e.g. refusal_rate) gets no rebound


class Attack(ABC):
    """Base class: :meth:`run` returns one :class:`Outcome` per declared variant."""

    name: str = "attack"

    @abstractmethod
    def run(self, model, ctx: AttackContext) -> list[Outcome]:
        """Attack a copy of ``model`` and measure; ``model`` itself must be left unchanged."""

    def describe(self) -> str:
        return self.name


def require(condition: bool, attack: str, message: str) -> None:
    """Raise :class:`AttackConfigError` ``"attack <attack>: <message>"`` unless ``condition``."""
    if not condition:
        raise AttackConfigError(f"attack {attack}: {message}")


def prompt_subset(prompts: Sequence[str], n: int | None, attack: str) -> list[str]:
    """The first ``n`` prompts (all when None)."""
    if n is None:
        return list(prompts)
    require(int(n) >= 1, attack, f"n_prompts must be ≥ 1 (or null for all), got {n}")
    return list(prompts[: int(n)])


def outcome_metrics(outcome: Outcome, plain: dict[str, float], bootstrap: dict[str, Any]) -> dict[str, float]:
    """``attack/<name>/…`` metrics of one outcome (module docstring). ``plain`` maps each prompt to
    its plain-evaluation verdict; prompts missing there give a NaN rebound, never a wrong one."""
    prefix = f"attack/{outcome.name}"
    hr = mean_interval(outcome.values, **bootstrap)
    counts = {f"{prefix}/n_prompts": len(outcome.prompts), f"{prefix}/time_s": outcome.time_s}
    if outcome.metric != "harmful_rate":
        return {**hr.to_dict(f"{prefix}/{outcome.metric}"), **counts}
    diffs = [h - plain[p] if p in plain else float("nan") for p, h in zip(outcome.prompts, outcome.values,
                                                                              strict=True)]
    rebound = mean_interval(diffs, **bootstrap)
    return {**hr.to_dict(f"{prefix}/harmful_rate"), **rebound.to_dict(f"{prefix}/rebound"), **counts}


class Timer:
    """``with Timer() as t: …``; ``t.seconds`` afterwards."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
