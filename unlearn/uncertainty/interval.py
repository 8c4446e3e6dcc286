"""A point estimate with its interval: the one result type of :mod:`unlearn.uncertainty`."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    """``estimate`` with the ``level`` interval [``lo``, ``hi``] built by ``method``.

    ``n`` counts the values used and ``n_missing`` the NaN values left out (never read as 0);
    ``df`` is the degrees of freedom of a t interval (NaN for a bootstrap one).
    """

    estimate: float
    lo: float
    hi: float
    level: float = 0.95
    method: str = ""
    n: int = 0
    n_missing: int = 0
    df: float = math.nan

    def contains(self, x: float) -> bool:
        """lo ≤ x ≤ hi (False when the interval is NaN)."""
        return bool(self.lo <= x <= self.hi)

    def excludes_zero(self) -> bool:
        """The interval lies wholly above or below 0: the difference is resolved at ``level``."""
        return bool(self.lo > 0 or self.hi < 0)

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def to_dict(self, prefix: str) -> dict[str, float]:
        """``{prefix: estimate, prefix_lo: lo, prefix_hi: hi}`` (the summary.json keys)."""
        return {prefix: self.estimate, f"{prefix}_lo": self.lo, f"{prefix}_hi": self.hi}


def undefined(method: str, level: float = 0.95, n_missing: int = 0) -> Interval:
    """The interval of no data: every number NaN, ``method`` saying why."""
    return Interval(math.nan, math.nan, math.nan, level, method, 0, n_missing)
