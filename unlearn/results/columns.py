"""The columns of a results table: what the runs' metrics declared (``eval/columns`` in each
``summary.json``, :mod:`unlearn.evaluation.metrics`), in order of first appearance; runs from
before the declarations get the default metrics' (the classes of conf/eval/default.yaml's
``metrics``, read without building them). Torch-free."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import replace

from unlearn.evaluation.metrics.columns import Column
from unlearn.results.collect import Run


def default_columns() -> tuple[Column, ...]:
    """The columns declared by the default metrics' classes (the ``columns`` class attribute)."""
    from unlearn.evaluation.metrics import default_metric_names, metric_configs

    out: list[Column] = []
    for config in metric_configs(default_metric_names()):
        module, _, name = config["_target_"].rpartition(".")
        out.extend(getattr(importlib.import_module(module), name).columns)
    return tuple(out)


def columns_of(runs: Sequence[Run]) -> tuple[Column, ...]:
    """Every column declared by ``runs`` (first declaration of a key wins), or the defaults."""
    seen: dict[str, Column] = {}
    for run in runs:
        for data in run.summary.get("eval/columns") or ():
            if isinstance(data, dict) and data.get("key") not in seen:
                seen[data["key"]] = Column.from_dict(data)
    return tuple(seen.values()) or default_columns()


def with_tradeoff_roles(columns: Sequence[Column]) -> tuple[Column, ...]:
    """``columns``, with the default metrics' trade-off roles (``Column.tradeoff``) filled in when
    none declares one (runs from before the roles were declared)."""
    if any(c.tradeoff for c in columns):
        return tuple(columns)
    roles = {c.key: c.tradeoff for c in default_columns() if c.tradeoff}
    return tuple(replace(c, tradeoff=roles.get(c.key)) for c in columns)


def displayed(columns: Sequence[Column]) -> tuple[Column, ...]:
    return tuple(c for c in columns if c.display)


def per_prompt_fields(columns: Sequence[Column]) -> dict[str, str]:
    """metric key → the generations.jsonl field with its per-prompt values."""
    return {c.key: c.field for c in columns if c.field}


def example_files(columns: Sequence[Column]) -> dict[str, tuple[str, str]]:
    """metric key → (the ``<name>.jsonl`` file, the field of its per-example values)."""
    return {c.key: (c.examples, c.example_field) for c in columns if c.examples}


__all__ = ["Column", "columns_of", "default_columns", "displayed", "example_files", "per_prompt_fields",
           "with_tradeoff_roles"]
