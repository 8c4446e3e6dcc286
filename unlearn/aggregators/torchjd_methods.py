"""TorchJD's Gramian-based weightings as aggregators (UPGrad, DualProj, PCGrad, CAGrad, IMTL-G,
Aligned-MTL), computed from our float64 Gramian.

TorchJD (https://torchjd.org, ``torchjd.aggregation.<Method>Weighting``) maps a Gramian
``K = G Gᵀ`` to weights, exactly our :class:`Aggregator` contract; :class:`TorchJDAggregator`
wraps one such public ``Weighting`` and adds three rules (each has a test in
tests/test_torchjd_aggregators.py):

* **Scale first (``norm_eps`` immunity).** TorchJD's dual-cone projector (UPGrad, DualProj) and
  CAGrad call ``normalize(K, norm_eps)``: K / trace(K), but an all-zero matrix when
  ``trace(K) < norm_eps = 1e-4`` (absolute). UPGrad and DualProj then silently return the mean,
  CAGrad a zero step; IMTL-G's ``|Σ v| < 1e-12`` cut is absolute too. ``trace K = Σ ‖g_i‖²`` of an
  LLM's per-objective gradients can be below 1e-4. We pass ``K / trace(K)`` (trace 1; UPGrad and
  DualProj get the correlation matrix, see :class:`_DualConeMixin`), so every TorchJD threshold
  acts relative to the gradients' scale. This changes nothing else: the weights of all six
  methods are invariant under ``K → cK`` (c > 0), so ``d = wᵀG`` scales like the gradients
  (checked against TorchJD on well-scaled K in the tests).
* **Zero gradients** (``‖g_i‖ ≤ zero_tol · max‖g_j‖``, the rule of ``dual`` and ``mgda``) are
  dropped before calling TorchJD (weight 0). At step 0 the KL gradient is exactly 0; CAGrad's
  min over the hull can then sit at that vertex, and TorchJD returns d = 0 (a test shows one). Methods whose
  weights are linear in TorchJD's default preference vector ``1/m`` get their weights multiplied
  by ``kept/m``, so dropping an exact zero reproduces TorchJD's direction on the full K and ‖d‖
  does not jump by m/(m−1) when a gradient crosses ``zero_tol``.
* **All-zero Gramian:** zero weights, ``info['stationary'] = 1`` (no 0/0).

``torchjd`` is imported lazily, at the first aggregation (CAGrad also needs cvxpy: the
``torchjd[cagrad]`` extra). Install: ``pip install "torchjd[quadprog-projector,cagrad]"``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from unlearn.aggregators.base import AggregationResult, Aggregator
from unlearn.aggregators.mgda import drop_zero_gradients

ZERO_TOL = 1e-6


class TorchJDAggregator(Aggregator):
    """Adapter: our float64 Gramian → the weights of one ``torchjd.aggregation`` weighting.

    Subclasses set :attr:`linear_in_preference` and implement :meth:`_make_weighting`.
    """

    name = "torchjd"
    #: weights are linear in TorchJD's default preference vector (1/m, …, 1/m): after dropping
    #: zero gradients, multiply the weights of the kept ones by kept/m.
    linear_in_preference = True

    def __init__(self, zero_tol: float = ZERO_TOL) -> None:
        if not 0 <= zero_tol < 1:
            raise ValueError(f"zero_tol is a relative tolerance in [0, 1), got {zero_tol}")
        self.zero_tol = zero_tol
        self._weighting: Any = None  # built at the first call: no torchjd import at config time

    def _make_weighting(self) -> Any:
        """Return the ``torchjd.aggregation`` Weighting instance (imports torchjd)."""
        raise NotImplementedError

    def _weighting_instance(self) -> Any:
        if self._weighting is None:
            self._weighting = self._make_weighting()
        return self._weighting

    def _weights(self, gramian: torch.Tensor) -> torch.Tensor:
        """TorchJD's weights for the kept gradients' Gramian (float64, no zero rows), computed
        on ``K / trace K`` (the weights of every method here are invariant under K → cK)."""
        with torch.no_grad():
            return self._weighting_instance()(gramian / torch.diagonal(gramian).sum())

    def aggregate(self, gramian: torch.Tensor) -> AggregationResult:
        k = gramian.to(torch.float64)
        m = k.shape[0]
        weights = torch.zeros(m, dtype=torch.float64)
        info = {"dropped": 0.0, "stationary": 0.0}
        if torch.diagonal(k).max() <= 0:  # every gradient is 0 (the diagonal of a PSD K is ≥ 0)
            info["stationary"] = 1.0
            return AggregationResult(weights, info)
        active = drop_zero_gradients(k, self.zero_tol)
        info["dropped"] = float(m - active.numel())
        sub = k[active][:, active]
        w = self._weights((sub + sub.T) / 2).to(torch.float64)
        if not torch.isfinite(w).all():
            raise FloatingPointError(f"{type(self).__name__}: non-finite weights {w.tolist()}")
        if self.linear_in_preference:
            w = w * (active.numel() / m)
        weights[active] = w
        if not (w != 0).any():  # CAGrad on the Pareto front, IMTL-G with Σv = 0
            info["stationary"] = 1.0
        return AggregationResult(weights, info)


class _DualConeMixin:
    """UPGrad and DualProj, solved on the correlation matrix ``C = D K D`` (D = diag(1/‖g_i‖)).

    Both project onto the dual cone {x : G x ≥ 0}, which positive row scaling leaves unchanged,
    and are linear in their preference vector u (d = Σ_i π(u_i g_i), resp. π(Σ_i u_i g_i)). So
    the unit gradients ĝ_i with u_i = ‖g_i‖/m give the same d, with weights v on the ĝ_i and
    w_i = v_i / ‖g_i‖.

    TorchJD regularises the QP with ``reg_eps · I`` so that quadprog's Cholesky succeeds, which
    loosens each constraint to ``(C v)_j ≥ -reg_eps · v_j``. On TorchJD's K / trace K (reg_eps =
    1e-4) that swamps every gradient with ‖g_j‖² ≲ 1e-4 Σ‖g_i‖² (the KL gradient of the first
    steps): on random matrices whose norms spread over a few decades, g_j·d/(‖g_j‖‖d‖) reached
    -0.37. On C (unit diagonal) the loosening is the same small fraction for every gradient. We
    add ``reg_eps`` (default 1e-6) plus whatever lifts C's smallest eigenvalue, negative after
    the Gramian's rounding (~6e-7 of ‖g_i‖‖g_j‖ for bf16 gradients), back to 0.
    """

    def __init__(self, zero_tol: float = ZERO_TOL, reg_eps: float = 1e-6) -> None:
        super().__init__(zero_tol)  # type: ignore[call-arg]
        if not 0 < reg_eps < 1:
            raise ValueError(f"reg_eps is relative to C's unit diagonal, in (0, 1): got {reg_eps}")
        self.reg_eps = float(reg_eps)

    def _projector(self) -> Any:
        from torchjd.linalg import QuadprogProjector

        # norm_eps = 0: TorchJD's own K / trace K never turns into the zero matrix (the mean).
        return QuadprogProjector(norm_eps=0.0, reg_eps=self.reg_eps)

    def _weights(self, gramian: torch.Tensor) -> torch.Tensor:
        norms = torch.diagonal(gramian).sqrt()
        corr = gramian / torch.outer(norms, norms)
        relative = norms / norms.max()
        weighting = self._weighting_instance()  # type: ignore[attr-defined]
        weighting.pref_vector = relative / gramian.shape[0]
        lowest = float(torch.linalg.eigvalsh(corr)[0])  # < 0 only through rounding
        weighting.projector.reg_eps = self.reg_eps + max(0.0, -lowest)
        with torch.no_grad():
            return weighting(corr) / relative


class UPGrad(_DualConeMixin, TorchJDAggregator):
    """UPGrad (Quinton & Rey 2024, arXiv:2406.16232): d = (1/m) Σ_i π_K(g_i), each g_i projected
    onto the dual cone {x : G x ≥ 0}; non-conflicting (g_j·d ≥ 0) and linear under scaling."""

    name = "upgrad"

    def _make_weighting(self) -> Any:
        from torchjd.aggregation import UPGradWeighting

        return UPGradWeighting(projector=self._projector())


class DualProj(_DualConeMixin, TorchJDAggregator):
    """DualProj (GEM, Lopez-Paz & Ranzato 2017, eq. 11): d = π(ḡ), the mean gradient projected
    onto the dual cone {x : G x ≥ 0}; non-conflicting."""

    name = "dualproj"

    def _make_weighting(self) -> Any:
        from torchjd.aggregation import DualProjWeighting

        return DualProjWeighting(projector=self._projector())


class PCGrad(TorchJDAggregator):
    """PCGrad (Yu et al. 2020, arXiv:2001.06782): d = Σ_i g_i^PC, each g_i stripped of its
    component along every g_j it conflicts with (g_i^PC·g_j < 0), j in a random order.

    The order is drawn from a generator seeded by a hash of K's *scale-free signature* (TorchJD
    draws from torch's global RNG): the signs of the off-diagonal entries and the order of the
    diagonal, both unchanged by ``K → cK`` (c > 0). So the weights are a pure function of K,
    invariant to the gradients' scale like every other method here (a hash of K's bytes changed
    them by 5–7 % under rescaling), and training's own random stream is untouched.
    """

    name = "pcgrad"
    linear_in_preference = False  # a sum, not a mean: an exactly zero g_i contributes nothing

    def _make_weighting(self) -> Any:
        from torchjd.aggregation import PCGradWeighting

        return PCGradWeighting()

    def _weights(self, gramian: torch.Tensor) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):  # saves and restores the CPU generator only
            torch.random.default_generator.manual_seed(scale_free_seed(gramian))
            return super()._weights(gramian)


def scale_free_seed(gramian: torch.Tensor) -> int:
    """A 64-bit seed from what ``K → cK`` (c > 0) leaves exactly unchanged: the sign of every
    off-diagonal entry and the stable order of the diagonal."""
    k = gramian.detach().to(torch.float64).cpu()
    signs = torch.sign(k).to(torch.int8).contiguous().numpy().tobytes()
    order = torch.argsort(torch.diagonal(k), stable=True).to(torch.int64).contiguous().numpy().tobytes()
    return int.from_bytes(hashlib.blake2b(signs + order, digest_size=8).digest(), "little")


class CAGrad(TorchJDAggregator):
    """CAGrad (Liu et al. 2021, arXiv:2110.14048): d = ḡ + c‖ḡ‖ g_w/‖g_w‖ with
    w = argmin_{w ∈ Δ} g_wᵀḡ + c‖ḡ‖‖g_w‖; c = 0 is the mean, c → ∞ approaches MGDA.

    ``norm_eps``: TorchJD returns zero weights ("on the Pareto front") when ‖g_w‖ < norm_eps; on
    our trace-1 K that is relative to ‖G‖_F. TorchJD's 1e-4 stopped every step of a tiny_random
    run: with a forget gradient ~1e-4 of the retain one and conflicting with it, g_w is that small.
    1e-6 (= zero_tol) stays above the solver's accuracy on w (~1e-8).
    """

    name = "cagrad"

    def __init__(self, c: float = 0.4, norm_eps: float = 1e-6, zero_tol: float = ZERO_TOL) -> None:
        super().__init__(zero_tol)
        if not c >= 0:
            raise ValueError(f"CAGrad's c must be non-negative, got {c}")
        if not 0 < norm_eps < 1:
            raise ValueError(f"norm_eps is relative to ‖G‖_F, in (0, 1): got {norm_eps}")
        self.c = float(c)
        self.norm_eps = float(norm_eps)

    def _make_weighting(self) -> Any:
        from torchjd.aggregation import CAGradWeighting

        return CAGradWeighting(c=self.c, norm_eps=self.norm_eps)


class IMTLG(TorchJDAggregator):
    """IMTL-G (Liu et al. 2021, "Towards Impartial Multi-task Learning"; generalised in
    arXiv:2406.16232): w ∝ K⁺ √diag(K), Σ w = 1, so d has equal projections g_i·d/‖g_i‖."""

    name = "imtlg"
    linear_in_preference = False  # the weights sum to 1 by definition

    def _make_weighting(self) -> Any:
        from torchjd.aggregation import IMTLGWeighting

        return IMTLGWeighting()


class AlignedMTL(TorchJDAggregator):
    """Aligned-MTL (Senushkin et al., CVPR 2023): w = √λ_s V Λ^{-1/2} Vᵀ (1/m) with K = VΛVᵀ
    (rank-truncated), i.e. the gradients whitened to a condition number of 1, then averaged."""

    name = "alignedmtl"

    def __init__(self, scale_mode: str = "min", zero_tol: float = ZERO_TOL) -> None:
        super().__init__(zero_tol)
        if scale_mode not in {"min", "median", "rmse"}:
            raise ValueError(f"scale_mode must be min, median or rmse, got {scale_mode!r}")
        self.scale_mode = scale_mode

    def _make_weighting(self) -> Any:
        from torchjd.aggregation import AlignedMTLWeighting

        return AlignedMTLWeighting(scale_mode=self.scale_mode)
