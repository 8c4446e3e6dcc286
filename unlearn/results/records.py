"""Per-prompt (and per-utility-example) values of a run, read from its run dir.

``generations.jsonl`` holds one record per answer and evaluation stage (``stage`` is ``before``,
``after``, or a periodic stage); the last contiguous block of a stage is that stage's evaluation
(an earlier block comes from an attempt that was resumed). Per answer:

each metric column that declares a ``field`` (:mod:`unlearn.results.columns`) has its
per-prompt values there and the summary value is their mean over answers (with a value): by
default ``harmful_rate`` ← ``harmful``, ``toxicity``, ``obscene``, ``fluency_ppl`` (None for an
empty answer). A column that declares ``examples`` has per-example values (its ``example_field``,
default ``value``) in ``<examples>.jsonl`` (same ``stage`` blocks), whose mean is the summary value.

Utility: per-example NLLs of the held-out normal answers, when the run wrote them (see
:func:`utility_values`); ``utility_ppl = exp(R)`` with the ratio ``R = Σ nll / Σ n``. Each
example's value is the ratio's linearisation (its influence value),

    v_i = R + (nll_i − R·n_i) · N / Σ_j n_j        (N examples),

whose mean is exactly R and whose spread is the ratio estimator's (delta method): the
variation of the token counts cancels. (Rescaling the NLLs alone, ``nll_i · N / Σ n``, counted
the spread of the answer lengths as uncertainty: in simulation its intervals were ~1.9× too
wide, covering 100 %.) An interval on the mean loss maps to ``utility_ppl`` through ``exp``.

Two runs are comparable per prompt only when they answered the same prompts: :func:`prompt_key`
is a hash of the ordered prompt list.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unlearn.results.collect import Run, as_float, read_metrics

GENERATIONS = "generations.jsonl"
UTILITY = "utility_ppl"
# Where a run may keep its per-utility-example NLLs, first found wins: JSON lines with
# ``nll`` (summed over the answer's tokens) and ``n_tokens`` (or ``loss`` = nll / n_tokens and
# ``n_tokens``), and a ``stage`` like generations.jsonl.
UTILITY_FILES = ("utility.jsonl", "utility_nll.jsonl", "utility_examples.jsonl")


@dataclass(frozen=True)
class StageRecords:
    """One run's evaluation at one stage: the prompts in order and per-prompt values."""

    prompts: tuple[str, ...]
    values: dict[str, np.ndarray]                 # metric -> (n_prompts,), NaN where absent
    examples: dict[str, np.ndarray] = field(default_factory=dict)  # metric -> (n_examples,) per-example values
    utility: np.ndarray | None = None             # (n_examples,) ratio influence values, see module doc
    utility_source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return prompt_key(self.prompts)


def prompt_key(prompts: Sequence[str]) -> str:
    """sha256 of the ordered prompts (12 hex digits): equal keys, same prompt set."""
    return hashlib.sha256("\x00".join(prompts).encode()).hexdigest()[:12]


def last_block(records: Sequence[dict[str, Any]], stage: str) -> list[dict[str, Any]]:
    """The last contiguous run of records whose ``stage`` is ``stage``."""
    block: list[dict[str, Any]] = []
    current: list[dict[str, Any]] = []
    previous = None
    for rec in records:
        if rec.get("stage") == stage:
            if previous != stage:
                current = []
            current.append(rec)
            block = current
        previous = rec.get("stage")
    return block


def utility_values(run_dir: Path, stage: str) -> tuple[np.ndarray | None, str]:
    """Per-example utility values (module doc) and the file they came from; ``(None, reason)``
    when the run kept none."""
    for name in UTILITY_FILES:
        path = Path(run_dir) / name
        if not path.is_file():
            continue
        block = last_block(read_metrics(path), stage)
        nll, tokens = [], []
        for rec in block:
            n = as_float(rec.get("n_tokens"))
            total = as_float(rec.get("nll")) if "nll" in rec else as_float(rec.get("loss")) * n
            nll.append(total)
            tokens.append(n)
        tokens_arr = np.asarray(tokens, dtype=float)
        if not block or not np.isfinite(tokens_arr).all() or tokens_arr.sum() <= 0:
            return None, f"{name} has no usable '{stage}' records (nll, n_tokens)"
        return ratio_influence(np.asarray(nll, dtype=float), tokens_arr), name
    return None, f"no per-example utility file ({' / '.join(UTILITY_FILES)})"


def ratio_influence(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``v_i = R + (a_i − R·b_i) · N / Σ b`` for ``R = Σ a / Σ b``: mean R, and the spread of
    the ratio estimator (module docstring)."""
    ratio = numerator.sum() / denominator.sum()
    return ratio + (numerator - ratio * denominator) * len(numerator) / denominator.sum()


def example_values(run_dir: Path, name: str, stage: str, field_name: str = "value") -> np.ndarray | None:
    """The ``field_name`` fields of ``<name>.jsonl``'s last ``stage`` block (None: no file or block)."""
    path = Path(run_dir) / f"{name}.jsonl"
    block = last_block(read_metrics(path), stage) if path.is_file() else []
    return np.array([as_float(r.get(field_name)) for r in block], dtype=float) if block else None


def stage_records(run: Run, stage: str = "after", fields: dict[str, str] | None = None,
                  examples: dict[str, str | tuple[str, str]] | None = None) -> StageRecords | None:
    """The per-prompt values of ``run`` at ``stage`` (``fields``: metric → generations.jsonl field,
    default: the default metrics' declarations) and per-example values (``examples``: metric →
    file name, or (file name, field)), or None without a generations file/block."""
    if fields is None:
        from unlearn.results.columns import default_columns, per_prompt_fields

        fields = per_prompt_fields(default_columns())
    block = last_block(read_metrics(Path(run.path) / GENERATIONS), stage)
    if not block:
        return None
    values = {metric: np.array([as_float(r.get(field_name)) for r in block], dtype=float)
              for metric, field_name in fields.items()}
    sources = {metric: (source, "value") if isinstance(source, str) else tuple(source)
               for metric, source in (examples or {}).items()}
    per_example = {metric: v for metric, (name, field_name) in sources.items()
                   if (v := example_values(run.path, name, stage, field_name)) is not None}
    utility, source = utility_values(run.path, stage)
    return StageRecords(tuple(str(r.get("prompt", "")) for r in block), values, per_example, utility, source)


def majority_key(records: dict[Any, StageRecords | None]) -> str | None:
    """The prompt key shared by most runs (ties: the longer prompt list, then the key)."""
    counts: dict[str, tuple[int, int]] = {}
    for rec in records.values():
        if rec is not None:
            n, size = counts.get(rec.key, (0, len(rec.prompts)))
            counts[rec.key] = (n + 1, size)
    if not counts:
        return None
    return max(counts, key=lambda k: (*counts[k], k))


__all__ = ["GENERATIONS", "UTILITY", "example_values", "ratio_influence", "UTILITY_FILES", "StageRecords",
           "last_block", "majority_key", "prompt_key", "stage_records", "utility_values"]
