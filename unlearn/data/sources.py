"""The training data an objective can name (``objectives.list[i].data``).

=============  ==========================================================  ==================
source         examples                                                    batch size
=============  ==========================================================  ==================
``forget``     (harmful prompt, unsafe answer) pairs of the forget train   forget_batch_size
``normal``     (benign prompt, answer) pairs of the normal train split     normal_batch_size
``mismatch``   each forget pair's harmful prompt with a normal answer      forget_batch_size
               drawn at random (seeded): Yao et al. 2023's L_rdn data
``safe``       (harmful prompt, *safe* answer) pairs of the forget train   forget_batch_size
               split: what the model should say instead, so an objective
               can tell a safe answer to a harmful prompt from an unsafe one
=============  ==========================================================  ==================

Each source is its own seeded, resumable :class:`~unlearn.data.stream.BatchStream`; only the
sources some objective names are built. A new source is one entry of :data:`SOURCES`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from unlearn.data.pku_saferlhf import forget_examples
from unlearn.data.types import Example
from unlearn.errors import DataError


def mismatch_examples(forget: Sequence[Example], normal: Sequence[Example], seed: int) -> list[Example]:
    """``(x_harmful, y_normal)`` for each forget example, ``y_normal`` uniform over ``normal``."""
    if not normal:
        raise DataError("the mismatch source needs normal answers; the normal train split is empty")
    rng = random.Random(seed)
    return [Example(e.prompt, normal[rng.randrange(len(normal))].response, harmful=False) for e in forget]


@dataclass(frozen=True)
class Source:
    """How to get a source's training examples, its batch-size key under ``trainer`` and the
    offset added to the run's seed for its stream (distinct streams draw distinct orders)."""

    examples: Callable[[object, object, int], list[Example]]   # (forget_split, normal_split, seed)
    batch_size_key: str
    seed_offset: int


def safe_examples(examples: Sequence[Example]) -> list[Example]:
    """The safe answers among labelled forget-data examples (the train split's, for training)."""
    out = [e for e in examples if not e.harmful]
    if not out:
        raise DataError("the safe source needs safe answers to the harmful prompts; the forget data's train "
                        "split has none (PKU-SafeRLHF rows carry one safe and one unsafe answer)")
    return out


SOURCES: dict[str, Source] = {
    "forget": Source(lambda f, n, s: forget_examples(f.train), "forget_batch_size", 0),
    "normal": Source(lambda f, n, s: list(n.train), "normal_batch_size", 1),
    "mismatch": Source(lambda f, n, s: mismatch_examples(forget_examples(f.train), n.train, s + 2),
                       "forget_batch_size", 2),
    "safe": Source(lambda f, n, s: safe_examples(f.train), "forget_batch_size", 3),
}


def source(name: str) -> Source:
    """The source called ``name``; an unknown one names the known ones."""
    if name not in SOURCES:
        raise DataError(f"unknown objective data source {name!r}; choose from {sorted(SOURCES)} "
                        "(unlearn/data/sources.py)")
    return SOURCES[name]
