"""95 % intervals for a judge's agreement with labels.

* :func:`wilson_interval`: for a share k/n of independent rows,
  (p̂ + z²/2n ± z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n), z = 1.96.
* :func:`cluster_bootstrap`: percentile intervals of accuracy, sensitivity, specificity and AUROC
  when rows cluster (two answers to one PKU prompt, several answers to one PyRIT objective):
  each replicate draws the clusters with replacement (multinomial counts c_g over the G
  clusters), gives every row the weight of its cluster and recomputes the weighted metrics.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np

Z95 = 1.959963984540054
METRICS = ("accuracy", "sensitivity", "specificity", "auroc")


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of k/n (None when n = 0)."""
    if n <= 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def weighted_auroc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of each row of ``weights`` (B, n): Σ_{i∈P, j∈N} w_i w_j (1[s_i > s_j] + ½·1[s_i = s_j])
    / (Σ_P w · Σ_N w); NaN where a class has no weight."""
    from scipy.sparse import csr_matrix

    levels, inverse = np.unique(scores, return_inverse=True)
    onehot = csr_matrix((np.ones(len(scores)), (np.arange(len(scores)), inverse)), shape=(len(scores), len(levels)))
    pos = np.asarray((weights * labels) @ onehot)           # (B, levels) positive weight per score level
    neg = np.asarray((weights * ~labels) @ onehot)
    below = np.cumsum(neg, axis=1) - neg                    # negative weight strictly below each level
    num = (pos * (below + 0.5 * neg)).sum(1)
    den = pos.sum(1) * neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def cluster_bootstrap(labels: Sequence[bool], flags: Sequence[bool], scores: Sequence[float],
                      groups: Sequence[Hashable] | None = None, n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95) -> dict[str, tuple[float, float] | None]:
    """Percentile bootstrap intervals of :data:`METRICS`, resampling ``groups`` (each row its
    own group when None). A metric whose class is absent gets None."""
    y = np.asarray(labels, dtype=bool)
    f = np.asarray(flags, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n = len(y)
    if n == 0:
        return {m: None for m in METRICS}
    keys = list(range(n)) if groups is None else list(groups)
    index: dict[Hashable, int] = {}
    g = np.array([index.setdefault(k, len(index)) for k in keys])
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(index), np.full(len(index), 1.0 / len(index)), size=n_boot)
    w = counts[:, g].astype(np.float64)                     # (n_boot, n) row weights
    with np.errstate(invalid="ignore", divide="ignore"):
        stats = {
            "accuracy": (w @ (f == y)) / w.sum(1),
            "sensitivity": (w @ (f & y)) / (w @ y) if y.any() else None,
            "specificity": (w @ (~f & ~y)) / (w @ ~y) if (~y).any() else None,
        }
    stats["auroc"] = weighted_auroc(y, s, w) if y.any() and (~y).any() else None
    tail = 100 * (1 - level) / 2
    out: dict[str, tuple[float, float] | None] = {}
    for m in METRICS:
        v = stats[m]
        out[m] = None if v is None or np.isnan(v).all() else (float(np.nanpercentile(v, tail)),
                                                               float(np.nanpercentile(v, 100 - tail)))
    return out
