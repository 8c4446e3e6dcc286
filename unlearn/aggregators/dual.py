"""Dual-space common descent direction (MOLLM, DESIGN.md §1).

Edge i of the dual cone is g_i projected onto the orthogonal complement of the span of the
other gradients,

    d_i = (I - G_{-i}ᵀ (G_{-i} G_{-i}ᵀ)^{-1} G_{-i}) g_i ,      d = (1/m) Σ_i d_i ,

so ``g_j · d = ‖d_j‖² / m ≥ 0`` for every j. Everything comes from the Gramian: on the
correlation matrix ``C = D K D`` (``D = diag(1/‖g_i‖)``), the unit-gradient edge is
``d̂_i = Σ_j (C⁻¹)_ij ĝ_j / (C⁻¹)_ii`` (the dual basis, rescaled so its ĝ_i coefficient is 1),
with ``‖d̂_i‖² = 1 / (C⁻¹)_ii = sin²`` of the angle between g_i and the others' span, and
``d_i = ‖g_i‖ d̂_i``. No n×n projector and no full Jacobian is ever formed.

Numerical rules (each has a test):

* **Zero gradients.** ``‖g_i‖ ≤ zero_tol · max_j ‖g_j‖`` is dropped from the basis (weight 0).
  Its objective is flat to first order: ``|g_i·d| ≤ zero_tol · max‖g‖ · ‖d‖``.
* **One rank cut.** C (of the kept gradients) is full rank when
  ``λ_min(C) > rank_tol · λ_max(C)``; then every edge is used, and each has
  ``sin² ≥ λ_min > rank_tol · λ_max`` so none is "vanished" by a second test. The default
  ``rank_tol`` = 1e-3 sits above what the Gramian's rounding can move: measured on SmolLM2-sized
  tensors, ``|ΔK_ij| / (‖g_i‖‖g_j‖)`` is 6e-7 for bf16-valued gradients and 7e-9 for fp32 ones,
  and with errors of 6e-7 a cut at 1e-5 (1e-4) flipped the sign of some g_j·d in 6 % (0.2 %) of
  random near-parallel cases, 1e-3 in none (tests/test_aggregators.py). For two gradients at
  angle θ, C's eigenvalue ratio is tan²(θ/2), so the cut treats gradients within 3.6° of each
  other (of the others' span, for m > 2) as dependent; objective gradients of an LLM are far
  apart (``min_sin2`` in the run's metrics says how far).
* **Blend into the fallback.** As two gradients align, the mean edge shrinks like (1 − cos θ)
  (‖d‖ = 0.129 at 30°, 0.015 at 10°, 0.002 at 3.7° for unit gradients) while MGDA's min-norm
  point tends to their common direction (‖d‖ → 1): switching at the cut would make d jump
  ~480×. Between ``rank_tol`` and ``blend · rank_tol`` (3.6° to 11.4° for two gradients at the
  defaults) the weights are ``(1 − α) w_dual + α w_MGDA`` with
  ``α = log(blend·rank_tol / ratio) / log(blend)``, so d moves continuously from the dual
  direction to the fallback (``info['mgda_share'] = α``). Both directions satisfy g_j·d ≥ 0,
  and so does every convex combination: the blend keeps the common-descent guarantee.
  ``blend = 1`` restores the hard switch.
* **Rank-deficient C** (some g_i lies, to the Gramian's accuracy, in the span of the others):
  the dual cone has no interior edge for those gradients, and the edges that remain are not
  determined by the data at this accuracy. We return the MGDA min-norm direction of the kept
  gradients instead (``info['fallback_mgda'] = 1``): ``g_j·d ≥ ‖d‖²`` for every kept j, a common
  descent direction whenever one exists. If ``‖d‖ ≤ zero_tol · max‖g‖`` the point is
  Pareto-stationary: zero step, ``info['stationary'] = 1``.
* **Dividing by m**, the number of objectives, not by the number of kept gradients: a dropped
  gradient contributes its (vanishing) edge 0, so ‖d‖ does not jump by m/(m−1) when ‖g_i‖
  crosses ``zero_tol``.
"""

from __future__ import annotations

import math

import torch

from unlearn.aggregators.base import AggregationResult, Aggregator
from unlearn.aggregators.mgda import drop_zero_gradients, min_norm_weights

ZERO_TOL = 1e-6
RANK_TOL = 1e-3
BLEND = 10.0


def dual_space_weights(
    gramian: torch.Tensor, zero_tol: float = ZERO_TOL, rank_tol: float = RANK_TOL, blend: float = BLEND
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weights w with ``wᵀ G = (1/m) Σ_i d_i`` (blended into MGDA near the rank cut, see the
    module docstring), plus diagnostic flags."""
    k = gramian.to(torch.float64)
    m = k.shape[0]
    norms = torch.diagonal(k).clamp_min(0.0).sqrt()
    info = {"dropped": 0.0, "fallback_mgda": 0.0, "mgda_share": 0.0, "stationary": 0.0, "min_sin2": 0.0}
    weights = torch.zeros(m, dtype=torch.float64)
    if norms.max() <= 0:
        info["stationary"] = 1.0
        return weights, info
    active = drop_zero_gradients(k, zero_tol)
    info["dropped"] = float(m - active.numel())
    n_act = norms[active]
    k_act = k[active][:, active]
    corr = k_act / torch.outer(n_act, n_act)
    corr = (corr + corr.T) / 2
    eigenvalues, eigenvectors = torch.linalg.eigh(corr)
    ratio = float(eigenvalues[0] / eigenvalues[-1])
    if ratio > rank_tol:
        inverse = (eigenvectors / eigenvalues) @ eigenvectors.T
        sin2 = 1.0 / torch.diagonal(inverse)
        info["min_sin2"] = float(sin2.min())
        # row i: coefficients of d_i on the raw g_j = ‖g_i‖ (C⁻¹)_ij / ((C⁻¹)_ii ‖g_j‖)
        edges = inverse * sin2.unsqueeze(1) * n_act.unsqueeze(1) / n_act.unsqueeze(0)
        dual = edges.sum(dim=0) / m
        if ratio < blend * rank_tol:  # near the cut: blend continuously into the fallback
            share = math.log(blend * rank_tol / ratio) / math.log(blend)
            info["mgda_share"] = share
            dual = (1.0 - share) * dual + share * min_norm_weights(k_act)
        weights[active] = dual
        return weights, info

    info["fallback_mgda"] = 1.0
    info["mgda_share"] = 1.0
    w_sub = min_norm_weights(k_act)
    if float(w_sub @ k_act @ w_sub) <= (zero_tol * float(norms.max())) ** 2:  # ‖d‖ ≤ zero_tol·max‖g‖
        info["stationary"] = 1.0
        return weights, info
    weights[active] = w_sub
    return weights, info


class DualSpace(Aggregator):
    """MOLLM's aggregator: the mean of the edges of the dual cone of the gradients."""

    name = "dual"

    def __init__(self, zero_tol: float = ZERO_TOL, rank_tol: float = RANK_TOL, blend: float = BLEND) -> None:
        if not (0 <= zero_tol < 1 and 0 < rank_tol < 1):
            raise ValueError("zero_tol in [0, 1) and rank_tol in (0, 1) are relative tolerances")
        if not (blend >= 1 and blend * rank_tol < 1):
            raise ValueError(f"blend must be ≥ 1 (1: hard switch) with blend·rank_tol < 1, got {blend}")
        self.zero_tol = zero_tol
        self.rank_tol = rank_tol
        self.blend = blend

    def aggregate(self, gramian: torch.Tensor) -> AggregationResult:
        weights, info = dual_space_weights(gramian, self.zero_tol, self.rank_tol, self.blend)
        return AggregationResult(weights, info)
