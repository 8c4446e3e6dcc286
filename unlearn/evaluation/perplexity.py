"""Answer perplexities under a causal LM, with the training template and answer-only labels.

For an answer y = (y_1..y_T, EOS) to prompt x (rendered by the chat/plain template),

    NLL(y | x) = -Σ_t log p(y_t | x, y_<t),      PPL(y | x) = exp(NLL / (T + 1)).

(A generated answer that hit ``max_new_tokens`` has no EOS and is scored over its T tokens.)

* **Fluency** of generated answers: mean_i PPL(y_i | x_i) under a fixed reference LM
  (default: the original model); lower is more fluent.
* **Utility**: the corpus perplexity exp(Σ_i NLL_i / Σ_i (T_i + 1)) of held-out normal
  (TruthfulQA) answers, and its log, ``utility_loss`` (the retain loss on unseen data).

Intervals (:mod:`unlearn.uncertainty`): fluency is a mean of per-answer PPLs, so a percentile
bootstrap of the mean over answers; an answer with no scored token has no PPL and is left out
and counted (``n_missing``), never read as 0. Utility is a ratio, so the (NLL_i, T_i + 1) pairs
are resampled together and the interval of Σ NLL / Σ n is mapped through exp for the PPL (the
same resamples, so ``utility_ppl_lo = exp(utility_loss_lo)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from unlearn.data.formatting import collate, encode_example
from unlearn.losses.tokens import IGNORE_INDEX, answer_nll_sums
from unlearn.uncertainty import Interval, mean_interval, ratio_interval

LogitsFn = Callable[..., torch.Tensor]


@torch.inference_mode()
def answer_nll(
    logits_fn: LogitsFn,
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    device: torch.device | str = "cpu",
    max_length: int = 1024,
    template: str = "auto",
    batch_size: int = 8,
    progress_bar: bool = True,
    desc: str = "perplexity",
    with_eos: Sequence[bool] | None = None,
) -> list[tuple[float, int]]:
    """``(NLL, n_tokens)`` of each answer given its prompt (``encode_example`` labels).

    The closing EOS is scored unless ``with_eos[i]`` is False (a generated answer cut off at
    ``max_new_tokens`` never produced one).
    """
    encoded = [encode_example(tokenizer, p, a, max_length, template) for p, a in pairs]
    if with_eos is not None:
        for enc, keep in zip(encoded, with_eos, strict=True):
            if not keep and enc["labels"] and enc["labels"][-1] == tokenizer.eos_token_id:
                enc["labels"] = enc["labels"][:-1] + [IGNORE_INDEX]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]["input_ids"]))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    for s in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress_bar):
        idx = order[s : s + batch_size]
        batch = {k: v.to(device) for k, v in collate([encoded[i] for i in idx], pad).items()}
        logits = logits_fn(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).float()
        nll, counts = answer_nll_sums(logits, batch["labels"])
        for row, i in enumerate(idx):
            out[i] = (float(nll[row]), int(counts[row]))
    return out


def answer_perplexities(nlls: Sequence[tuple[float, int]]) -> list[float]:
    """exp(NLL_i / n_i) per answer; NaN for an answer with no scored token."""
    return [math.exp(n / c) if c > 0 else float("nan") for n, c in nlls]


def mean_perplexity(nlls: Sequence[tuple[float, int]]) -> float:
    """mean_i exp(NLL_i / n_i) over answers with at least one token."""
    ppl = [p for p in answer_perplexities(nlls) if not math.isnan(p)]
    return sum(ppl) / len(ppl) if ppl else float("nan")


def fluency_interval(nlls: Sequence[tuple[float, int]], **bootstrap) -> Interval:
    """:func:`mean_perplexity` with a bootstrap interval over answers (``n_missing``: answers
    without a scored token); ``bootstrap``: ``n_boot``, ``level``, ``seed``."""
    return mean_interval(answer_perplexities(nlls), **bootstrap)


def utility_intervals(nlls: Sequence[tuple[float, int]], **bootstrap) -> dict[str, Interval]:
    """``utility_loss`` (:func:`corpus_loss`) and ``utility_ppl`` = exp of it, with ratio-bootstrap
    intervals over the examples from the same resamples."""
    num, den = [n for n, _ in nlls], [c for _, c in nlls]
    return {"utility_ppl": ratio_interval(num, den, transform=np.exp, **bootstrap),
            "utility_loss": ratio_interval(num, den, **bootstrap)}


def corpus_loss(nlls: Sequence[tuple[float, int]]) -> float:
    """Σ NLL / Σ n: mean token negative log-likelihood."""
    total = sum(c for _, c in nlls)
    return sum(n for n, _ in nlls) / total if total else float("nan")


def model_logits_fn(model) -> LogitsFn:
    return lambda **batch: model(**batch).logits
