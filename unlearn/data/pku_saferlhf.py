"""PKU-SafeRLHF as labelled responses: each row gives two responses with safety labels.

The forget set is the unsafe responses of the train split; the safe ones stay available
(e.g. to train a harmfulness judge on the train split only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from unlearn.data.records import local_file, read_jsonl, require_bool, require_text, rows_from
from unlearn.data.split import Split, split_by_prompt
from unlearn.data.types import Example
from unlearn.errors import DataError

LOCAL_FILE = "pku-saferlhf-v0-test-pairs/pku_schema.jsonl"


def parse_pku_row(row: Mapping, where: str) -> list[Example]:
    """Two labelled examples from one row in the PKU-SafeRLHF schema."""
    prompt = require_text(row, "prompt", where)
    return [
        Example(
            prompt=prompt,
            response=require_text(row, f"response_{k}", where),
            harmful=not require_bool(row, f"is_response_{k}_safe", where),
        )
        for k in (0, 1)
    ]


def parse_pku_rows(rows: Iterable[tuple[str, Mapping]]) -> list[Example]:
    examples: list[Example] = []
    for where, row in rows:
        examples.extend(parse_pku_row(row, where))
    return examples


def load_pku_saferlhf(
    data_dir: str | None = None,
    hub_id: str = "PKU-Alignment/PKU-SafeRLHF",
    hub_split: str = "train",
    local_path: str = LOCAL_FILE,
    eval_fraction: float = 0.25,
    split_seed: int = 0,
    hub_revision: str | None = None,
) -> Split[Example]:
    """Labelled responses split by prompt. Local copy when ``data_dir`` is set, else the hub.

    The two differ (docs/data.md): the local copy (``python -m unlearn.data``) holds the v0
    **test** split's pairs with one safe and one unsafe response; the hub path reads ``hub_split``
    (``train`` by default) of release ``hub_revision`` (None: the revision pinned in
    :mod:`unlearn.data.layout` for this ``hub_id``, ``v0``), every row."""
    if data_dir:
        path = local_file(data_dir, local_path, "PKU-SafeRLHF")
        examples = parse_pku_rows((f"{path}:{n}", row) for n, row in read_jsonl(path))
        source = str(path)
    else:
        from unlearn.data.layout import pinned_revision
        from unlearn.hub import load_hub_dataset

        revision = hub_revision or pinned_revision(hub_id)
        source = f"{hub_id}@{revision}" if revision else hub_id
        examples = parse_pku_rows(rows_from(load_hub_dataset(hub_id, hub_split, revision=revision), source))
    if not any(e.harmful for e in examples):
        raise DataError(
            f"{source}: no unsafe responses (every is_response_*_safe is true), so the forget set "
            "would be empty; point data_dir (or hub_id) at data with unsafe responses labelled false"
        )
    return split_by_prompt(examples, eval_fraction, split_seed)


def forget_examples(examples: Iterable[Example]) -> list[Example]:
    """The unsafe responses: what unlearning should remove."""
    out = [e for e in examples if e.harmful]
    if not out:
        raise DataError(
            "the forget training split has no unsafe responses (they all fell in the eval split); "
            "add unsafe rows or lower dataset.forget.eval_fraction"
        )
    return out
