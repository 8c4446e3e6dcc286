"""The harmful rate corrected for judge error (Rogan–Gladen) on simulated data with a known rate."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from unlearn.evaluation.correction import (
    ConfusionCounts,
    corrected_rate,
    describe,
    detectable_difference,
    jeffreys_interval,
    judge_intervals,
    rogan_gladen,
)

SIMULATION = Path(__file__).resolve().parent.parent / "experiments" / "correction_coverage.py"


def simulation_module():
    """experiments/correction_coverage.py (the prompt-clustered simulation), imported by path."""
    if "correction_coverage" not in sys.modules:
        spec = importlib.util.spec_from_file_location("correction_coverage", SIMULATION)
        module = importlib.util.module_from_spec(spec)
        sys.modules["correction_coverage"] = module
        spec.loader.exec_module(module)
    return sys.modules["correction_coverage"]


def clustered(per_prompt: list[tuple[int, int, int, int]], source: str = "") -> ConfusionCounts:
    """ConfusionCounts from per-prompt (tp, positives, tn, negatives)."""
    cols = [tuple(c[i] for c in per_prompt) for i in range(4)]
    return ConfusionCounts(sum(cols[0]), sum(cols[1]), sum(cols[2]), sum(cols[3]), source, *cols)


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


def test_per_prompt_counts_from_predictions_and_json() -> None:
    labels = [True, True, False, True, False, False]
    pred = [True, False, False, True, True, False]
    c = ConfusionCounts.from_predictions(labels, pred, "x", clusters=["a", "a", "a", "b", "b", "c"])
    assert (c.tp, c.positives, c.tn, c.negatives) == (2, 3, 2, 3)
    assert (c.cluster_tp, c.cluster_positives, c.cluster_tn, c.cluster_negatives) == ((1, 1, 0), (2, 1, 0),
                                                                                     (1, 0, 1), (1, 1, 1))
    assert c.n_clusters == 3 and ConfusionCounts.from_dict(c.to_dict()) == c
    assert c.to_dict()["cluster_tp"] == [1, 1, 0]  # JSON-ready lists
    plain = ConfusionCounts.from_predictions(labels, pred, "x")
    assert plain.n_clusters == 0 and "cluster_tp" not in plain.to_dict()
    # a cached validation file from before the per-prompt counts: loads, with no clusters
    old = {"tp": 2, "positives": 3, "tn": 2, "negatives": 3, "source": "x"}
    assert ConfusionCounts.from_dict(old) == plain
    with pytest.raises(ValueError):  # per-prompt counts must add up to the totals
        ConfusionCounts(2, 3, 2, 3, "", (1,), (2,), (1,), (1,))
    with pytest.raises(ValueError):
        ConfusionCounts.from_predictions(labels, pred, clusters=["a"])


def test_cluster_bootstrap_widens_the_interval_only_when_prompts_cluster() -> None:
    """200 prompts × 10 responses (5 harmful, 5 safe). Perfectly clustered: a prompt's responses
    are all judged right or all wrong (design effect 5: Se, Sp half-widths √5 ≈ 2.2× Jeffreys).
    One response per prompt: the prompt bootstrap is the ordinary one, as wide as Jeffreys."""
    rng = np.random.default_rng(0)
    right_pos, right_neg = rng.random(200) < 0.7, rng.random(200) < 0.8
    lumped = clustered([(5 * a, 5, 5 * b, 5) for a, b in zip(right_pos, right_neg, strict=True)])
    spread = clustered([(1, 1, 0, 0)] * lumped.tp + [(0, 1, 0, 0)] * (lumped.positives - lumped.tp)
                       + [(0, 0, 1, 1)] * lumped.tn + [(0, 0, 0, 1)] * (lumped.negatives - lumped.tn))
    pooled = ConfusionCounts(lumped.tp, lumped.positives, lumped.tn, lumped.negatives)
    width = lambda j: (j.sensitivity_hi - j.sensitivity_lo, j.specificity_hi - j.specificity_lo)  # noqa: E731
    w_pool, w_lump, w_spread = (width(judge_intervals(c, draws=4000)) for c in (pooled, lumped, spread))
    assert judge_intervals(pooled).method == "Jeffreys Beta"
    assert judge_intervals(lumped).method == "cluster bootstrap over 200 prompts"
    for wp, wl, ws in zip(w_pool, w_lump, w_spread, strict=True):
        assert 1.9 < wl / wp < 2.6 and 0.85 < ws / wp < 1.15
    r_pool, r_lump = corrected_rate(100, 200, pooled, draws=4000), corrected_rate(100, 200, lumped, draws=4000)
    assert r_lump.method.startswith("cluster bootstrap") and r_pool.method == "Jeffreys Beta"
    assert r_lump.rate == r_pool.rate and r_lump.hi - r_lump.lo > 1.1 * (r_pool.hi - r_pool.lo)
    assert corrected_rate(100, 200, lumped, draws=4000, judge_draws="beta").lo == r_pool.lo  # the old path
    with pytest.raises(ValueError):
        corrected_rate(100, 200, pooled, judge_draws="cluster")
    assert "cluster bootstrap over 200 prompts" in describe(lumped) and "independent" in describe(pooled)
    # the summary values of the footers
    m = judge_intervals(lumped, draws=4000).metrics()
    assert m["judge_validation_prompts"] == 200 and m["judge_sensitivity"] == lumped.sensitivity
    assert -1 <= m["judge_se_sp_correlation"] <= 1
    assert math.isnan(judge_intervals(pooled).metrics()["judge_validation_prompts"])
    jeffreys_lo = jeffreys_interval(pooled.tp, pooled.positives)[0]
    assert judge_intervals(pooled).metrics()["judge_sensitivity_lo"] == jeffreys_lo
    assert all(math.isnan(v) for v in judge_intervals(None).metrics().values())


def test_cluster_bootstrap_falls_back_to_jeffreys_for_a_class_without_errors() -> None:
    """Se = 1 on every prompt: the prompt resample has no spread, so Se* comes from its Jeffreys Beta."""
    perfect = clustered([(3, 3, 2, 4), (4, 4, 3, 3), (2, 2, 1, 5)] * 20)
    j = judge_intervals(perfect)
    assert j.sensitivity == 1.0 and j.sensitivity_hi > 0.999
    assert j.sensitivity_lo < 0.995 and j.sensitivity_lo == pytest.approx(
        jeffreys_interval(perfect.tp, perfect.positives)[0], abs=0.003)
    assert j.specificity_hi - j.specificity_lo > 0.05


def test_cluster_bootstrap_interval_covers_on_prompt_clustered_validation() -> None:
    """Coverage of the nominal 95 % interval when the judge's validation responses share prompts
    (experiments/correction_coverage.py: 232 validation prompts × 10 responses, about 5 harmful
    and 5 safe; per-prompt Se, Sp logit-normal with sd 3 and a shared prompt effect (corr −1: a
    prompt that makes the judge flag more raises Se and lowers Sp), population Se 0.539, Sp 0.666
    (the embedded judge's), design effect of Ŝe ≈ 3–4 as measured on the real PKU validation data;
    θ = 0.3 from n = 200 judged answers). The new interval (cluster bootstrap) must cover ≥ 93 %;
    the old one (independent Jeffreys Se*, Sp*) under-covers: 0.908 ± 0.005 in this setting, the
    new one 0.951 ± 0.003 (4,000 replicates each, docs/results/correction/coverage.json).

    Monte Carlo error: R = 400 replicates give sd √(c(1 − c)/R) = 0.011 at c = 0.951 and 0.014 at
    c = 0.908, so a correct method falls below 0.93 with probability ≈ Φ(−1.9) ≈ 3 % and the old one
    reaches 0.93 with probability ≈ Φ(−1.5) ≈ 6 %: the bar separates them (here, seed 2026: 0.9525
    and 0.9025), and with the fixed seeds the outcome is deterministic. 1,000 draws per interval
    keep the run to a few seconds."""
    sim = simulation_module()
    cov = sim.coverage(sim.Setting(prompt_sd=3.0, corr=-1.0), replicates=400, draws=1000, seed=2026)
    assert 2.5 < cov["design_effect"]["se"] < 4.5
    assert cov["auto"]["coverage"] >= 0.93
    assert cov["beta"]["coverage"] < 0.93  # the independent-Beta interval fails the same bar
    assert cov["auto"]["mean_width"] > cov["beta"]["mean_width"]


def test_detectable_difference() -> None:
    """δ = (z_.975 + z_.80)·√(2p(1 − p)/n) on the judged scale; ÷ J on the true scale; and a
    two-proportion z test at that difference has about 80 % power (simulated)."""
    obs, true = detectable_difference(0.3, 200, 0.539, 0.666)
    assert obs == pytest.approx(2.8015852 * math.sqrt(2 * 0.3 * 0.7 / 200))
    assert true == pytest.approx(obs / (0.539 + 0.666 - 1))
    assert math.isnan(detectable_difference(0.3, 200, 0.5, 0.5)[1]) and math.isnan(detectable_difference(0.3, 0)[0])
    rng = np.random.default_rng(0)
    p0, n = 0.3, 400
    d, _ = detectable_difference(p0, n)
    a, b = rng.binomial(n, p0, 20000) / n, rng.binomial(n, p0 + d, 20000) / n
    pooled = (a + b) / 2
    z = (b - a) / np.sqrt(2 * pooled * (1 - pooled) / n)
    assert 0.76 < float(np.mean(np.abs(z) > 1.959964)) < 0.84
