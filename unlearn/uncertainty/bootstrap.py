"""Percentile bootstrap intervals over the rows of one evaluation (prompts or utility examples).

For data x_1..x_n (rows) and a statistic T, B resamples draw n row indices uniformly with
replacement, T*_b = T(x[idx_b]), and the ``level`` interval is the (α/2, 1 − α/2) quantiles of
T*_1..T*_B, α = 1 − level (Efron & Tibshirani 1993, ch. 13). The resample indices depend only on
(n, B, seed), so intervals are deterministic for a seed and two statistics of the same rows get
the same resamples.

Why percentile and not BCa: the metrics here are means and ratios of means over ≥ 100 rows, where
the two agree to within Monte Carlo error; percentile needs no jackknife and keeps every bound
inside the statistic's range (a rate stays in [0, 1]). Its known weakness: when every value is
equal (e.g. no harmful answer at all) the interval has zero width, which understates the
uncertainty of a rate near 0 or 1 — read 0/200 as "below 1.8 %" (the exact Clopper–Pearson
95 % bound), not as exactly 0. Simulated coverage: ``tests/test_uncertainty.py``.

Rows with a NaN value are left out and counted (``Interval.n_missing``), never read as 0.

* :func:`mean_interval` — T = mean(x) (a rate for 0/1 values);
* :func:`ratio_interval` — T = g(Σ num / Σ den), resampling (num, den) pairs together, e.g.
  corpus perplexity exp(Σ NLL / Σ tokens);
* :func:`bootstrap_interval` — any T of the rows of a (n,) or (n, k) array.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

from unlearn.uncertainty.interval import Interval, undefined

CHUNK_ELEMENTS = 4_000_000  # index-matrix elements per chunk (32 MB of int64)


@lru_cache(maxsize=8)
def index_chunks(n: int, n_boot: int, seed: int) -> tuple[np.ndarray, ...]:
    """The bootstrap's row indices, read-only (rows, n) arrays whose rows add up to ``n_boot``
    resamples (cached: every metric over the same n rows reuses them)."""
    rng = np.random.default_rng(seed)
    per_chunk = max(1, CHUNK_ELEMENTS // max(1, n))
    chunks = []
    for start in range(0, n_boot, per_chunk):
        chunk = rng.integers(0, n, size=(min(per_chunk, n_boot - start), n))
        chunk.flags.writeable = False
        chunks.append(chunk)
    return tuple(chunks)


def percentile_bounds(draws: np.ndarray, level: float) -> tuple[float, float]:
    """The (α/2, 1 − α/2) quantiles of the finite draws, α = 1 − level."""
    check_level(level)
    finite = draws[np.isfinite(draws)]
    if finite.size == 0:
        return float("nan"), float("nan")
    alpha = 1.0 - level
    lo, hi = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95; got {level}")


def complete_rows(data: np.ndarray) -> tuple[np.ndarray, int]:
    """The rows without NaN, and how many rows had one."""
    if data.ndim not in (1, 2):
        raise ValueError(f"data must be (n,) or (n, k), got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.floating):
        return data, 0
    keep = ~np.isnan(data) if data.ndim == 1 else ~np.isnan(data).any(axis=1)
    return data[keep], int((~keep).sum())


def bootstrap_interval(data: np.ndarray, statistic: Callable[[np.ndarray], float], n_boot: int = 2000,
                       level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile-bootstrap interval of ``statistic`` over the rows of ``data`` (module docstring)."""
    rows, missing = complete_rows(np.asarray(data))
    n = len(rows)
    if n == 0:
        return undefined("percentile bootstrap: no values", level, missing)
    estimate = float(statistic(rows))
    if n < 2:
        return Interval(estimate, float("nan"), float("nan"), level, "percentile bootstrap: needs ≥ 2 values",
                        n, missing)
    draws = np.fromiter((statistic(rows[idx]) for chunk in index_chunks(n, n_boot, seed) for idx in chunk),
                        dtype=float, count=n_boot)
    lo, hi = percentile_bounds(draws, level)
    return Interval(estimate, lo, hi, level, f"percentile bootstrap over {n} rows, {n_boot} resamples", n, missing)


def resampled_sums(columns: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, k) column sums of the resamples of the rows of the (n, k) array ``columns``
    (the same resamples as :func:`bootstrap_interval` with that seed)."""
    chunks = index_chunks(len(columns), n_boot, seed)
    return np.column_stack([np.concatenate([column[idx].sum(axis=1) for idx in chunks])
                            for column in np.asarray(columns, dtype=float).T])


def mean_interval(values: Sequence[float], n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile-bootstrap interval of the mean; NaN values are left out and counted."""
    x, missing = complete_rows(np.asarray(values, dtype=float).reshape(-1))
    n = len(x)
    if n == 0:
        return undefined("percentile bootstrap: no values", level, missing)
    if n < 2:
        return Interval(float(x[0]), float("nan"), float("nan"), level,
                        "percentile bootstrap: needs ≥ 2 values", n, missing)
    draws = resampled_sums(x[:, None], n_boot, seed)[:, 0] / n
    lo, hi = percentile_bounds(draws, level)
    return Interval(float(x.mean()), lo, hi, level, f"percentile bootstrap over {n} values, {n_boot} resamples",
                    n, missing)


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float],
                   transform: Callable[[np.ndarray], np.ndarray] | None = None, n_boot: int = 2000,
                   level: float = 0.95, seed: int = 0) -> Interval:
    """Interval of g(Σ num / Σ den) (g = ``transform``, default identity; it must be monotone and
    accept arrays), resampling (num, den) pairs; pairs with a NaN are left out and counted."""
    pairs = np.column_stack([np.asarray(numerators, dtype=float).reshape(-1),
                             np.asarray(denominators, dtype=float).reshape(-1)])
    rows, missing = complete_rows(pairs)
    g = transform if transform is not None else (lambda r: r)
    n = len(rows)
    total = rows.sum(axis=0) if n else np.zeros(2)
    if n == 0 or total[1] == 0:
        return undefined("ratio bootstrap: no values (or Σ denominators = 0)", level, missing)
    estimate = float(g(np.asarray(total[0] / total[1])))
    if n < 2:
        return Interval(estimate, float("nan"), float("nan"), level, "ratio bootstrap: needs ≥ 2 values", n, missing)
    sums = resampled_sums(rows, n_boot, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        draws = np.asarray(g(sums[:, 0] / sums[:, 1]), dtype=float)
    lo, hi = percentile_bounds(draws, level)
    return Interval(estimate, lo, hi, level, f"percentile bootstrap of a ratio over {n} pairs, {n_boot} resamples",
                    n, missing)
