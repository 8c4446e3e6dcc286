"""95 % intervals of a method's metrics, and the per-prompt matrices they come from.

For a method with S completed seeds that all kept per-prompt records of the same prompts, a
metric's matrix is ``X[s, j]`` = the value of prompt j in seed s (NaN: missing, e.g. the
fluency of an empty answer), and its interval is
:func:`unlearn.uncertainty.seed_prompt_interval` (variance components of seeds and prompts with
a Satterthwaite t quantile, so it carries both the seed-to-seed and the prompt sampling error;
with one seed, a bootstrap over prompts). Otherwise (no records, e.g. runs from before
per-prompt logging, or a corpus-level metric such as distinct-2) the interval is a
t-interval over the S per-seed values, ``mean ± t_{S−1, 0.975} · sd / √S`` (none for S = 1).

How each interval was made starts with one of :data:`HOW`; the tables mark the t-intervals.

Both are symmetric (mean ± t·se) and, with 3 seeds (t_{2, 0.975} = 4.30), can reach past the
values the metric can take (a negative perplexity). They are clipped to that range: the mean of
per-prompt values lies within [min, max] of the values (for a 0/1 rate, [0, 1]), and every metric
here is ≥ 0. Clipping only removes impossible values; it never narrows the possible part.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from unlearn.results.collect import Run
from unlearn.results.records import UTILITY, StageRecords
from unlearn.uncertainty import Interval, seed_prompt_interval
from unlearn.uncertainty.student_t import t_quantile

LEVEL = 0.95
SEEDS_PROMPTS, T_SEEDS, RUN_BOUNDS = "seeds×prompts", "t over seeds", "mean of per-run bounds"
HOW = (SEEDS_PROMPTS, T_SEEDS, RUN_BOUNDS)


@dataclass(frozen=True)
class Bootstrap:
    """Settings of every interval of one results build (``n_boot``, ``seed``: the resamples of
    the one-seed bootstraps over prompts)."""

    n_boot: int = 2000
    seed: int = 0
    level: float = LEVEL


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval | None:
    """``mean ± t_{n−1, (1+level)/2} · sd / √n`` over the finite values; None for fewer than 2."""
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    n = finite.size
    if n < 2:
        return None
    mean, sd = float(finite.mean()), float(finite.std(ddof=1))
    half = t_quantile((1 + level) / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, level, T_SEEDS, n, len(values) - n, float(n - 1))


def metric_matrix(records: Sequence[StageRecords | None], metric: str) -> np.ndarray | None:
    """The (seeds × prompts) matrix of a per-prompt metric (for ``utility_ppl``: seeds ×
    utility examples of rescaled NLLs), or None when a seed lacks it or the columns differ."""
    if not records or any(r is None for r in records):
        return None
    if metric == UTILITY:
        rows = [r.utility for r in records]
    elif all(metric in r.values for r in records):
        if len({r.key for r in records}) != 1:
            return None
        rows = [r.values[metric] for r in records]
    elif all(metric in r.examples for r in records):  # the same examples in every run (one config)
        rows = [r.examples[metric] for r in records]
    else:
        return None
    if any(row is None for row in rows) or len({len(row) for row in rows}) != 1 or not len(rows[0]):
        return None
    return np.vstack(rows)


def clipped(interval: Interval, low: float, high: float) -> Interval:
    """The interval with its bounds moved into [low, high] (the values the metric can take)."""
    return Interval(interval.estimate, min(max(interval.lo, low), high), max(min(interval.hi, high), low),
                    interval.level, interval.method, interval.n, interval.n_missing, interval.df)


def matrix_interval(matrix: np.ndarray, metric: str, settings: Bootstrap) -> Interval:
    """:func:`seed_prompt_interval` of the matrix (NaN cells missing), clipped to [min, max] of
    its cells; for utility, the interval of the mean loss mapped through ``exp`` (a PPL)."""
    interval = seed_prompt_interval(matrix, n_boot=settings.n_boot, level=settings.level, seed=settings.seed)
    interval = clipped(interval, float(np.nanmin(matrix)), float(np.nanmax(matrix)))
    if metric == UTILITY:
        interval = Interval(math.exp(interval.estimate), math.exp(interval.lo), math.exp(interval.hi),
                            interval.level, interval.method, interval.n, interval.n_missing, interval.df)
    return interval


def agrees_with_summary(matrix: np.ndarray, runs: Sequence[Run], metric: str, stage: str) -> bool:
    """Each seed's records reproduce its summary value (relative tolerance 1e-6); records from
    another evaluation than the summary's would otherwise give an interval around another mean."""
    with np.errstate(invalid="ignore"):
        per_seed = np.nanmean(matrix, axis=1)
    if metric == UTILITY:
        per_seed = np.exp(per_seed)
    summary = np.array([r.eval_value(stage, metric) for r in runs], dtype=float)
    return bool(np.allclose(per_seed, summary, rtol=1e-6, atol=1e-9, equal_nan=True))


def metric_interval(runs: Sequence[Run], records: Sequence[StageRecords | None], metric: str,
                    settings: Bootstrap, stage: str = "after") -> tuple[Interval | None, str]:
    """A method's interval of ``metric`` and how it was made (one of :data:`HOW`, "" for none).
    Records that do not reproduce the summary values are not used (t over seeds instead)."""
    matrix = metric_matrix(records, metric)
    usable = matrix is not None and bool(np.isfinite(matrix).any())
    if usable and agrees_with_summary(matrix, runs, metric, stage):
        return matrix_interval(matrix, metric, settings), SEEDS_PROMPTS
    interval = t_interval([r.eval_value(stage, metric) for r in runs], settings.level)
    if interval is None:
        return None, ""
    interval = clipped(interval, 0.0, math.inf)  # every metric of the tables is ≥ 0
    return interval, T_SEEDS + (" (per-prompt records do not reproduce the summary values)" if usable else "")


__all__ = ["HOW", "LEVEL", "RUN_BOUNDS", "SEEDS_PROMPTS", "T_SEEDS", "Bootstrap", "agrees_with_summary", "clipped",
           "matrix_interval", "metric_interval", "metric_matrix", "t_interval"]
