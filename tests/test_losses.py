"""Losses against hand computations on tiny vocabularies."""

from __future__ import annotations

import math

import pytest
import torch

from unlearn.losses import IGNORE_INDEX, NPO, UCE, GradientAscent, kl_to_reference, log1mexp, retain_cross_entropy


def make_logits(probs: list[list[float]]) -> torch.Tensor:
    """(1, T, V) logits whose softmax is ``probs``; one extra trailing position for the shift."""
    p = torch.tensor(probs + [probs[-1]], dtype=torch.float32)
    return p.log().unsqueeze(0).requires_grad_(True)


# Position t of the labels is predicted by logits[t-1]; label 0 at t=0 is masked (prompt).
LABELS = torch.tensor([[IGNORE_INDEX, 1, 0]])
PROBS = [[0.2, 0.8], [0.7, 0.3]]  # p(y_1=1) = 0.8, p(y_2=0) = 0.7


def test_uce_value_matches_hand_computation() -> None:
    expected = -(math.log(1 - 0.8) + math.log(1 - 0.7)) / 2
    assert UCE()(make_logits(PROBS), LABELS).item() == pytest.approx(expected, rel=1e-5)


def test_bounded_uce_value() -> None:
    expected = -(math.log(1 - 0.4) + math.log(1 - 0.35)) / 2
    value = UCE(bounded=True)(make_logits(PROBS), LABELS).item()
    assert value == pytest.approx(expected, rel=1e-5)
    assert value <= math.log(2)


def test_uce_gradient_matches_hand_computation() -> None:
    """d/dz_k of -log(1 - p_y) with p = softmax(z): p_y/(1-p_y) · (δ_ky - p_k)."""
    logits = make_logits(PROBS)
    UCE()(logits, LABELS).backward()
    grad = logits.grad[0]
    for t, (p, y) in enumerate([(PROBS[0], 1), (PROBS[1], 0)]):
        py = p[y]
        expected = [py / (1 - py) * ((1.0 if k == y else 0.0) - p[k]) / 2 for k in range(2)]
        torch.testing.assert_close(grad[t], torch.tensor(expected), rtol=1e-4, atol=1e-6)
    assert grad[2].abs().max() == 0  # the last position predicts nothing


def test_uce_finite_as_p_goes_to_one_and_zero() -> None:
    for logit_gap in [0.0, 20.0, 80.0, 200.0, -80.0, -200.0]:  # p(y) from 1 down to ~0
        logits = torch.tensor([[[0.0, logit_gap], [0.0, logit_gap]]], requires_grad=True)
        labels = torch.tensor([[IGNORE_INDEX, 1]])
        for loss in (UCE(), UCE(bounded=True)):
            value = loss(logits, labels)
            value.backward()
            assert torch.isfinite(value) and torch.isfinite(logits.grad).all(), (logit_gap, value)
            logits.grad = None
    # p → 0: loss and gradient vanish (no explosion, unlike gradient ascent)
    logits = torch.tensor([[[0.0, -50.0], [0.0, -50.0]]], requires_grad=True)
    value = UCE()(logits, torch.tensor([[IGNORE_INDEX, 1]]))
    value.backward()
    assert value.item() < 1e-15 and logits.grad.abs().max() < 1e-15
    # p → 1: capped at -log(clamp_eps)
    logits = torch.tensor([[[0.0, 200.0], [0.0, 200.0]]])
    assert UCE(clamp_eps=1e-6)(logits, torch.tensor([[IGNORE_INDEX, 1]])).item() == pytest.approx(-math.log(1e-6), rel=1e-3)


def test_log1mexp_is_accurate_on_both_branches() -> None:
    from decimal import Decimal, getcontext

    getcontext().prec = 60
    xs = [-1e-10, -1e-3, -0.5, -0.7, -5.0, -50.0]
    exact = [float((1 - Decimal(x).exp()).ln()) for x in xs]  # 60-digit reference
    got = log1mexp(torch.tensor(xs, dtype=torch.float64))
    torch.testing.assert_close(got, torch.tensor(exact, dtype=torch.float64), rtol=1e-12, atol=0)


def test_gradient_ascent_is_mean_log_prob() -> None:
    expected = (math.log(0.8) + math.log(0.7)) / 2
    assert GradientAscent()(make_logits(PROBS), LABELS).item() == pytest.approx(expected, rel=1e-5)


def test_npo_value_and_zero_point() -> None:
    logits = make_logits(PROBS)
    # at the reference, log-ratio 0: L = -(2/β) log σ(0) = (2/β) log 2
    assert NPO(beta=0.5)(logits, LABELS, logits.detach()).item() == pytest.approx(4 * math.log(2), rel=1e-5)
    ref = make_logits([[0.5, 0.5], [0.5, 0.5]]).detach()
    ratio = math.log(0.8) + math.log(0.7) - 2 * math.log(0.5)
    expected = -(2 / 0.5) * math.log(1 / (1 + math.exp(0.5 * ratio)))
    assert NPO(beta=0.5)(logits, LABELS, ref).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="reference"):
        NPO()(logits, LABELS)


def test_retain_cross_entropy_and_mask() -> None:
    expected = -(math.log(0.8) + math.log(0.7)) / 2
    assert retain_cross_entropy(make_logits(PROBS), LABELS).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="no answer tokens"):
        retain_cross_entropy(make_logits(PROBS), torch.full_like(LABELS, IGNORE_INDEX))


def test_kl_to_reference_value_and_zero_gradient_at_reference() -> None:
    ref = make_logits([[0.5, 0.5], [0.9, 0.1]]).detach()
    logits = make_logits(PROBS)
    kl = lambda p, q: sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))  # noqa: E731
    expected = (kl([0.5, 0.5], [0.2, 0.8]) + kl([0.9, 0.1], [0.7, 0.3])) / 2
    assert kl_to_reference(logits, ref, LABELS).item() == pytest.approx(expected, rel=1e-5)
    same = ref.clone().requires_grad_(True)
    value = kl_to_reference(same, ref, LABELS)
    value.backward()
    assert value.item() == pytest.approx(0.0, abs=1e-7)
    assert same.grad.abs().max() < 1e-6


def test_answer_nll_sums_matches_sequence_logprob_on_padded_rows() -> None:
    from unlearn.losses.tokens import answer_nll_sums, sequence_logprob

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g)
    labels = torch.randint(0, 11, (3, 7), generator=g)
    labels[0, :3] = IGNORE_INDEX            # prompt
    labels[1, :6] = IGNORE_INDEX            # one answer token
    labels[2, :] = IGNORE_INDEX             # no answer token: 0 NLL over 0 tokens
    nll, counts = answer_nll_sums(logits, labels)
    assert counts.tolist() == [4, 1, 0]
    torch.testing.assert_close(nll, -sequence_logprob(logits, labels))
    assert nll[2].item() == 0.0
