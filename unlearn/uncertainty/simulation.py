"""Simulated evaluations with a known answer, for checking the intervals' coverage and the paired
test's power and false-positive rate (``tests/test_uncertainty.py``; the coverage numbers in
docs/evaluation.md come from ``python -m unlearn.uncertainty.simulation``).

Binary labels (harmful or not) of seed s on prompt p follow a logit-normal crossed model,

    P(y_sp = 1) = σ(μ + a_s + b_p),   a_s ~ N(0, seed_sd²),  b_p ~ N(0, prompt_sd²),

with μ set so that the marginal rate E σ(μ + a + b) equals ``rate`` exactly (Gauss–Hermite
quadrature). Two methods compared on the same prompts share b_p (hard prompts are hard for both)
and have their own seeds. Continuous, skewed values (a perplexity) are exp(m + a_s + b_p + e_sp)
with normal a, b, e, whose mean is exp(m + (σ²_a + σ²_b + σ²_e)/2).

Also here, as the rivals docs/evaluation.md compares against: the crossed ("pigeonhole") bootstrap
(Owen 2007) and the percentile bootstrap over seed means.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from unlearn.uncertainty.bootstrap import mean_interval, percentile_bounds
from unlearn.uncertainty.interval import Interval
from unlearn.uncertainty.paired import mcnemar_exact, paired_difference
from unlearn.uncertainty.seeds import seed_prompt_interval


@lru_cache(maxsize=4)
def hermite_rule(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Hermite nodes and weights for E f(Z), Z ~ N(0, 1)."""
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    return z, w / w.sum()


def logit_normal_mean(mu: float, sd: float, nodes: int = 80) -> float:
    """E σ(μ + sd·Z), Z ~ N(0, 1)."""
    z, w = hermite_rule(nodes)
    return float(w @ (1.0 / (1.0 + np.exp(-(mu + sd * z)))))


def logit_for_rate(rate: float, sd: float) -> float:
    """μ with E σ(μ + sd·Z) = rate (bisection)."""
    lo, hi = -30.0, 30.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if logit_normal_mean(mid, sd) < rate else (lo, mid)
    return (lo + hi) / 2


def binary_grids(rng: np.random.Generator, n_sims: int, n_seeds: int, n_prompts: int, rate: float,
                 seed_sd: float, prompt_sd: float, prompt_effects: np.ndarray | None = None) -> np.ndarray:
    """(n_sims, n_seeds, n_prompts) 0/1 values with marginal ``rate``; ``prompt_effects`` (n_sims,
    n_prompts) standard normals to share prompts between methods (drawn here when None)."""
    mu = logit_for_rate(rate, math.hypot(seed_sd, prompt_sd))
    b = prompt_effects if prompt_effects is not None else rng.standard_normal((n_sims, n_prompts))
    a = rng.standard_normal((n_sims, n_seeds, 1))
    p = 1.0 / (1.0 + np.exp(-(mu + seed_sd * a + prompt_sd * b[:, None, :])))
    return (rng.random(p.shape) < p).astype(float)


def lognormal_grids(rng: np.random.Generator, n_sims: int, n_seeds: int, n_prompts: int, log_mean: float,
                    seed_sd: float, prompt_sd: float, noise_sd: float) -> tuple[np.ndarray, float]:
    """(n_sims, n_seeds, n_prompts) skewed values exp(m + a + b + e) and their true mean."""
    z = (log_mean + seed_sd * rng.standard_normal((n_sims, n_seeds, 1))
         + prompt_sd * rng.standard_normal((n_sims, 1, n_prompts))
         + noise_sd * rng.standard_normal((n_sims, n_seeds, n_prompts)))
    return np.exp(z), math.exp(log_mean + (seed_sd**2 + prompt_sd**2 + noise_sd**2) / 2)


# ---------------------------------------------------------------- rivals
def pigeonhole_interval(values: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Interval:
    """Crossed bootstrap: seeds and prompts resampled independently, percentile interval of the mean."""
    y = np.asarray(values, dtype=float)
    s, p = y.shape
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, s, (n_boot, s))
    prompts = rng.integers(0, p, (n_boot, p))
    # mean of y[seeds][:, prompts] = Σ_ij y_ij · (seed count_i)(prompt count_j) / (S P)
    seed_counts, prompt_counts = row_counts(seeds, s), row_counts(prompts, p)
    draws = np.einsum("bi,ij,bj->b", seed_counts, y, prompt_counts) / (s * p)
    lo, hi = percentile_bounds(draws, level)
    return Interval(float(y.mean()), lo, hi, level, "pigeonhole bootstrap")


def row_counts(indices: np.ndarray, n: int) -> np.ndarray:
    """(rows, n) counts of each index 0..n−1 in each row of ``indices``."""
    rows = len(indices)
    offset = indices + n * np.arange(rows)[:, None]
    return np.bincount(offset.ravel(), minlength=rows * n).reshape(rows, n)


def seed_bootstrap_interval(values: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap over the seed means (prompts ignored)."""
    return mean_interval(np.asarray(values, dtype=float).mean(axis=1), n_boot=n_boot, level=level, seed=seed)


def prompt_bootstrap_interval(values: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap over the prompt means (seed variance ignored)."""
    return mean_interval(np.asarray(values, dtype=float).mean(axis=0), n_boot=n_boot, level=level, seed=seed)


# ---------------------------------------------------------------- rates
@dataclass(frozen=True)
class Coverage:
    covered: float      # share of simulations whose interval contains the truth
    half_width: float   # mean half-width

    def __str__(self) -> str:
        return f"coverage {self.covered:.3f}, mean half-width {self.half_width:.4f}"


def coverage(method: Callable[..., Interval], grids: np.ndarray, truth: float, **kw) -> Coverage:
    intervals = [method(g, **kw) for g in grids]
    return Coverage(float(np.mean([i.contains(truth) for i in intervals])),
                    float(np.mean([i.half_width for i in intervals])))


def rejection_rate(a: np.ndarray, b: np.ndarray, **kw) -> float:
    """Share of simulations whose paired interval excludes 0."""
    return float(np.mean([paired_difference(x, y, **kw).excludes_zero() for x, y in zip(a, b, strict=True)]))


def mcnemar_rejection_rate(a: np.ndarray, b: np.ndarray, alpha: float = 0.05) -> float:
    """Share of simulations (one seed each: a[:, 0], b[:, 0]) with exact McNemar p < alpha."""
    return float(np.mean([mcnemar_exact(x[0] > 0, y[0] > 0)[2] < alpha for x, y in zip(a, b, strict=True)]))


def paired_pair(rng: np.random.Generator, n_sims: int, n_seeds: int, n_prompts: int, rate_a: float,
                rate_b: float, seed_sd: float, prompt_sd: float) -> tuple[np.ndarray, np.ndarray]:
    """Two methods' binary grids on shared prompts."""
    shared = rng.standard_normal((n_sims, n_prompts))
    return (binary_grids(rng, n_sims, n_seeds, n_prompts, rate_a, seed_sd, prompt_sd, shared),
            binary_grids(rng, n_sims, n_seeds, n_prompts, rate_b, seed_sd, prompt_sd, shared))


def main(n_sims: int = 1000) -> None:  # pragma: no cover - prints the table of docs/evaluation.md
    rng = np.random.default_rng(2026)
    print(f"{n_sims} simulated experiments per row, nominal 95 %\n")
    print("per run (bootstrap over 200 prompts):")
    for rate in (0.3, 0.05):
        x = (rng.random((n_sims, 200)) < rate).astype(float)
        print(f"  Bernoulli({rate}) rate: {coverage(mean_interval, x, rate)}")
    ppl, truth = lognormal_grids(rng, n_sims, 1, 200, 2.0, 0.0, 0.6, 0.4)
    print(f"  lognormal PPL mean:    {coverage(mean_interval, ppl[:, 0], truth)}")
    print("\nacross 3 seeds × 200 prompts:")
    scenarios = {"binary, seed sd 0.3, prompt sd 1.0 (logit)": binary_grids(rng, n_sims, 3, 200, 0.3, 0.3, 1.0),
                 "binary, seed sd 0.1, prompt sd 1.0": binary_grids(rng, n_sims, 3, 200, 0.3, 0.1, 1.0),
                 "binary, no seed effect, prompt sd 1.0": binary_grids(rng, n_sims, 3, 200, 0.3, 0.0, 1.0)}
    methods = {"variance components + t (used)": seed_prompt_interval, "pigeonhole bootstrap": pigeonhole_interval,
               "bootstrap over seed means": seed_bootstrap_interval,
               "bootstrap over prompts only": prompt_bootstrap_interval}
    for label, grids in scenarios.items():
        print(f"  {label}:")
        for name, method in methods.items():
            print(f"    {name:<32} {coverage(method, grids, 0.3, n_boot=500)}")
    ppl, truth = lognormal_grids(rng, n_sims, 3, 200, 2.0, 0.1, 0.6, 0.4)
    print("  lognormal PPL, seed sd 0.1, prompt sd 0.6, noise sd 0.4:")
    for name, method in methods.items():
        print(f"    {name:<32} {coverage(method, ppl, truth, n_boot=500)}")
    print("\npaired difference, 3 vs 3 seeds × 200 prompts (share with 95 % interval excluding 0):")
    for seed_sd in (0.1, 0.3):
        null = paired_pair(rng, n_sims, 3, 200, 0.3, 0.3, seed_sd, 1.0)
        planted = paired_pair(rng, n_sims, 3, 200, 0.3, 0.2, seed_sd, 1.0)
        print(f"  seed sd {seed_sd}: null {rejection_rate(*null):.3f}, planted 0.10: {rejection_rate(*planted):.3f}")
    for seed_sd in (0.0, 0.3):
        null = paired_pair(rng, n_sims, 1, 200, 0.3, 0.3, seed_sd, 1.0)
        planted = paired_pair(rng, n_sims, 1, 200, 0.3, 0.2, seed_sd, 1.0)
        print(f"  exact McNemar, 1 seed each, seed sd {seed_sd}: null {mcnemar_rejection_rate(*null):.3f}, "
              f"planted 0.10: {mcnemar_rejection_rate(*planted):.3f}")
        print(f"  paired bootstrap, 1 seed each, seed sd {seed_sd}: null {rejection_rate(*null):.3f}, "
              f"planted 0.10: {rejection_rate(*planted):.3f}")

if __name__ == "__main__":  # pragma: no cover
    main()
