"""What a metric declares for the results tables (torch-free: the results module reads it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Column:
    """One summary key a metric writes (``eval/<stage>/<key>``) and how the tables show it.

    ``display``: a column of the markdown/LaTeX table (otherwise CSV only). ``field``: the
    ``generations.jsonl`` field holding its per-prompt values, whose mean is the metric (seeds ×
    prompts intervals and paired comparisons use them). ``examples``: a ``<name>.jsonl`` file of
    the run dir whose per-example ``example_field`` fields (default ``value``) average to the
    metric (``stage`` as in generations.jsonl). ``interval``: summary keys of the metric's own per-run bounds, shown as
    the mean of those bounds (such a column is not compared between methods). ``tradeoff``:
    ``"forgetting"`` (how much was unlearned: a y axis of the trade-off plots) or ``"cost"``
    (what unlearning costs: an x axis); the plots pair every forgetting column with every cost
    column, so a new metric joins them by declaring its role."""

    key: str
    label: str
    better: str = "lower"              # "lower" or "higher"
    digits: int = 3
    display: bool = True
    field: str | None = None
    examples: str | None = None
    interval: tuple[str, str] | None = None
    example_field: str = "value"
    tradeoff: str | None = None        # "forgetting" | "cost" | None

    def __post_init__(self) -> None:
        if self.better not in ("lower", "higher"):
            raise ValueError(f"column {self.key}: better must be 'lower' or 'higher', got {self.better!r}")
        if self.tradeoff not in (None, "forgetting", "cost"):
            raise ValueError(f"column {self.key}: tradeoff must be 'forgetting', 'cost' or None, got {self.tradeoff!r}")

    @property
    def arrow(self) -> str:
        return "↓" if self.better == "lower" else "↑"

    @property
    def latex_arrow(self) -> str:
        return r"$\downarrow$" if self.better == "lower" else r"$\uparrow$"

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Column:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if known.get("interval") is not None:
            known["interval"] = tuple(known["interval"])
        return cls(**known)
