"""MGDA (Désidéri 2012; Sener & Koltun 2018): the min-norm point of the convex hull of the
gradients,

    w* = argmin_{w ∈ Δ_m} wᵀ K w,        d = Σ_i w*_i g_i.

Solved exactly on the Gramian by enumerating the faces of the simplex: on a face with support S
the stationarity conditions are ``K_S w_S = μ 1, 1ᵀ w_S = 1`` (a small linear system); the
optimum is the feasible candidate with the smallest objective. Exact, dependency-free and cheap
for the handful of objectives this suite uses (2^m - 1 systems of size ≤ m + 1).

At the optimum ``g_j · d = (K w*)_j ≥ ‖d‖²`` for every j (KKT), so d is a common descent
direction whenever one exists; d = 0 means the point is Pareto-stationary.

Numerical rules (each has a test):

* **Zero gradients** (``‖g_i‖ ≤ zero_tol · max_j ‖g_j‖``, the same relative rule as ``dual``) are
  dropped before solving, weight 0. An exactly zero g_i puts the origin in the hull, so the
  min-norm point would be d = 0 at every step while the model equals its reference (the KL
  gradient at step 0): MGDA would never move. A zero gradient's objective is flat to first order
  in every direction, so it constrains nothing; the others keep ``g_j·d ≥ ‖d‖²``.
* **Relative comparisons.** Each face is solved in the variables ``v_i = ‖g_i‖ w_i`` on the
  correlation matrix, so gradients whose norms span many decades stay well conditioned, and a
  candidate replaces the best one when its value is lower by a *relative* margin (ties keep the
  smaller face). An absolute margin silently preferred a vertex that violates KKT when the
  norms spanned 12 decades.
"""

from __future__ import annotations

import itertools

import torch

from unlearn.aggregators.base import AggregationResult, Aggregator

MAX_OBJECTIVES = 12
ZERO_TOL = 1e-6
TIE_RTOL = 1e-9  # a candidate must beat the best value by this fraction to replace it


def min_norm_weights(gramian: torch.Tensor, tol: float = 1e-12) -> torch.Tensor:
    """Weights of the min-norm point of conv{g_i}, from ``K`` alone (float64)."""
    k = gramian.to(torch.float64)
    m = k.shape[0]
    if m > MAX_OBJECTIVES:
        raise ValueError(f"exact MGDA enumerates faces; {m} objectives exceeds {MAX_OBJECTIVES}")
    norms = torch.diagonal(k).clamp_min(0.0).sqrt()
    if norms.max() <= 0:
        return torch.full((m,), 1.0 / m, dtype=torch.float64)
    best_w, best_val = None, float("inf")
    for size in range(1, m + 1):
        for support in itertools.combinations(range(m), size):
            w = _face_minimiser(k, norms, list(support))
            if w is None or (w < -tol).any():
                continue
            w = w.clamp_min(0.0)
            w = w / w.sum()
            val = float(w @ k @ w)
            if best_w is None or val < best_val - TIE_RTOL * abs(best_val):
                best_w, best_val = w, val
    assert best_w is not None  # every vertex (|S| = 1) is feasible
    return best_w


def _face_minimiser(k: torch.Tensor, norms: torch.Tensor, support: list[int]) -> torch.Tensor | None:
    """Minimiser of wᵀKw on the affine hull of the face S, or None (unsolvable or zero norm).

    With ``v = D⁻¹ w`` (``D = diag(1/‖g_i‖)``) the conditions ``K_S w = μ 1, 1ᵀ w = 1`` become
    ``C_S v = μ s, sᵀ v = 1`` with ``s_i = 1/‖g_i‖`` and the correlation matrix C; s is
    normalised to unit length (μ and the constraint rescale together). Solved by least squares.
    """
    n_s = norms[support]
    if (n_s <= 0).any():
        return None
    s = 1.0 / n_s
    scale = s.norm()
    s = s / scale
    corr = k[support][:, support] / torch.outer(n_s, n_s)
    size = len(support)
    system = torch.zeros(size + 1, size + 1, dtype=torch.float64)
    system[:size, :size] = corr
    system[:size, size] = -s
    system[size, :size] = s
    rhs = torch.zeros(size + 1, dtype=torch.float64)
    rhs[size] = 1.0
    sol = torch.linalg.lstsq(system, rhs.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    if not torch.isfinite(sol).all():
        return None
    w_s = sol[:size] * s  # w = D v, up to the common factor 1/scale that 1ᵀw = 1 removes
    total = float(w_s.sum())
    if not total > 0 or abs(float(s @ sol[:size]) - 1.0) > 1e-8:
        return None
    w = torch.zeros(k.shape[0], dtype=torch.float64)
    w[support] = w_s / total
    return w


def drop_zero_gradients(gramian: torch.Tensor, zero_tol: float) -> torch.Tensor:
    """Indices i with ``‖g_i‖ > zero_tol · max_j ‖g_j‖`` (all of them if every g_i is 0)."""
    norms = torch.diagonal(gramian).clamp_min(0.0).sqrt()
    if norms.max() <= 0:
        return torch.arange(gramian.shape[0])
    return torch.nonzero(norms > zero_tol * norms.max()).flatten()


class MGDA(Aggregator):
    name = "mgda"

    def __init__(self, zero_tol: float = ZERO_TOL) -> None:
        if not 0 <= zero_tol < 1:
            raise ValueError(f"zero_tol is a relative tolerance in [0, 1), got {zero_tol}")
        self.zero_tol = zero_tol

    def aggregate(self, gramian: torch.Tensor) -> AggregationResult:
        m = gramian.shape[0]
        active = drop_zero_gradients(gramian, self.zero_tol)
        weights = torch.zeros(m, dtype=torch.float64)
        weights[active] = min_norm_weights(gramian[active][:, active])
        return AggregationResult(weights, {"dropped": float(m - active.numel())})
