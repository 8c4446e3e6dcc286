"""Objectives on normal (benign prompt, answer) batches, answer tokens only.

* :func:`kl_to_reference`: ``mean_t KL(p_ref(·|x, y_<t) ‖ p_θ(·|x, y_<t))``, token-level.
* :func:`retain_cross_entropy`: ``-mean_t log p_θ(y_t | x, y_<t)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unlearn.losses.tokens import IGNORE_INDEX, answer_token_logprobs, masked_mean, shift


class _SummedKL(torch.autograd.Function):
    """``Σ_t Σ_v p_v (log p_v − log q_v)`` with p = softmax(ref), q = softmax(x), rows t.

    Backward uses the closed form ``∂/∂x = q − p`` (Σ_v p_v = 1). Autograd through
    ``log_softmax`` + ``kl_div`` instead gives ``q·Σ_v p_v − p``, and the fp32 rounding of
    Σ_v p_v leaves a gradient of ~1e-6 relative size where the logits equal the reference's.
    Here q and p come from the same operations, so the gradient is exactly 0 there.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
        logq = F.log_softmax(logits.float(), dim=-1)
        logp = F.log_softmax(ref_logits.float(), dim=-1)
        p = logp.exp()
        value = (p * (logp - logq)).sum()
        ctx.save_for_backward(logq.exp_().sub_(p))  # q − p, the only thing backward needs
        ctx.input_dtype = logits.dtype
        return value

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        (q_minus_p,) = ctx.saved_tensors
        return (grad_output * q_minus_p).to(ctx.input_dtype), None


def kl_to_reference(
    logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Forward KL from the frozen reference, over the full vocabulary at answer positions.

    ``(1/N) Σ_t KL(p_ref,t ‖ p_θ,t)`` over the N answer positions, in fp32; its gradient with
    respect to the logits is ``(softmax(x) − softmax(ref))/N``, exactly 0 when they are equal.
    """
    lg, tgt = shift(logits, labels)
    ref, _ = shift(ref_logits, labels)
    keep = tgt.ne(IGNORE_INDEX)
    if not keep.any():
        raise ValueError("batch has no answer tokens: every label is masked (check max_length)")
    return _SummedKL.apply(lg[keep], ref[keep].detach()) / keep.sum()


def retain_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logp, mask = answer_token_logprobs(logits, labels)
    return -masked_mean(logp, mask)


class KLToReference:
    """``L_KL`` as a configured objective loss (:func:`kl_to_reference`); needs the reference."""

    name = "kl"
    needs_reference = True

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor,
                 ref_logits: torch.Tensor | None = None) -> torch.Tensor:
        if ref_logits is None:
            raise ValueError("the KL objective needs the reference model's logits")
        return kl_to_reference(logits, ref_logits, labels)


class AnswerCrossEntropy:
    """``-mean_t log p_θ(y_t | x, y_<t)`` as a configured objective loss: the retain loss on
    normal data, and Yao et al.'s random-mismatch term on (harmful prompt, normal answer) pairs."""

    name = "nll"
    needs_reference = False

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor,
                 ref_logits: torch.Tensor | None = None) -> torch.Tensor:
        return retain_cross_entropy(logits, labels)
