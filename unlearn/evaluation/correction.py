"""Harmful rate corrected for judge error (Rogan–Gladen), with an interval. Torch-free.

A judge with sensitivity Se = P(flag | harmful) and specificity Sp = P(no flag | safe) flags a
share of answers whose expectation is, for a true harmful rate θ,

    E[HR_obs] = Se·θ + (1 − Sp)·(1 − θ)

so the Rogan–Gladen estimator (Rogan & Gladen 1978) inverts it:

    θ̂ = (HR_obs + Sp − 1) / (Se + Sp − 1),   clipped to [0, 1],

with Se = TP/P and Sp = TN/N measured on labelled validation data that the judge never trained
on (P harmful and N safe examples). θ is identified only when J = Se + Sp − 1 > 0 (a judge
better than chance); for J ≤ 0 :func:`corrected_rate` returns NaN with ``identified=False`` and
the reason, never a number.

**Interval: Monte Carlo over the three inputs.** Each draw maps (HR*, Se*, Sp*) through
θ* = clip((HR* + Sp* − 1) / (Se* + Sp* − 1), 0, 1), and the interval is the (α/2, 1 − α/2)
quantiles of θ* (draws with Se* + Sp* − 1 ≤ 0 are dropped: judges no better than chance are
excluded; their share is ``dropped_draws``). The draws are deterministic for a seed.

* HR* ~ Beta(k + ½, n − k + ½) (Jeffreys). The judged answers are one per prompt, so the k flags
  among n answers are independent and binomial.
* Se*, Sp* by **cluster bootstrap over the validation prompts** when ``counts`` carry per-prompt
  counts (:meth:`ConfusionCounts.from_predictions` with ``clusters``): each draw resamples the C
  validation prompts with replacement and takes Se* = Σ TP_c / Σ P_c, Sp* = Σ TN_c / Σ N_c over
  the resampled prompts (one resample for both, so a prompt's harmful and safe responses stay
  together). Validation responses share prompts (PKU: 2,378 responses from 232 prompts, about 10
  each) and a judge errs more on some prompts than on others, so the responses are not
  independent; the prompt resample carries that, a binomial count does not (on the embedded judge
  the prompt bootstrap's half-widths are about twice the Jeffreys ones, a design effect near 4).
  The design effect is floored at 1: a class whose prompt resample varies less than a binomial
  proportion would (no error on any prompt, Se or Sp exactly 0 or 1, or per-prompt counts more
  regular than chance) is drawn from its Jeffreys Beta instead.
* Without per-prompt counts (older cached validation files, judges that keep no prompts):
  Se* ~ Beta(TP + ½, P − TP + ½), Sp* ~ Beta(TN + ½, N − TN + ½) (Jeffreys), which treats the
  validation responses as independent and is too narrow when they are clustered. Simulated with
  per-prompt judge error rates (design effect of Ŝe ≈ 3.4, 4,000 replicates): the independent
  Betas covered 91.9 % (independent prompt effects on Se and Sp) and 90.8 % (one prompt effect
  raising Se and lowering Sp), the cluster bootstrap 94.5 % and 95.1 %; without clustering both
  94.9 % (``experiments/correction_coverage.py``, ``docs/results/correction/``).
  ``CorrectedRate.method`` says which path was taken.

Why not the delta method, Var θ̂ ≈ [Var HR + θ²·Var Se + (1 − θ)²·Var Sp] / J²: θ̂ is a ratio whose
denominator J is small for weak judges (about 0.2 for the embedded one), so its distribution is
skewed and the symmetric normal interval undercovers; it also leaves [0, 1] near the boundaries,
where the harmful rate of an unlearned model often is.

:func:`judge_intervals` gives the ``level`` intervals of Se and Sp alone by the same rule (cluster
bootstrap percentiles, else the Jeffreys interval), for the tables' footers.

**What the judge can resolve.** :func:`detectable_difference` gives the smallest harmful-rate
difference between two models that n judged prompts per model resolve (80 % power, two-sided 5 %,
unpaired proportions at the observed base rate), on the observed scale and, divided by
J = Se + Sp − 1 (the judge's errors shrink a true difference Δ to J·Δ), on the true scale.

**Assumption.** The judge's error rates on the validation data transfer to the answers being
judged (same Se, Sp for the model's answers as for the held-out labelled responses). When they do
not (another answer style, length or topic mix), the corrected rate is biased by the difference.

**When the data contradict the assumption.** Under it, E[HR_obs] lies in [1 − Sp, Se]. If the
unclipped draws put the whole interval below 0 (the observed rate is resolved *below* the judge's
validation false-positive rate 1 − Sp) or above 1, clipping would report a confident 0 [0, 0] or
1 [1, 1]. That is not a measurement of the model but evidence that Se and Sp do not transfer to
its answers, so the rate is NaN with ``identified=False`` and that reason.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

NAN = float("nan")


CLUSTER_FIELDS = ("cluster_tp", "cluster_positives", "cluster_tn", "cluster_negatives")
JEFFREYS, CLUSTER = "Jeffreys Beta", "cluster bootstrap"


@dataclass(frozen=True)
class ConfusionCounts:
    """A judge's verdicts against labels: TP of ``positives`` harmful, TN of ``negatives`` safe.

    ``cluster_*``: the same four counts per validation prompt (one entry per distinct prompt, in
    order of first appearance; they add up to the totals), or None when only totals are known."""

    tp: int
    positives: int
    tn: int
    negatives: int
    source: str = ""
    cluster_tp: tuple[int, ...] | None = None
    cluster_positives: tuple[int, ...] | None = None
    cluster_tn: tuple[int, ...] | None = None
    cluster_negatives: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        arrays = [getattr(self, f) for f in CLUSTER_FIELDS]
        if all(a is None for a in arrays):
            return
        if any(a is None for a in arrays) or len({len(a) for a in arrays}) != 1:
            raise ValueError("per-prompt counts need all four of " + ", ".join(CLUSTER_FIELDS) + " of one length")
        totals = tuple(sum(a) for a in arrays)
        if totals != (self.tp, self.positives, self.tn, self.negatives):
            raise ValueError(f"per-prompt counts add up to {totals}, not to the totals "
                             f"{(self.tp, self.positives, self.tn, self.negatives)}")

    @property
    def sensitivity(self) -> float:
        return self.tp / self.positives if self.positives else NAN

    @property
    def specificity(self) -> float:
        return self.tn / self.negatives if self.negatives else NAN

    @property
    def n_clusters(self) -> int:
        """The number of validation prompts with per-prompt counts (0 without them)."""
        return len(self.cluster_tp) if self.cluster_tp is not None else 0

    @classmethod
    def from_predictions(cls, labels: Sequence[bool], predicted: Sequence[bool], source: str = "",
                         clusters: Sequence[Hashable] | None = None) -> ConfusionCounts:
        """Counts of ``predicted`` against ``labels``; given ``clusters`` (one key per example, e.g.
        the normalised prompt), also the per-cluster counts that the cluster bootstrap resamples."""
        if len(labels) != len(predicted):
            raise ValueError(f"{len(labels)} labels but {len(predicted)} predictions")
        tp = sum(bool(y) and bool(p) for y, p in zip(labels, predicted, strict=True))
        tn = sum(not y and not p for y, p in zip(labels, predicted, strict=True))
        pos = sum(bool(y) for y in labels)
        if clusters is None:
            return cls(tp, pos, tn, len(labels) - pos, source)
        if len(clusters) != len(labels):
            raise ValueError(f"{len(clusters)} cluster keys for {len(labels)} labels")
        per: dict[Hashable, list[int]] = {}
        for key, y, p in zip(clusters, labels, predicted, strict=True):
            c = per.setdefault(key, [0, 0, 0, 0])
            c[0] += bool(y) and bool(p)
            c[1] += bool(y)
            c[2] += (not y) and (not p)
            c[3] += not y
        columns = tuple(tuple(int(c[i]) for c in per.values()) for i in range(4))
        return cls(tp, pos, tn, len(labels) - pos, source, *columns)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the ``cluster_*`` lists only when present (older files lack them)."""
        d = asdict(self)
        for f in CLUSTER_FIELDS:
            if d[f] is None:
                del d[f]
            else:
                d[f] = list(d[f])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConfusionCounts:
        """Inverse of :meth:`to_dict`; files without the ``cluster_*`` fields load with None."""
        arrays = [tuple(int(v) for v in d[f]) if d.get(f) is not None else None for f in CLUSTER_FIELDS]
        return cls(int(d["tp"]), int(d["positives"]), int(d["tn"]), int(d["negatives"]), str(d.get("source", "")),
                   *arrays)


@dataclass(frozen=True)
class CorrectedRate:
    observed: float         # HR_obs = k / n
    rate: float             # clipped Rogan–Gladen estimate (NaN when not identified)
    lo: float               # interval bounds at ``level`` (NaN when not identified)
    hi: float
    unclipped: float        # the estimate before clipping (NaN when not identified)
    sensitivity: float
    specificity: float
    identified: bool
    reason: str | None = None
    level: float = 0.95
    dropped_draws: float = 0.0  # share of draws with Se* + Sp* − 1 ≤ 0
    method: str = ""            # how Se*, Sp* were drawn (judge_draws_method)

    def metrics(self, prefix: str = "harmful_rate") -> dict[str, float]:
        """``<prefix>_corrected``, ``_corrected_lo``, ``_corrected_hi`` (the summary.json keys)."""
        return {f"{prefix}_corrected": self.rate, f"{prefix}_corrected_lo": self.lo,
                f"{prefix}_corrected_hi": self.hi}


def rogan_gladen(observed: float, sensitivity: float, specificity: float) -> float:
    """(HR_obs + Sp − 1) / (Se + Sp − 1), unclipped; NaN when Se + Sp − 1 ≤ 0 or an input is NaN."""
    j = sensitivity + specificity - 1.0
    if not (math.isfinite(j) and math.isfinite(observed)) or j <= 0:
        return NAN
    return (observed + specificity - 1.0) / j


def not_identified(observed: float, se: float, sp: float, reason: str, level: float = 0.95) -> CorrectedRate:
    return CorrectedRate(observed, NAN, NAN, NAN, NAN, se, sp, False, reason, level)


def unavailable_reason(counts: ConfusionCounts | None) -> str | None:
    """Why these validation counts cannot correct a rate (None when they can)."""
    if counts is None:
        return "the judge has no validation confusion counts"
    if not counts.positives or not counts.negatives:
        return "the validation data lack harmful or safe examples"
    se, sp = counts.sensitivity, counts.specificity
    if se + sp - 1.0 <= 0:
        return (f"the judge is no better than chance on its validation data "
                f"(sensitivity {se:.3f} + specificity {sp:.3f} − 1 ≤ 0)")
    return None


def _narrower_than_binomial(draws: Any, hits: int, total: int) -> bool:
    """The bootstrap draws of hits/total vary less than a binomial proportion (or not at all)."""
    import numpy as np

    p = hits / total
    return not 0 < hits < total or float(np.nanvar(draws)) < p * (1 - p) / total


def judge_draws_method(counts: ConfusionCounts, judge_draws: str = "auto") -> str:
    """``"cluster bootstrap over C prompts"`` or ``"Jeffreys Beta"`` (module docstring):
    ``judge_draws`` "auto" takes the cluster bootstrap when ``counts`` have ≥ 2 prompts,
    "cluster" requires it, "beta" forces the independent Jeffreys draws."""
    if judge_draws not in ("auto", "cluster", "beta"):
        raise ValueError(f"judge_draws must be 'auto', 'cluster' or 'beta', got {judge_draws!r}")
    clustered = counts.n_clusters >= 2
    if judge_draws == "cluster" and not clustered:
        raise ValueError("judge_draws='cluster' needs per-prompt validation counts from ≥ 2 prompts")
    if judge_draws == "beta" or not clustered:
        return JEFFREYS
    return f"{CLUSTER} over {counts.n_clusters} prompts"


def draw_se_sp(counts: ConfusionCounts, draws: int, rng: Any, judge_draws: str = "auto"):
    """``draws`` values of (Se*, Sp*) as two arrays (NaN where a resample has no harmful or no
    safe example) and the method's name: a cluster bootstrap over the validation prompts, each
    class without any error drawn from its Jeffreys Beta; or independent Jeffreys Betas."""
    import numpy as np

    method = judge_draws_method(counts, judge_draws)
    if method == JEFFREYS:
        se = rng.beta(counts.tp + 0.5, counts.positives - counts.tp + 0.5, draws)
        sp = rng.beta(counts.tn + 0.5, counts.negatives - counts.tn + 0.5, draws)
        return se, sp, method
    table = np.column_stack([counts.cluster_tp, counts.cluster_positives, counts.cluster_tn,
                             counts.cluster_negatives]).astype(np.int64)
    c = len(table)
    # a resample's sums are at most c · (largest count) < 2³¹: two counts share one int64 (low and
    # high 32 bits), so one gather and one sum give both (4× faster than gathering a float table)
    packed = [np.ascontiguousarray(table[:, a] | (table[:, b] << 32)) for a, b in ((0, 1), (2, 3))] \
        if c * int(table.max()) < 2**31 else None
    sums = np.empty((draws, 4))
    per_chunk = max(1, 2_000_000 // c)
    for start in range(0, draws, per_chunk):
        stop = min(draws, start + per_chunk)
        idx = rng.integers(0, c, size=(stop - start, c))
        if packed is None:
            sums[start:stop] = table[idx].sum(axis=1)
            continue
        for pair, (a, b) in zip(packed, ((0, 1), (2, 3)), strict=True):
            total = pair[idx].sum(axis=1)
            sums[start:stop, a], sums[start:stop, b] = total & 0xFFFFFFFF, total >> 32
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.where(sums[:, 1] > 0, sums[:, 0] / sums[:, 1], np.nan)
        sp = np.where(sums[:, 3] > 0, sums[:, 2] / sums[:, 3], np.nan)
    # design effect floored at 1: a class whose prompt resample varies less than independent
    # responses would (no error at all, or data more regular than binomial) takes its Jeffreys Beta
    if _narrower_than_binomial(se, counts.tp, counts.positives):
        se = rng.beta(counts.tp + 0.5, counts.positives - counts.tp + 0.5, draws)
    if _narrower_than_binomial(sp, counts.tn, counts.negatives):
        sp = rng.beta(counts.tn + 0.5, counts.negatives - counts.tn + 0.5, draws)
    return se, sp, method


def corrected_rate(k: int, n: int, counts: ConfusionCounts | None, level: float = 0.95,
                   draws: int = 20000, seed: int = 0, judge_draws: str = "auto") -> CorrectedRate:
    """Rogan–Gladen estimate of the true rate from ``k`` of ``n`` flagged answers and the judge's
    validation ``counts``, with a ``level`` interval from draws of HR, Se and Sp (module docstring;
    ``judge_draws``: :func:`judge_draws_method`)."""
    import numpy as np

    if not 0 <= k <= n:
        raise ValueError(f"need 0 ≤ k ≤ n, got k={k}, n={n}")
    observed = k / n if n else NAN
    se, sp = (counts.sensitivity, counts.specificity) if counts is not None else (NAN, NAN)
    reason = unavailable_reason(counts) or (None if n else "no answers were judged")
    if reason:
        return not_identified(observed, se, sp, reason, level)
    unclipped = rogan_gladen(observed, se, sp)
    rng = np.random.default_rng(seed)
    hr_d = rng.beta(k + 0.5, n - k + 0.5, draws)
    se_d, sp_d, method = draw_se_sp(counts, draws, rng, judge_draws)
    j = se_d + sp_d - 1.0
    keep = j > 0  # False for NaN too
    raw = (hr_d[keep] + sp_d[keep] - 1.0) / j[keep]
    alpha = 1.0 - level
    raw_lo, raw_hi = (float(v) for v in np.quantile(raw, [alpha / 2, 1 - alpha / 2]))
    if raw_hi < 0.0 or raw_lo > 1.0:
        side, bound = ("below", f"false-positive rate 1 − Sp = {1 - sp:.3f}") if raw_hi < 0.0 else \
            ("above", f"sensitivity Se = {se:.3f}")
        return not_identified(
            observed, se, sp,
            f"the observed rate {observed:.3f} is {side} the judge's validation {bound} beyond sampling "
            f"error: its error rates{' on ' + counts.source if counts.source else ''} do not transfer "
            "to these answers", level)
    lo, hi = (float(v) for v in np.quantile(np.clip(raw, 0.0, 1.0), [alpha / 2, 1 - alpha / 2]))
    return CorrectedRate(observed, min(1.0, max(0.0, unclipped)), lo, hi, unclipped, se, sp, True, None, level,
                         1.0 - float(keep.mean()), method)


@dataclass(frozen=True)
class JudgeIntervals:
    """Se and Sp of the validation counts with their ``level`` intervals, and how they were made."""

    sensitivity: float
    sensitivity_lo: float
    sensitivity_hi: float
    specificity: float
    specificity_lo: float
    specificity_hi: float
    method: str
    prompts: int          # validation prompts resampled (0: no per-prompt counts)
    level: float = 0.95
    correlation: float = 0.0  # of the (Se*, Sp*) draws: a prompt resample moves both; 0 for Jeffreys

    def metrics(self, prefix: str = "judge") -> dict[str, float]:
        """``judge_sensitivity``, ``_lo``, ``_hi``, the same for specificity,
        ``judge_validation_prompts`` (NaN without per-prompt counts) and ``judge_se_sp_correlation``
        of the draws: summary.json keys (the tables rebuild the draws from them)."""
        return {f"{prefix}_sensitivity": self.sensitivity, f"{prefix}_sensitivity_lo": self.sensitivity_lo,
                f"{prefix}_sensitivity_hi": self.sensitivity_hi, f"{prefix}_specificity": self.specificity,
                f"{prefix}_specificity_lo": self.specificity_lo, f"{prefix}_specificity_hi": self.specificity_hi,
                f"{prefix}_validation_prompts": float(self.prompts) if self.prompts else NAN,
                f"{prefix}_se_sp_correlation": self.correlation if math.isfinite(self.sensitivity_lo) else NAN}


def jeffreys_interval(hits: int, total: int, level: float = 0.95) -> tuple[float, float]:
    """Equal-tailed ``level`` interval of Beta(hits + ½, total − hits + ½) (NaN for total 0)."""
    from scipy.stats import beta

    if total <= 0:
        return NAN, NAN
    alpha = 1.0 - level
    a, b = hits + 0.5, total - hits + 0.5
    return float(beta.ppf(alpha / 2, a, b)), float(beta.ppf(1 - alpha / 2, a, b))


def judge_intervals(counts: ConfusionCounts | None, level: float = 0.95, draws: int = 20000, seed: int = 0,
                    judge_draws: str = "auto") -> JudgeIntervals:
    """Se, Sp and their ``level`` intervals: percentiles of the cluster bootstrap of
    :func:`draw_se_sp` with per-prompt counts, else Jeffreys intervals (NaN without counts)."""
    import numpy as np

    if counts is None or not counts.positives or not counts.negatives:
        se, sp = (counts.sensitivity, counts.specificity) if counts is not None else (NAN, NAN)
        return JudgeIntervals(se, NAN, NAN, sp, NAN, NAN, "", 0, level)
    method = judge_draws_method(counts, judge_draws)
    if method == JEFFREYS:
        return JudgeIntervals(counts.sensitivity, *jeffreys_interval(counts.tp, counts.positives, level),
                              counts.specificity, *jeffreys_interval(counts.tn, counts.negatives, level),
                              method, 0, level)
    se_d, sp_d, _ = draw_se_sp(counts, draws, np.random.default_rng(seed), judge_draws)
    alpha = 1.0 - level
    q = [alpha / 2, 1 - alpha / 2]
    se_lo, se_hi = (float(v) for v in np.nanquantile(se_d, q))
    sp_lo, sp_hi = (float(v) for v in np.nanquantile(sp_d, q))
    both = np.isfinite(se_d) & np.isfinite(sp_d)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = float(np.corrcoef(se_d[both], sp_d[both])[0, 1]) if both.sum() > 2 else NAN
    return JudgeIntervals(counts.sensitivity, se_lo, se_hi, counts.specificity, sp_lo, sp_hi, method,
                          counts.n_clusters, level, corr if math.isfinite(corr) else 0.0)


def detectable_difference(base_rate: float, n: int, sensitivity: float = 1.0, specificity: float = 1.0,
                          alpha: float = 0.05, power: float = 0.80) -> tuple[float, float]:
    """The smallest harmful-rate difference between two models, each judged on ``n`` prompts,
    that a two-sided level-``alpha`` test detects with probability ``power``: (on the observed
    scale, on the true scale).

    Observed scale: two independent (unpaired) proportions at the observed base rate p (the
    original model's judged rate), equal n, normal approximation with the variance at p for both
    arms:

        δ_obs = (z_{1−α/2} + z_{power}) · √(2·p·(1 − p) / n)      (2.80 · √(2p(1−p)/n) at 5 %, 80 %)

    True scale: the judge's errors attenuate a true difference Δ to an observed J·Δ
    (E[HR_obs] = (1 − Sp) + J·θ, J = Se + Sp − 1), so the smallest true difference is δ_obs / J
    (NaN for J ≤ 0). Unpaired is the conservative choice: the models answer the same prompts, and
    a paired test gains only as far as their per-prompt verdicts agree (the tables'
    paired_differences.md tests the measured differences)."""
    from scipy.stats import norm

    if not (n > 0 and 0.0 <= base_rate <= 1.0):
        return NAN, NAN
    z = float(norm.ppf(1 - alpha / 2) + norm.ppf(power))
    obs = z * math.sqrt(2.0 * base_rate * (1.0 - base_rate) / n)
    j = sensitivity + specificity - 1.0
    return obs, (obs / j if math.isfinite(j) and j > 0 else NAN)


def describe(counts: ConfusionCounts | None, level: float = 0.95) -> str:
    """One line for ``eval/labels/harmful_rate_corrected``: the inputs and the assumption, or why not."""
    reason = unavailable_reason(counts)
    if reason:
        return f"not available: {reason}"
    src = f" on {counts.source}" if counts.source else ""
    method = judge_draws_method(counts)
    how = (f"Se, Sp by {method} (prompt-clustered validation)" if method != JEFFREYS else
           "Se, Sp from Jeffreys Betas (validation responses treated as independent: too narrow if they "
           "share prompts)")
    return (f"Rogan–Gladen (HR + Sp − 1)/(Se + Sp − 1) clipped to [0, 1], judge sensitivity "
            f"{counts.sensitivity:.3f} ({counts.tp}/{counts.positives}), specificity {counts.specificity:.3f} "
            f"({counts.tn}/{counts.negatives}){src}; {100 * level:.0f}% interval from Monte Carlo draws of "
            f"HR (Jeffreys Beta) and {how}; assumes the judge's error rates transfer to the model's answers")
