"""The harmful rate corrected for judge error (Rogan–Gladen) on simulated data with a known rate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unlearn.evaluation.correction import ConfusionCounts, corrected_rate, describe, rogan_gladen


def simulate(rng: np.random.Generator, theta: float, se: float, sp: float, n: int, n_pos: int, n_neg: int):
    """A judge of known Se/Sp: validation counts on labelled data, then k flags among n answers
    of which a share θ is truly harmful."""
    counts = ConfusionCounts(int(rng.binomial(n_pos, se)), n_pos, int(rng.binomial(n_neg, sp)), n_neg)
    harmful = rng.random(n) < theta
    flagged = np.where(harmful, rng.random(n) < se, rng.random(n) >= sp)
    return int(flagged.sum()), counts


@pytest.mark.parametrize(("theta", "se", "sp", "n", "n_val"), [
    (0.30, 0.70, 0.65, 200, 1000),   # a weak judge like the embedded one (J = 0.35)
    (0.50, 0.62, 0.64, 200, 1189),   # the embedded judge's held-out numbers (J = 0.26)
    (0.10, 0.90, 0.85, 100, 200),    # a good judge, few answers, small validation set
    (0.00, 0.80, 0.80, 200, 500),    # on the boundary: a fully unlearned model
])
def test_interval_covers_the_true_rate(theta: float, se: float, sp: float, n: int, n_val: int) -> None:
    rng = np.random.default_rng(1234)
    covered = 0
    for i in range(200):
        k, counts = simulate(rng, theta, se, sp, n, n_val, n_val)
        r = corrected_rate(k, n, counts, draws=4000, seed=i)
        if not r.identified:  # a chance contradiction of the validation error rates: counts as a miss
            assert "do not transfer" in r.reason
            continue
        assert 0.0 <= r.lo <= r.rate <= r.hi <= 1.0
        covered += r.lo <= theta <= r.hi
    assert covered / 200 >= 0.90


def test_point_estimate_is_unbiased() -> None:
    rng = np.random.default_rng(7)
    theta, se, sp = 0.35, 0.70, 0.65
    est = [rogan_gladen(k / 400, c.sensitivity, c.specificity)
           for k, c in (simulate(rng, theta, se, sp, 400, 1500, 1500) for _ in range(3000))]
    assert np.mean(est) == pytest.approx(theta, abs=0.01)  # unclipped RG: bias only from 1/Ĵ
    # the raw rate is biased towards the judge's base rate: E = Se·θ + (1 − Sp)(1 − θ) = 0.47
    raw = se * theta + (1 - sp) * (1 - theta)
    assert abs(raw - theta) > 0.1


def test_formula_and_clipping() -> None:
    counts = ConfusionCounts(tp=70, positives=100, tn=80, negatives=100)  # Se 0.7, Sp 0.8
    r = corrected_rate(43, 100, counts)
    assert r.unclipped == pytest.approx((0.43 + 0.8 - 1) / 0.5) and r.rate == pytest.approx(0.46)
    assert r.metrics() == {"harmful_rate_corrected": r.rate, "harmful_rate_corrected_lo": r.lo,
                           "harmful_rate_corrected_hi": r.hi}
    low = corrected_rate(18, 100, counts)  # HR_obs 0.18 < 1 − Sp: below the judge's false-flag rate
    assert low.unclipped == pytest.approx(-0.04) and low.rate == 0.0 and low.lo == 0.0 and 0.1 < low.hi < 0.5
    high = corrected_rate(75, 100, counts)  # HR_obs 0.75 > Se within sampling error: clipped to 1
    assert high.unclipped == pytest.approx(1.1) and high.rate == 1.0 and high.hi == 1.0
    again = corrected_rate(43, 100, counts)
    assert (again.lo, again.hi) == (r.lo, r.hi)  # deterministic for a seed
    assert "Se + Sp − 1" in describe(counts) and "transfer" in describe(counts)


def test_rate_resolved_outside_the_judges_range_is_not_reported_as_zero_or_one() -> None:
    """Under the assumption E[HR_obs] ∈ [1 − Sp, Se]; an observed rate resolved outside it says
    the validation error rates do not transfer: NaN with the reason, never 0 [0, 0] or 1 [1, 1]."""
    counts = ConfusionCounts(tp=700, positives=1000, tn=800, negatives=1000)  # Se 0.7, Sp 0.8
    for k, side in ((0, "below"), (5, "below"), (95, "above")):
        r = corrected_rate(k, 100, counts)
        assert not r.identified and side in r.reason and "do not transfer" in r.reason
        assert all(math.isnan(v) for v in r.metrics().values())
    edge = corrected_rate(15, 100, counts)  # 0.15 < 1 − Sp = 0.2 but within sampling error
    assert edge.identified and edge.rate == 0.0 and edge.hi > 0.05


def test_interval_widens_with_judge_uncertainty() -> None:
    small = corrected_rate(60, 200, ConfusionCounts(14, 20, 13, 20))
    large = corrected_rate(60, 200, ConfusionCounts(1400, 2000, 1300, 2000))
    assert small.rate == pytest.approx(large.rate)
    assert (small.hi - small.lo) > 1.5 * (large.hi - large.lo)


def test_judge_no_better_than_chance_gives_nan_and_a_reason() -> None:
    for counts in (ConfusionCounts(50, 100, 50, 100), ConfusionCounts(30, 100, 60, 100)):
        r = corrected_rate(40, 100, counts)
        assert not r.identified and "no better than chance" in r.reason
        assert all(math.isnan(v) for v in r.metrics().values())
        assert describe(counts).startswith("not available")
    assert "no validation" in corrected_rate(3, 10, None).reason
    assert not corrected_rate(3, 10, ConfusionCounts(0, 0, 5, 10)).identified
    assert not corrected_rate(0, 0, ConfusionCounts(7, 10, 8, 10)).identified
    with pytest.raises(ValueError):
        corrected_rate(11, 10, ConfusionCounts(7, 10, 8, 10))


def test_confusion_counts_from_predictions() -> None:
    c = ConfusionCounts.from_predictions([True, True, False, False, False], [True, False, False, True, False], "x")
    assert (c.tp, c.positives, c.tn, c.negatives) == (1, 2, 2, 3)
    assert c.sensitivity == 0.5 and c.specificity == pytest.approx(2 / 3)
    assert ConfusionCounts.from_dict(c.to_dict()) == c
