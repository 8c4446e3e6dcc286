"""Paired comparisons of two methods evaluated on the same prompts.

**Paired difference** (:func:`paired_difference`). a: (S_a, P), b: (S_b, P), column p the same
prompt for both. The estimate is D = ȳ_a − ȳ_b. Under the crossed model of :mod:`.seeds` for each
method, with prompt effects that may be shared between the methods (hard prompts are hard for
both), the seeds of the two methods are independent and the prompts are common, so

    Var D = σ²_seed,a/S_a + σ²_seed,b/S_b + Var(b_a,p − b_b,p)/P + σ²_e,a/(S_a P) + σ²_e,b/(S_b P),

estimated without bias by

    V̂ = Σ_m [s²(ȳ_m,s·)/S_m − MS_E,m/(S_m P)] + s²(ȳ_a,·p − ȳ_b,·p)/P,

the prompt term being the variance of the per-prompt differences (pairing: what the prompts
share cancels). Interval: D ± t_{1−α/2, ν} √V̂ with Satterthwaite's ν (:func:`.seeds.t_interval`).
A method with one seed adds no seed term (its seed variance is not estimable; ``method`` says
so). With one seed for both, the interval is the paired percentile bootstrap over prompts (the
per-prompt differences resampled, ``n_boot`` resamples from ``seed``).

**Exact test on discordant prompts** (:func:`mcnemar_exact`), for a 0/1 metric of one seed
each: with n_10 prompts flagged by a only and n_01 by b only, under H0 (equal rates) n_10 ~
Binomial(n_10 + n_01, ½), and the two-sided p = min(1, 2 · P(X ≤ min(n_10, n_01))) (McNemar 1947,
exact form). Prompts both flag or neither flags carry no information about the difference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from unlearn.uncertainty.bootstrap import mean_interval
from unlearn.uncertainty.interval import Interval, undefined
from unlearn.uncertainty.seeds import prompt_term, seed_terms, summarise_grid, t_interval


def paired_difference(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, level: float = 0.95,
                      seed: int = 0) -> Interval:
    """mean(a) − mean(b) with an interval over the shared prompts and each method's seeds."""
    ga, gb = summarise_grid(a, "a"), summarise_grid(b, "b")
    if ga.prompt_means.shape != gb.prompt_means.shape:
        raise ValueError(f"a and b must share their prompt columns: a has {ga.prompt_means.shape[0]}, "
                         f"b has {gb.prompt_means.shape[0]}")
    missing = ga.n_missing + gb.n_missing
    if ga.n_obs == 0 or gb.n_obs == 0:
        return undefined("a or b has no values", level, missing)
    diffs = ga.prompt_means - gb.prompt_means  # NaN where a prompt lacks a value in either
    if ga.n_seeds == 1 and gb.n_seeds == 1:
        one = mean_interval(diffs, n_boot=n_boot, level=level, seed=seed)
        return Interval(ga.grand - gb.grand, one.lo, one.hi, level,
                        "paired percentile bootstrap over prompts; 1 seed each, so seed variance not included",
                        one.n, missing)
    if np.isfinite(diffs).sum() < 2:
        return undefined("needs ≥ 2 prompts with a value for both", level, missing)
    terms = [*seed_terms(ga), *seed_terms(gb), prompt_term(diffs)]
    method = (f"paired variance components (seeds {ga.n_seeds} vs {gb.n_seeds}, shared prompts "
              f"{int(np.isfinite(diffs).sum())}), Satterthwaite t")
    single = [name for name, g in (("a", ga), ("b", gb)) if g.n_seeds == 1]
    if single:
        method += f"; {single[0]} has 1 seed, its seed variance not included"
    return t_interval(ga.grand - gb.grand, terms, level, method, ga.n_obs + gb.n_obs, missing)


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> tuple[int, int, float]:
    """(n a-only, n b-only, two-sided exact p) over paired 0/1 outcomes (module docstring)."""
    if len(a) != len(b):
        raise ValueError(f"a and b must be paired (same prompts): {len(a)} vs {len(b)} values")
    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    a_only, b_only = int((x & ~y).sum()), int((~x & y).sum())
    n = a_only + b_only
    if n == 0:
        return a_only, b_only, 1.0
    tail = Fraction(sum(math.comb(n, k) for k in range(min(a_only, b_only) + 1)), 2**n)
    return a_only, b_only, float(min(Fraction(1), 2 * tail))
