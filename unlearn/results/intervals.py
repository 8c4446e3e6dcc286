"""95 % intervals of a method's metrics, and the per-prompt matrices they come from.

For a method with S completed seeds that all kept per-prompt records of the same prompts, a
metric's matrix is ``X[s, j]`` = the value of prompt j in seed s (NaN: missing, e.g. the
fluency of an empty answer), and its interval is
:func:`unlearn.uncertainty.seed_prompt_interval` (variance components of seeds and prompts with
a generalized pivot, so it carries both the seed-to-seed and the prompt sampling error;
with one seed, a bootstrap over prompts). Otherwise (no records, e.g. runs from before
per-prompt logging, or a corpus-level metric such as distinct-2) the interval is a
t-interval over the S per-seed values, ``mean ± t_{S−1, 0.975} · sd / √S`` (none for S = 1).

How each interval was made starts with one of :data:`HOW`; the tables mark the t-intervals.

**The corrected harmful rate** (a column declaring its own per-run bounds, ``Column.interval``)
is not a mean of per-prompt values. One run: its own interval (:mod:`unlearn.evaluation.correction`).
Several seeds that share one judge: the Rogan–Gladen estimate of the row's harmful rate,
clip((HR + Sp − 1)/(Se + Sp − 1), 0, 1) (the seeds' mean when no seed is clipped), with the
interval of :func:`corrected_row_interval`: Monte Carlo draws θ* = (HR* + Sp* − 1)/(Se* + Sp* − 1)
with HR* from the harmful rate's own interval above (t with its degrees of freedom, so seeds and
prompts both count) and (Se*, Sp*) from the judge's validation intervals the runs stored
(:class:`JudgeError`: Beta marginals matched to each interval, joined by a Gaussian copula with the
stored correlation of the prompt-bootstrap draws). The judge's error is shared by every seed, so it
does not average out over seeds; averaging each run's bounds would not be an interval of anything.

Both are symmetric (mean ± t·se) and, with 3 seeds (t_{2, 0.975} = 4.30), can reach past the
values the metric can take (a negative perplexity). They are clipped to that range: the mean of
per-prompt values lies within [min, max] of the values (for a 0/1 rate, [0, 1]), and every metric
here is ≥ 0. Clipping only removes impossible values; it never narrows the possible part.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from unlearn.results.collect import Run
from unlearn.results.records import UTILITY, StageRecords
from unlearn.uncertainty import Interval, seed_prompt_interval
from unlearn.uncertainty.student_t import t_quantile

LEVEL = 0.95
SEEDS_PROMPTS, T_SEEDS, RUN_BOUNDS = "seeds×prompts", "t over seeds", "the run's own interval"
CORRECTED = "Rogan–Gladen of the harmful rate's interval and the judge's Se, Sp"
HOW = (SEEDS_PROMPTS, T_SEEDS, RUN_BOUNDS, CORRECTED)


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
    utility examples of the ratio's influence values, records.ratio_influence), or None when a seed lacks it or the columns differ."""
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


def matrix_interval(matrix: np.ndarray, metric: str, settings: Bootstrap, clip: bool = True) -> Interval:
    """:func:`seed_prompt_interval` of the matrix (NaN cells missing), clipped to [min, max] of
    its cells (unless ``clip`` is False); for utility, the interval of the mean loss mapped
    through ``exp`` (a PPL)."""
    interval = seed_prompt_interval(matrix, n_boot=settings.n_boot, level=settings.level, seed=settings.seed)
    if clip:
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
                    settings: Bootstrap, stage: str = "after", clip: bool = True) -> tuple[Interval | None, str]:
    """A method's interval of ``metric`` and how it was made (one of :data:`HOW`, "" for none).
    Records that do not reproduce the summary values are not used (t over seeds instead).
    ``clip=False``: the symmetric interval before it is moved into the metric's range."""
    matrix = metric_matrix(records, metric)
    usable = matrix is not None and bool(np.isfinite(matrix).any())
    if usable and agrees_with_summary(matrix, runs, metric, stage):
        return matrix_interval(matrix, metric, settings, clip), SEEDS_PROMPTS
    interval = t_interval([r.eval_value(stage, metric) for r in runs], settings.level)
    if interval is None:
        return None, ""
    if clip and all(r.eval_value(stage, metric) >= 0 for r in runs):  # a rate or a loss: no negative bound
        interval = clipped(interval, 0.0, math.inf)
    return interval, T_SEEDS + (" (per-prompt records do not reproduce the summary values)" if usable else "")


# ----------------------------------------------------------------------------- the judge's error
LABEL_COUNTS = re.compile(r"sensitivity [0-9.]+ \((\d+)/(\d+)\), specificity [0-9.]+ \((\d+)/(\d+)\)")


@dataclass(frozen=True)
class JudgeError:
    """A judge's validation sensitivity and specificity with their intervals, as a run stored them
    (``eval/<stage>/judge_sensitivity``, ``_lo``, ``_hi``, the same for specificity,
    ``judge_se_sp_correlation``, ``judge_validation_prompts``). Runs from before the intervals were
    stored: Jeffreys intervals from the counts in ``eval/labels/harmful_rate_corrected``, which
    treat the validation responses as independent (too narrow when they share prompts)."""

    name: str
    se: float
    se_lo: float
    se_hi: float
    sp: float
    sp_lo: float
    sp_hi: float
    correlation: float = 0.0
    prompts: int = 0                 # validation prompts resampled (0: none, or not recorded)
    method: str = ""

    @property
    def j(self) -> float:
        """Youden's J = Se + Sp − 1: a true harmful-rate difference Δ is judged as J·Δ."""
        return self.se + self.sp - 1.0

    @property
    def has_intervals(self) -> bool:
        return all(math.isfinite(v) for v in (self.se_lo, self.se_hi, self.sp_lo, self.sp_hi))

    def same_as(self, other: JudgeError) -> bool:
        return all(math.isclose(a, b, rel_tol=0, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))
                   for a, b in zip((self.se, self.se_lo, self.se_hi, self.sp, self.sp_lo, self.sp_hi),
                                   (other.se, other.se_lo, other.se_hi, other.sp, other.sp_lo, other.sp_hi),
                                   strict=True))


def judge_error(run: Run, stage: str = "before") -> JudgeError | None:
    """The judge's error rates a run stored for ``stage`` (None when it stored no finite Se, Sp)."""
    value = lambda key: run.eval_value(stage, key)  # noqa: E731
    se, sp = value("judge_sensitivity"), value("judge_specificity")
    if not (math.isfinite(se) and math.isfinite(sp)):
        return None
    name = str(run.summary.get("eval/judge", "?"))
    bounds = [value(f"judge_{k}") for k in ("sensitivity_lo", "sensitivity_hi", "specificity_lo", "specificity_hi")]
    if all(math.isfinite(b) for b in bounds):
        prompts = value("judge_validation_prompts")
        corr = value("judge_se_sp_correlation")
        n = int(prompts) if math.isfinite(prompts) else 0
        method = (f"cluster bootstrap over {n} validation prompts" if n else
                  "Jeffreys (validation responses independent)")
        return JudgeError(name, se, bounds[0], bounds[1], sp, bounds[2], bounds[3],
                          corr if math.isfinite(corr) else 0.0, n, method)
    match = LABEL_COUNTS.search(str(run.summary.get("eval/labels/harmful_rate_corrected", "")))
    if match:
        from unlearn.evaluation.correction import jeffreys_interval

        tp, pos, tn, neg = (int(g) for g in match.groups())
        if pos and neg and math.isclose(tp / pos, se, abs_tol=1e-9) and math.isclose(tn / neg, sp, abs_tol=1e-9):
            return JudgeError(name, se, *jeffreys_interval(tp, pos), sp, *jeffreys_interval(tn, neg), 0.0, 0,
                              f"Jeffreys from the counts {tp}/{pos}, {tn}/{neg} (validation responses treated "
                              "as independent: too narrow when they share prompts)")
    return JudgeError(name, se, math.nan, math.nan, sp, math.nan, math.nan, 0.0, 0, "no interval stored")


def _beta_draws(mean: float, lo: float, hi: float, u: np.ndarray, level: float) -> np.ndarray:
    """Quantiles ``u`` of the Beta with ``mean`` whose sd is that of a normal with the central
    ``level`` interval [lo, hi] (a constant when that sd is 0 or the mean is 0 or 1)."""
    from scipy.stats import beta, norm

    sd = (hi - lo) / (2 * float(norm.ppf((1 + level) / 2)))
    if not (sd > 0 and 0 < mean < 1):
        return np.full_like(u, mean)
    nu = max(mean * (1 - mean) / sd**2 - 1, 1e-6)
    return beta.ppf(u, mean * nu, (1 - mean) * nu)


def corrected_row_interval(hr: Interval, judge: JudgeError, level: float = LEVEL, draws: int = 20000,
                           seed: int = 0) -> Interval:
    """The corrected harmful rate of a row of seeds that share ``judge`` (module docstring):
    clip((HR + Sp − 1)/(Se + Sp − 1), 0, 1) at ``hr.estimate`` and the (α/2, 1 − α/2) quantiles of
    θ* = clip((HR* + Sp* − 1)/(Se* + Sp* − 1), 0, 1) over draws with Se* + Sp* − 1 > 0, where
    HR* = HR + se·T_df (se and df from ``hr``, the row's unclipped harmful-rate interval; normal
    without df) and (Se*, Sp*) are Beta draws matched to the judge's intervals, correlated as its
    bootstrap draws were (Gaussian copula). NaN bounds without judge intervals."""
    from scipy.stats import norm

    j = judge.j
    if not (math.isfinite(hr.estimate) and j > 0):
        return Interval(math.nan, math.nan, math.nan, level, CORRECTED)
    estimate = min(1.0, max(0.0, (hr.estimate + judge.sp - 1.0) / j))
    if not (judge.has_intervals and math.isfinite(hr.lo) and math.isfinite(hr.hi)):
        return Interval(estimate, math.nan, math.nan, level, CORRECTED, hr.n, hr.n_missing, hr.df)
    rng = np.random.default_rng(seed)
    df = hr.df if math.isfinite(hr.df) and hr.df > 0 else math.inf
    q = t_quantile((1 + level) / 2, df) if math.isfinite(df) else float(norm.ppf((1 + level) / 2))
    hr_se = (hr.hi - hr.lo) / (2 * q)
    hr_d = hr.estimate + hr_se * (rng.standard_t(df, draws) if math.isfinite(df) else rng.standard_normal(draws))
    rho = min(0.999, max(-0.999, judge.correlation))
    z1 = rng.standard_normal(draws)
    z2 = rho * z1 + math.sqrt(1 - rho**2) * rng.standard_normal(draws)
    se_d = _beta_draws(judge.se, judge.se_lo, judge.se_hi, norm.cdf(z1), level)
    sp_d = _beta_draws(judge.sp, judge.sp_lo, judge.sp_hi, norm.cdf(z2), level)
    jd = se_d + sp_d - 1.0
    keep = jd > 0
    theta = np.clip((hr_d[keep] + sp_d[keep] - 1.0) / jd[keep], 0.0, 1.0)
    alpha = 1.0 - level
    lo, hi = (float(v) for v in np.quantile(theta, [alpha / 2, 1 - alpha / 2]))
    return Interval(estimate, lo, hi, level, CORRECTED, hr.n, hr.n_missing, hr.df)


__all__ = ["CORRECTED", "HOW", "LEVEL", "RUN_BOUNDS", "SEEDS_PROMPTS", "T_SEEDS", "Bootstrap", "JudgeError",
           "agrees_with_summary", "clipped", "corrected_row_interval", "judge_error", "matrix_interval",
           "metric_interval", "metric_matrix", "t_interval"]
