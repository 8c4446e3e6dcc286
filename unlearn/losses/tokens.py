"""Per-token log-probabilities of the labelled (answer) tokens.

Labels follow the Hugging Face convention: ``labels[b, t]`` is the token at position t, or
``IGNORE_INDEX`` for prompt and padding tokens; position t is predicted by ``logits[b, t-1]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align next-token logits (B, T-1, V) with their targets (B, T-1)."""
    return logits[:, :-1, :], labels[:, 1:]


def answer_token_logprobs(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log p_θ(y_t | x, y_<t)`` for every target position and the float mask of answer tokens.

    Computed in float32 through the fused cross-entropy kernel; masked positions hold 0.
    """
    lg, tgt = shift(logits, labels)
    mask = tgt.ne(IGNORE_INDEX)
    nll = F.cross_entropy(
        lg.float().reshape(-1, lg.shape[-1]),
        tgt.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view_as(tgt)
    return -nll, mask.to(nll.dtype)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``Σ values·mask / Σ mask``; raises if the batch holds no answer token."""
    count = mask.sum()
    if count.item() == 0:
        raise ValueError("batch has no answer tokens: every label is masked (check max_length)")
    return (values * mask).sum() / count


def answer_nll_sums(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Σ_t −log p(y_t | x, y_<t), n_answer_tokens)`` per row, for evaluation (no gradient needed).

    The log-softmax runs on the answer positions only (a contiguous ``(K, V)`` block): on a CPU a
    ``(B, V, T)`` cross-entropy over every padded position was ~15× slower for a batch of 32.
    """
    lg, tgt = shift(logits, labels)
    mask = tgt.ne(IGNORE_INDEX)
    rows = mask.nonzero(as_tuple=True)[0]
    per_token = F.cross_entropy(lg[mask].float(), tgt[mask], reduction="none")
    nll = torch.zeros(tgt.shape[0], dtype=per_token.dtype, device=per_token.device).index_add_(0, rows, per_token)
    return nll, mask.sum(dim=1)


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log p_θ(y | x) = Σ_t log p_θ(y_t | x, y_<t)`` over answer tokens, one value per row."""
    logp, mask = answer_token_logprobs(logits, labels)
    return (logp * mask).sum(dim=1)
