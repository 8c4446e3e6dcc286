"""Gramian accumulation and in-place combination against dense float64 references."""

from __future__ import annotations

import torch

from unlearn.training.gramian import accumulate_gramian, add_into, combine_into_grad, cosines


def random_grads(dtype=torch.float32, seed: int = 0) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(64, 32), (32,), (1000,), (7, 3, 5)]
    return [[torch.randn(s, generator=gen).to(dtype) for s in shapes] for _ in range(3)]


def dense(grads) -> torch.Tensor:
    return torch.stack([torch.cat([g.double().reshape(-1) for g in obj]) for obj in grads])


def test_gramian_matches_dense_float64() -> None:
    grads = random_grads()
    g = dense(grads)
    k = accumulate_gramian(grads)
    assert k.dtype == torch.float64
    torch.testing.assert_close(k, g @ g.T, rtol=1e-6, atol=1e-6)


def test_long_tensors_keep_float64_level_accuracy() -> None:
    """A single fp32 GEMM over millions of entries drifts by ~1e-4; chunked partials must not."""
    gen = torch.Generator().manual_seed(5)
    base = torch.randn(3_000_000, generator=gen)
    grads = [[base + 1e-3 * torch.randn(3_000_000, generator=gen)] for _ in range(3)]  # nearly parallel
    g = dense(grads)
    exact = g @ g.T
    k = accumulate_gramian(grads)
    assert ((k - exact).abs() / exact.abs().max()).max() < 1e-7
    # the near-parallel structure survives: 1 - cos is ~1e-6 and must be resolved
    cos = k[0, 1] / (k[0, 0] * k[1, 1]).sqrt()
    exact_cos = exact[0, 1] / (exact[0, 0] * exact[1, 1]).sqrt()
    assert abs((1 - cos) - (1 - exact_cos)) < 1e-2 * (1 - exact_cos)


def test_bf16_gradients_are_upcast_before_products() -> None:
    grads = random_grads(torch.bfloat16)
    g = dense(grads)  # the exact values bf16 holds
    torch.testing.assert_close(accumulate_gramian(grads), g @ g.T, rtol=1e-6, atol=1e-5)


def test_combine_writes_weighted_sum_into_grad() -> None:
    grads = random_grads(seed=1)
    expected = [0.5 * a - 2.0 * b + 0.0 * c for a, b, c in zip(*grads)]
    params = [torch.zeros_like(t, requires_grad=True) for t in grads[0]]
    combine_into_grad(params, grads, [0.5, -2.0, 0.0])
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.grad, e)


def test_accumulation_and_cosines() -> None:
    a, b = random_grads(seed=2), random_grads(seed=3)
    expected = dense(a) + dense(b)
    summed = add_into([[t.clone() for t in obj] for obj in a], b)
    torch.testing.assert_close(dense(summed), expected)
    k = torch.tensor([[4.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    c = cosines(k)
    assert c[0, 1] == 1.0 and c[0, 2] == 0.0 and torch.isfinite(c).all()


def test_gramian_pair_matches_dense_float64() -> None:
    """accumulate_gramians gives K and G P Gᵀ from one pass, for fp32 and bf16 rows."""
    from unlearn.training.gramian import accumulate_gramians

    gen = torch.Generator().manual_seed(9)
    for dtype in (torch.float32, torch.bfloat16):
        grads = random_grads(dtype, seed=4)
        metric = [torch.rand(t.shape, generator=gen) for t in grads[0]]
        g = dense(grads)
        p = torch.cat([t.double().reshape(-1) for t in metric])
        plain, scaled = accumulate_gramians(grads, metric)
        torch.testing.assert_close(plain, g @ g.T, rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(scaled, g @ torch.diag(p) @ g.T, rtol=1e-5, atol=1e-5)
        assert accumulate_gramians(grads, None)[1] is None
