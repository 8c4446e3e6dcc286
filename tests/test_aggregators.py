"""Property tests of the aggregators on random float64 matrices (TorchJD style)."""

from __future__ import annotations

import math

import pytest
import torch

from unlearn.aggregators import (
    IMTLG,
    MGDA,
    AlignedMTL,
    CAGrad,
    DualProj,
    DualSpace,
    PCGrad,
    UPGrad,
    WeightedSum,
    dual_space_weights,
    gramian_of,
    min_norm_weights,
)

SEEDS = range(20)

# Every Gramian-based aggregator, ours and TorchJD's (unlearn/aggregators/torchjd_methods.py), for
# the shared property tests below. weighted_sum ignores K and has none of these properties.
AGGREGATORS = {
    "dual": DualSpace(),
    "mgda": MGDA(),
    "upgrad": UPGrad(),
    "dualproj": DualProj(),
    "pcgrad": PCGrad(),
    "cagrad": CAGrad(),
    "imtlg": IMTLG(),
    "alignedmtl": AlignedMTL(),
}


def aggregators(*excluded: str) -> list:
    return [pytest.param(agg, id=name) for name, agg in AGGREGATORS.items() if name not in excluded]


# Non-conflicting (g_j·d ≥ 0 for every j) by construction: dual and MGDA exactly; UPGrad and
# DualProj (TorchJD's table) up to the QP's reg_eps, which loosens g_j·d ≥ 0 to
# (C v)_j ≥ -reg_eps·v_j on the correlation matrix (measured: ≥ -6e-6 ‖g_j‖‖d‖ over 300 seeds).
# PCGrad, CAGrad, IMTL-G and Aligned-MTL are not non-conflicting (TorchJD's table).
NON_CONFLICTING = {"dual": 1e-10, "mgda": 1e-10, "upgrad": 50 * UPGrad().reg_eps,
                   "dualproj": 50 * DualProj().reg_eps}


def random_matrix(seed: int, m: int = 3, n: int = 12) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scales = torch.exp(torch.randn(m, 1, generator=gen, dtype=torch.float64) * 2)
    return torch.randn(m, n, generator=gen, dtype=torch.float64) * scales


def direction(aggregator, matrix: torch.Tensor) -> torch.Tensor:
    return aggregator(gramian_of(matrix)).weights @ matrix


def explicit_dual_direction(matrix: torch.Tensor) -> torch.Tensor:
    """DESIGN.md §1 literally: d_i = (I - G_{-i}ᵀ (G_{-i} G_{-i}ᵀ)^{-1} G_{-i}) g_i, d = mean."""
    m, n = matrix.shape
    edges = []
    for i in range(m):
        others = matrix[[j for j in range(m) if j != i]]
        projector = torch.eye(n, dtype=torch.float64) - others.T @ torch.linalg.inv(others @ others.T) @ others
        edges.append(projector @ matrix[i])
    return torch.stack(edges).mean(0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("m", [2, 3, 5])
def test_dual_equals_explicit_projection_formula(seed: int, m: int) -> None:
    g = random_matrix(seed, m=m)
    expected = explicit_dual_direction(g)
    torch.testing.assert_close(direction(DualSpace(), g), expected, rtol=1e-7, atol=1e-9 * expected.norm())


@pytest.mark.parametrize("seed", SEEDS)
def test_dual_is_common_descent_direction_at_full_rank(seed: int) -> None:
    g = random_matrix(seed)
    d = direction(DualSpace(), g)
    products = g @ d
    assert (products >= -1e-10 * g.norm(dim=1) * d.norm()).all(), products
    # g_j · d = ‖d_j‖² / m > 0 for generic (full-rank) gradients
    assert (products > 0).all()


def test_weighted_sum_can_increase_an_objective() -> None:
    """The failure mode the dual direction avoids: an obtuse angle with one gradient."""
    g = torch.tensor([[1.0, 0.0], [-0.9, 0.1]], dtype=torch.float64)
    d_ws = direction(WeightedSum([1.0, 1.0]), g)
    d_dual = direction(DualSpace(), g)
    assert (g @ d_ws).min() < 0
    assert (g @ d_dual).min() >= 0


# PCGrad is excluded: it projects in a random order (Yu et al. 2020, Algorithm 1; TorchJD draws a
# permutation per gradient), so with 3 or more gradients its result depends on the order.
@pytest.mark.parametrize("aggregator", aggregators("pcgrad"))
@pytest.mark.parametrize("seed", SEEDS)
def test_permutation_invariance(aggregator, seed: int) -> None:
    g = random_matrix(seed)
    perm = torch.randperm(3, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(direction(aggregator, g[perm]), direction(aggregator, g))


# PCGrad included: its random order is seeded by K's scale-free signature (off-diagonal signs,
# diagonal order), so K → cK draws the same order; for a fixed order its weights (ratios
# K_ij / K_jj) are scale-invariant.
@pytest.mark.parametrize("aggregator", aggregators())
@pytest.mark.parametrize("scale", [1e-6, 0.37, 5.0, 1e4])
@pytest.mark.parametrize("seed", [3, 11, 29])
def test_equivariance_under_positive_scaling(aggregator, scale: float, seed: int) -> None:
    g = random_matrix(seed)
    torch.testing.assert_close(direction(aggregator, scale * g), scale * direction(aggregator, g))


@pytest.mark.parametrize("aggregator", [pytest.param(AGGREGATORS[n], id=n) for n in NON_CONFLICTING])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("m", [3, 5])
def test_non_conflicting(aggregator, seed: int, m: int) -> None:
    """g_j · d ≥ -tol ‖g_j‖‖d‖ for every j, on random full-rank matrices."""
    g = random_matrix(seed, m=m)
    d = direction(aggregator, g)
    tol = NON_CONFLICTING[aggregator.name]
    products = g @ d
    assert (products >= -tol * g.norm(dim=1) * d.norm()).all(), products / (g.norm(dim=1) * d.norm())


@pytest.mark.parametrize("m", [2, 3, 4])
def test_orthogonal_gradients_give_their_mean(m: int) -> None:
    q, _ = torch.linalg.qr(torch.randn(10, m, dtype=torch.float64, generator=torch.Generator().manual_seed(m)))
    g = q.T * torch.tensor([0.5, 2.0, 7.0, 1.0][:m], dtype=torch.float64).unsqueeze(1)
    torch.testing.assert_close(direction(DualSpace(), g), g.mean(0))


def test_zero_gradient_is_dropped_not_inverted() -> None:
    """Step 0 of training: g_KL is exactly zero; the others must still make progress."""
    g = random_matrix(1)
    g[1] = 0.0
    result = DualSpace()(gramian_of(g))
    d = result.weights @ g
    assert torch.isfinite(result.weights).all()
    assert result.weights[1] == 0
    assert result.info["dropped"] == 1
    # with g_1 gone, d is the sum of the remaining pair's edges over m = 3 (not over the 2 kept)
    torch.testing.assert_close(d, 2 / 3 * explicit_dual_direction(g[[0, 2]]))
    assert (g[[0, 2]] @ d > 0).all()


def test_tiny_but_nonzero_gradient_is_kept_and_scale_aware() -> None:
    g = random_matrix(2)
    g[1] *= 1e-5 / g[1].norm()  # far smaller than the others, far above zero_tol
    result = DualSpace()(gramian_of(g))
    assert result.info["dropped"] == 0
    assert ((g @ (result.weights @ g)) >= 0).all()


@pytest.mark.parametrize("case", ["collinear_same", "collinear_opposite", "all_zero", "two_parallel"])
def test_degenerate_inputs_give_finite_directions(case: str) -> None:
    base = random_matrix(4)
    g = {
        "collinear_same": torch.stack([base[0], 2 * base[0], 0.5 * base[0]]),
        "collinear_opposite": torch.stack([base[0], -base[0], 3 * base[0]]),
        "all_zero": torch.zeros(3, 12, dtype=torch.float64),
        "two_parallel": torch.stack([base[0], 3 * base[0], base[1]]),
    }[case]
    result = DualSpace()(gramian_of(g))
    d = result.weights @ g
    assert torch.isfinite(result.weights).all() and torch.isfinite(d).all()
    products = g @ d
    assert (products >= -1e-9 * (g.norm() * d.norm() + 1e-30)).all()
    if case == "collinear_same":  # fallback: MGDA's min-norm point, a real descent step
        assert result.info["fallback_mgda"] == 1
        assert d.norm() > 0 and (products > 0).all()
    if case in {"collinear_opposite", "all_zero"}:  # Pareto-stationary: zero step, flagged
        assert result.info["stationary"] == 1
        assert d.norm() == 0
    if case == "two_parallel":  # rank-deficient: MGDA's min-norm point, descent for all three
        assert result.info["fallback_mgda"] == 1
        assert d.norm() > 0 and (products > 0).all()


def test_nearly_parallel_gradients_stay_finite() -> None:
    g = random_matrix(5)
    g[1] = g[0] + 1e-9 * g[2]
    result = DualSpace()(gramian_of(g))
    d = result.weights @ g
    assert torch.isfinite(d).all()
    assert d.norm() < 10 * g.norm()  # no blow-up from inverting an ill-conditioned K


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("m", [2, 3, 4])
def test_mgda_satisfies_kkt(seed: int, m: int) -> None:
    """w on the simplex, (K w)_j ≥ wᵀKw for all j, with equality on the support."""
    g = random_matrix(seed, m=m, n=max(m - 1, 2) if seed % 2 else 12)  # also rank-deficient
    k = gramian_of(g)
    w = min_norm_weights(k)
    value = w @ k @ w
    scale = torch.diagonal(k).max()
    assert (w >= 0).all() and torch.isclose(w.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert ((k @ w) >= value - 1e-9 * scale).all()
    support = w > 1e-9
    torch.testing.assert_close((k @ w)[support], value.expand(int(support.sum())), rtol=1e-6, atol=1e-9 * scale)


def test_mgda_matches_brute_force_min_norm() -> None:
    g = random_matrix(7)
    k = gramian_of(g)
    grid = torch.linspace(0, 1, 201, dtype=torch.float64)
    best = min(float(torch.stack([a, b, 1 - a - b]) @ k @ torch.stack([a, b, 1 - a - b]))
               for a in grid for b in grid if a + b <= 1)
    w = min_norm_weights(k)
    assert float(w @ k @ w) <= best + 1e-12


def test_weighted_sum_rejects_wrong_length() -> None:
    with pytest.raises(ValueError, match="3 objectives"):
        WeightedSum([1.0, 1.0])(torch.eye(3, dtype=torch.float64))


def test_aggregators_reject_nonfinite_gramian() -> None:
    k = torch.eye(3, dtype=torch.float64)
    k[0, 0] = float("nan")
    for aggregator in (*AGGREGATORS.values(), WeightedSum()):
        with pytest.raises(ValueError, match="NaN"):
            aggregator(k)


def test_dual_space_weights_do_not_mutate_input() -> None:
    k = gramian_of(random_matrix(8))
    before = k.clone()
    dual_space_weights(k)
    assert torch.equal(k, before)


# ------------------------------------------- numerics near the edges (docs/geometry.md, "Numerics")


def test_dual_divides_by_m_so_the_step_is_continuous_at_zero_tol() -> None:
    """A gradient crossing zero_tol must not rescale d by m/(m-1) (it was ×1.5 for m = 3)."""
    q, _ = torch.linalg.qr(torch.randn(12, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    g = q.T.clone()
    g[0] = 2.0 * q[:, 0] + 0.5 * q[:, 2]  # forget and retain correlated, the tiny one orthogonal to both
    g[2] = q[:, 2]
    g[1] = q[:, 1]
    norms = []
    for factor in (2.0, 0.5):  # just above and just below zero_tol relative to max‖g‖
        h = g.clone()
        h[1] *= factor * DualSpace().zero_tol * g[0].norm()
        result = DualSpace()(gramian_of(h))
        norms.append(float((result.weights @ h).norm()))
    assert norms[0] == pytest.approx(norms[1], rel=1e-5)


def _bf16_near_parallel(one_minus_cos: float, seed: int, n: int = 512) -> torch.Tensor:
    """Three bf16-valued gradients (held in float64): g1 = g0 + δ e_0 with g0[0] = 0, so
    1 - cos(g0, g1) ≈ δ²/(2‖g0‖²) = one_minus_cos exactly representable; g2 leans along e_0, the
    direction that separates g0 from g1, so a rank decision taken in one place and not in
    another shows up as a wrong edge for g2."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(n, generator=gen, dtype=torch.float64).to(torch.bfloat16).to(torch.float64)
    base[0] = 0.0
    third = torch.randn(n, generator=gen, dtype=torch.float64)
    e0 = torch.zeros(n, dtype=torch.float64)
    e0[0] = 1.0
    delta = float(base.norm() * (2 * one_minus_cos) ** 0.5)
    g = torch.stack([base, base + delta * e0, third + 0.5 * base + 2.0 * float(base.norm()) * e0])
    return g.to(torch.bfloat16).to(torch.float64)


def _mp_gramian(g: torch.Tensor):
    import mpmath

    rows = [[mpmath.mpf(float(x)) for x in row] for row in g]
    return mpmath.matrix([[mpmath.fsum(a * b for a, b in zip(r, s)) for s in rows] for r in rows])


def _mp_dual_weights(k_mp):
    """Reference: DESIGN.md §1's edges on the exact Gramian, in 50-digit arithmetic."""
    import mpmath

    m = k_mp.rows
    inverse = k_mp ** -1
    # d_i = e_i-row of K⁻¹ G / (K⁻¹)_ii  (the dual basis rescaled to coefficient 1 on g_i)
    return [mpmath.fsum(inverse[i, j] / inverse[i, i] for i in range(m)) / m for j in range(m)]


@pytest.mark.parametrize("one_minus_cos", [1e-2, 1e-3, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9])
@pytest.mark.parametrize("seed", range(4))
def test_dual_keeps_every_sign_near_parallel_against_mpmath(one_minus_cos: float, seed: int) -> None:
    """One rank cut: whatever the angle, every exact g_j·d ≥ 0 for the direction the weights
    give; where the cut keeps full rank the weights match a 50-digit reference."""
    import mpmath

    mpmath.mp.dps = 50
    from unlearn.training.gramian import accumulate_gramian

    g = _bf16_near_parallel(one_minus_cos, seed)
    k_ours = accumulate_gramian([[row.to(torch.bfloat16)] for row in g])  # the trainer's Gramian
    result = DualSpace()(k_ours)
    k_mp = _mp_gramian(g)
    w = [mpmath.mpf(float(x)) for x in result.weights]
    products = [mpmath.fsum(w[i] * k_mp[i, j] for i in range(3)) for j in range(3)]
    assert all(p >= 0 for p in products), (result.info, [float(p) for p in products])
    assert all(p > 0 for p in products)
    if result.info["mgda_share"] == 0:
        reference = _mp_dual_weights(k_mp)
        d_ref_sq = mpmath.fsum(reference[i] * k_mp[i, j] * reference[j] for i in range(3) for j in range(3))
        diff = [w[i] - reference[i] for i in range(3)]
        err_sq = mpmath.fsum(diff[i] * k_mp[i, j] * diff[j] for i in range(3) for j in range(3))
        assert float(mpmath.sqrt(err_sq / d_ref_sq)) < 1e-3
    else:  # the cut acts only where the correlation matrix is rank-deficient at its stated level
        norms = torch.diagonal(gramian_of(g)).sqrt()
        eigenvalues = torch.linalg.eigvalsh(gramian_of(g) / torch.outer(norms, norms))
        assert eigenvalues[0] <= 1.01 * DualSpace().blend * DualSpace().rank_tol * eigenvalues[-1]


def test_mgda_moves_when_a_gradient_is_exactly_zero() -> None:
    """Step 0: g_kl = 0 puts the origin in the hull; MGDA must drop it, not return d = 0."""
    g = random_matrix(3)
    g[1] = 0.0
    result = MGDA()(gramian_of(g))
    d = result.weights @ g
    assert result.weights[1] == 0 and result.info["dropped"] == 1
    assert d.norm() > 0
    assert ((g[[0, 2]] @ d) >= (1 - 1e-9) * d.norm() ** 2).all()


@pytest.mark.parametrize("seed", range(30))
def test_mgda_kkt_with_norms_spanning_12_decades(seed: int) -> None:
    """(K w)_j ≥ wᵀKw for every j, relative to each product's own scale, with ‖g‖ = 1e-9, 1e3, 1e3."""
    gen = torch.Generator().manual_seed(seed)
    directions = torch.randn(3, 8, generator=gen, dtype=torch.float64)
    directions[0] -= 0.8 * directions[1]  # the tiny gradient leans against a large one
    g = directions / directions.norm(dim=1, keepdim=True) * torch.tensor([[1e-9], [1e3], [1e3]], dtype=torch.float64)
    g = g[torch.randperm(3, generator=gen)]
    k = gramian_of(g)
    w = min_norm_weights(k)
    d = w @ g
    value = d @ d
    assert (w >= 0).all() and float(w.sum()) == pytest.approx(1.0)
    slack = (g @ d) - value
    assert (slack >= -1e-9 * g.norm(dim=1) * d.norm()).all(), (w, slack)


def test_tolerances_are_validated() -> None:
    with pytest.raises(ValueError, match="relative"):
        MGDA(zero_tol=2.0)
    with pytest.raises(ValueError, match="relative"):
        DualSpace(rank_tol=0.0)


def test_rank_cut_is_above_the_gramians_rounding() -> None:
    """K perturbed at the measured accuracy of a bf16-valued Gramian (6e-7 of ‖g_i‖‖g_j‖):
    the exact g_j·d keeps its sign in every near-parallel case."""
    gen = torch.Generator().manual_seed(0)
    flips = 0
    for _ in range(1000):
        g = torch.randn(3, 50, generator=gen, dtype=torch.float64)
        one_minus_cos = 10 ** (-2 - 4 * float(torch.rand(1, generator=gen)))
        v = torch.randn(50, generator=gen, dtype=torch.float64)
        v -= (v @ g[0]) / (g[0] @ g[0]) * g[0]
        v *= g[0].norm() / v.norm()
        g[1] = g[0] + (2 * one_minus_cos) ** 0.5 * v
        g[2] += 2 * v
        g *= torch.exp(torch.randn(3, 1, generator=gen, dtype=torch.float64))
        k = gramian_of(g)
        noise = torch.randn(3, 3, generator=gen, dtype=torch.float64)
        norms = torch.diagonal(k).sqrt()
        d = DualSpace()(k + 6e-7 * (noise + noise.T) / 2 * torch.outer(norms, norms)).weights @ g
        flips += int(((g @ d) < 0).any())
    assert flips == 0


def _two_unit_gradients(theta_deg: float) -> torch.Tensor:
    t = math.radians(theta_deg)
    return torch.tensor([[1.0, 0.0, 0.0], [math.cos(t), math.sin(t), 0.0]], dtype=torch.float64)


@pytest.mark.parametrize("blend, continuous", [(10.0, True), (1.0, False)])
def test_dual_step_is_continuous_as_gradients_align(blend: float, continuous: bool) -> None:
    """Sweeping the angle of two unit gradients from 30° to 0.1° in 0.05° steps, d changes by
    less than 0.02 between neighbouring angles (‖d‖ runs from 0.13 to ~1); the hard switch at the
    rank cut (blend = 1) jumps by ~1 at 3.6°. Every d stays a common descent direction."""
    angles = [30.0 - 0.05 * i for i in range(599)]
    agg = DualSpace(blend=blend)
    directions = []
    for theta in angles:
        g = _two_unit_gradients(theta)
        d = agg(gramian_of(g)).weights @ g
        assert (g @ d >= -1e-12).all(), theta
        directions.append(d)
    steps = torch.stack([(b - a).norm() for a, b in zip(directions, directions[1:], strict=False)])
    assert bool(steps.max() < 0.02) == continuous, float(steps.max())
    assert directions[0].norm() == pytest.approx(0.129, abs=2e-3) and directions[-1].norm() > 0.99


@pytest.mark.parametrize("theta, share", [(30.0, 0.0), (12.0, 0.0), (7.0, None), (3.0, 1.0)])
def test_blend_zone_of_two_gradients(theta: float, share: float | None) -> None:
    """ratio = tan²(θ/2): pure dual above 11.4°, pure MGDA below 3.6° (rank_tol 1e-3, blend 10)."""
    info = DualSpace()(gramian_of(_two_unit_gradients(theta))).info
    if share is None:
        assert 0.0 < info["mgda_share"] < 1.0
        ratio = math.tan(math.radians(theta) / 2) ** 2
        assert info["mgda_share"] == pytest.approx(math.log(1e-2 / ratio) / math.log(10))
    else:
        assert info["mgda_share"] == share
