"""The TorchJD adapters (unlearn/aggregators/torchjd_methods.py): agreement with TorchJD on
well-scaled Gramians, immunity to TorchJD's absolute ``norm_eps``, zero gradients, PCGrad's
seeding, rounding, lazy import, and a 3-step tiny_random run with ``aggregator=upgrad``.

The properties shared with our own aggregators (permutation invariance, scale equivariance,
non-conflicting) are in tests/test_aggregators.py."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import REPO
from unlearn.aggregators import IMTLG, AlignedMTL, CAGrad, DualProj, PCGrad, UPGrad, gramian_of

ADAPTERS = {"upgrad": UPGrad, "dualproj": DualProj, "pcgrad": PCGrad, "cagrad": CAGrad,
            "imtlg": IMTLG, "alignedmtl": AlignedMTL}


def torchjd_weighting(name: str):
    """TorchJD's own weighting with its defaults (our YAML's CAGrad c)."""
    import torchjd.aggregation as tja

    return {"upgrad": tja.UPGradWeighting, "dualproj": tja.DualProjWeighting,
            "pcgrad": tja.PCGradWeighting, "cagrad": lambda: tja.CAGradWeighting(c=0.4),
            "imtlg": tja.IMTLGWeighting, "alignedmtl": tja.AlignedMTLWeighting}[name]()


def matrix(seed: int, m: int = 3, n: int = 12) -> torch.Tensor:
    """Rows of comparable norms and trace(K) = 1, where every TorchJD threshold is inactive."""
    g = torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return g / g.norm()


# UPGrad and DualProj regularise the QP on C (reg_eps 1e-6) where TorchJD does it on K / trace K
# (1e-4): the weights agree to that order. The others agree to rounding.
RTOL = {"upgrad": 1e-3, "dualproj": 1e-3}


@pytest.mark.parametrize("name", ADAPTERS)
@pytest.mark.parametrize("seed", range(5))
def test_matches_torchjd_on_a_well_scaled_gramian(name: str, seed: int) -> None:
    m = 2 if name == "pcgrad" else 3  # PCGrad's random order does not matter for 2 gradients
    k = gramian_of(matrix(seed, m=m))
    ours = ADAPTERS[name]()(k).weights
    theirs = torchjd_weighting(name)(k)
    tol = RTOL.get(name, 1e-7)
    torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ADAPTERS)
def test_trace_below_norm_eps_keeps_the_direction(name: str) -> None:
    """trace K = 1e-12 < norm_eps = 1e-4: TorchJD's UPGrad and DualProj turn into the mean and
    CAGrad into a zero step; the adapters return the unit-scale direction, scaled by 1e-6."""
    g = matrix(1, m=2 if name == "pcgrad" else 3)
    g[-1] = 0.5 * g[-1] - 2 * g[0]  # the mean conflicts with g_0: the methods differ from it
    g /= g.norm()
    s = 1e-6  # gradients ×1e-6, K ×1e-12
    aggregator = ADAPTERS[name]()
    d_unit = aggregator(gramian_of(g)).weights @ g
    d_small = aggregator(gramian_of(s * g)).weights @ (s * g)
    torch.testing.assert_close(d_small, s * d_unit, rtol=1e-7, atol=0.0)
    theirs = torchjd_weighting(name)(gramian_of(s * g))
    if name in {"upgrad", "dualproj"}:
        torch.testing.assert_close(theirs, torch.full((3,), 1 / 3, dtype=torch.float64))
        assert not torch.allclose(d_unit, g.mean(0), rtol=1e-3)  # and the mean is another direction
    if name == "cagrad":
        assert (theirs == 0).all() and d_unit.norm() > 0


def test_imtlg_absolute_cut_at_large_scale() -> None:
    """IMTL-G's other absolute threshold (|Σ v| < 1e-12 ⇒ zero weights) hits large gradients."""
    g = matrix(2)
    big = gramian_of(g) * 1e26  # v = K⁺ √diag K scales as 1e-13: below the cut
    assert (torchjd_weighting("imtlg")(big) == 0).all()
    torch.testing.assert_close(IMTLG()(big).weights, IMTLG()(gramian_of(g)).weights)


@pytest.mark.parametrize("name", ADAPTERS)
def test_all_zero_gramian_gives_zero_weights(name: str) -> None:
    result = ADAPTERS[name]()(torch.zeros(3, 3, dtype=torch.float64))
    assert (result.weights == 0).all() and result.info["stationary"] == 1


@pytest.mark.parametrize("name", ADAPTERS)
def test_exact_zero_gradient_is_dropped(name: str) -> None:
    """Step 0: g_kl = 0. Weight 0 on it, the others move; where TorchJD copes with the zero row
    itself, dropping it (and rescaling mean-based weights by kept/m) gives TorchJD's direction."""
    g = matrix(3)
    g[1] = 0.0
    result = ADAPTERS[name]()(gramian_of(g))
    d = result.weights @ g
    assert torch.isfinite(result.weights).all()
    assert result.weights[1] == 0 and result.info["dropped"] == 1 and result.info["stationary"] == 0
    assert d.norm() > 0
    if name != "cagrad":
        d_torchjd = torchjd_weighting(name)(gramian_of(g)) @ g
        tol = RTOL.get(name, 1e-7)
        torch.testing.assert_close(d, d_torchjd, rtol=tol, atol=tol)


def test_cagrad_moves_where_torchjd_stops_at_a_zero_gradient() -> None:
    """With g_kl = 0 in the hull, TorchJD's CAGrad picks the zero vertex for two non-conflicting
    gradients and returns d = 0; the adapter drops it and keeps descending on both."""
    g = torch.tensor([[1.0, 0.2, 0.0], [0.0, 0.0, 0.0], [0.6, 1.0, 0.1]], dtype=torch.float64)
    assert (torchjd_weighting("cagrad")(gramian_of(g)) == 0).all()
    d = CAGrad()(gramian_of(g)).weights @ g
    assert (g[[0, 2]] @ d > 0).all()


def test_cagrad_moves_when_one_gradient_is_1e4_times_smaller() -> None:
    """A small forget gradient conflicting with a large retain one puts g_w at ~1e-4 ‖G‖_F:
    TorchJD's norm_eps = 1e-4 calls that the Pareto front (d = 0, every step of a tiny_random
    run); the adapter's relative 1e-6 does not, and d improves the worse objective."""
    g = torch.zeros(2, 3, dtype=torch.float64)
    g[0, :2] = 5e-5 * torch.tensor([-0.8, 0.6], dtype=torch.float64)  # cos(g_0, g_1) = -0.8
    g[1, 0] = 1.0
    assert (torchjd_weighting("cagrad")(gramian_of(g)) == 0).all()
    d = CAGrad()(gramian_of(g)).weights @ g
    mean = g.mean(0)
    assert (g @ d).min() > (g @ mean).min()  # CAGrad's point: a better worst-case improvement


def test_pcgrad_is_a_pure_function_of_the_gramian() -> None:
    """Same K, same weights; torch's global RNG (dropout, sampling) is left where it was."""
    gen = torch.Generator().manual_seed(0)
    k = gramian_of(torch.randn(5, 12, generator=gen, dtype=torch.float64))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = PCGrad()(k).weights
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(PCGrad()(k).weights, first)


@pytest.mark.parametrize("scale", [1e-6, 0.37, 1e4])
def test_pcgrad_scale_equivariance_with_two_gradients(scale: float) -> None:
    g = matrix(4, m=2)
    g[1] -= 2 * (g[1] @ g[0]) / (g[0] @ g[0]) * g[0]  # make them conflict
    d = PCGrad()(gramian_of(g)).weights @ g
    torch.testing.assert_close(PCGrad()(gramian_of(scale * g)).weights @ (scale * g), scale * d)


@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
def test_dual_cone_qp_survives_the_gramians_rounding(name: str) -> None:
    """Near-parallel gradients with K perturbed at a bf16 Gramian's accuracy (6e-7 of ‖g_i‖‖g_j‖):
    C is then indefinite by up to ~1e-6 and the QP must still solve (reg_eps is shifted)."""
    gen = torch.Generator().manual_seed(0)
    aggregator = ADAPTERS[name]()
    for _ in range(200):
        g = torch.randn(3, 50, generator=gen, dtype=torch.float64)
        g[1] = g[0] + 1e-4 * torch.randn(50, generator=gen, dtype=torch.float64)
        k = gramian_of(g)
        noise = torch.randn(3, 3, generator=gen, dtype=torch.float64)
        norms = torch.diagonal(k).sqrt()
        weights = aggregator(k + 6e-7 * (noise + noise.T) / 2 * torch.outer(norms, norms)).weights
        assert torch.isfinite(weights).all()


def test_torchjd_is_imported_lazily() -> None:
    code = ("import sys; from hydra.utils import instantiate; from omegaconf import OmegaConf; "
            "import unlearn.aggregators; "
            "instantiate(OmegaConf.load('conf/aggregator/upgrad.yaml')); "
            "assert not any(m.startswith('torchjd') for m in sys.modules), 'torchjd imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
