"""An endless, seeded, resumable stream of padded batches over a list of examples."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from unlearn.data.formatting import collate, encode_example
from unlearn.data.types import Example
from unlearn.errors import DataError


@dataclass
class StreamState:
    epoch: int = 0
    position: int = 0


class BatchStream:
    """Batches of ``batch_size`` examples; each epoch is a fresh permutation from ``seed + epoch``.

    ``state`` (epoch, position) is all that is needed to resume exactly where it stopped.

    Data parallel (``num_shards`` = R ranks, like ``DistributedSampler`` with ``drop_last``):
    every rank draws the same permutation π of all N examples and keeps
    ``π[rank : ⌊N/R⌋·R : R]``, so within an epoch the ranks see disjoint examples, all shards
    have ⌊N/R⌋ of them (the ≤ R-1 left over change with the epoch) and (epoch, position) are
    the same on every rank.
    """

    def __init__(
        self,
        examples: Sequence[Example],
        tokenizer,
        batch_size: int,
        max_length: int,
        template: str = "auto",
        seed: int = 0,
        rank: int = 0,
        num_shards: int = 1,
    ) -> None:
        if not examples:
            raise DataError("cannot build batches from an empty data split")
        if not 0 <= rank < num_shards:
            raise ValueError(f"need 0 ≤ rank < num_shards, got {rank=}, {num_shards=}")
        if len(examples) < num_shards:
            raise DataError(f"{len(examples)} examples cannot be split over {num_shards} ranks")
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        self.examples = list(examples)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.template = template
        self.seed = seed
        self.rank = rank
        self.num_shards = num_shards
        self.state = StreamState()
        self._order = self._permutation(0)
        self._pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(len(self.examples)))
        random.Random(self.seed + epoch).shuffle(order)
        return order[self.rank:len(order) // self.num_shards * self.num_shards:self.num_shards]

    def load_state(self, state: StreamState) -> None:
        self.state = StreamState(state.epoch, state.position)
        self._order = self._permutation(state.epoch)

    def next_batch(self) -> dict[str, torch.Tensor]:
        picked = []
        while len(picked) < self.batch_size:
            if self.state.position >= len(self._order):
                self.state = StreamState(self.state.epoch + 1, 0)
                self._order = self._permutation(self.state.epoch)
            picked.append(self.examples[self._order[self.state.position]])
            self.state.position += 1
        encoded = [
            encode_example(self.tokenizer, e.prompt, e.response, self.max_length, self.template)
            for e in picked
        ]
        return collate(encoded, self._pad)
