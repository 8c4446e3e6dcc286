"""Greedy answers to a list of prompts: batched, left-padded, with a progress bar."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from unlearn.data.formatting import render_prompt
from unlearn.models.precision import compute_precision


@dataclass(frozen=True)
class Generation:
    """One answer. ``n_tokens`` counts generated tokens before EOS; ``finished``: EOS was produced."""

    prompt: str
    answer: str
    n_tokens: int
    finished: bool

    def to_dict(self) -> dict:
        return asdict(self)


def distinct_prompts(examples: Sequence, limit: int | None) -> list[str]:
    """The first ``limit`` distinct prompts of ``examples``, in order of first appearance."""
    seen: dict[str, None] = {}
    for e in examples:
        seen.setdefault(e.prompt, None)
    prompts = list(seen)
    return prompts if limit is None else prompts[: int(limit)]


@torch.inference_mode()
def generate_answers(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 128,
    batch_size: int = 8,
    template: str = "auto",
    progress_bar: bool = True,
    desc: str = "generating",
    compute_dtype: str = "float32",
) -> list[Generation]:
    """Greedy decoding (``do_sample=False``) of each prompt rendered with ``template``, the
    forward passes in ``compute_dtype`` (:mod:`unlearn.models.precision`).

    Prompts are processed longest first (less padding), left-padded, and returned in input order.
    Answers are decoded without special tokens and are not stripped.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    texts = [render_prompt(tokenizer, p, template) for p in prompts]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    eos_ids = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    device = next(model.parameters()).device
    was_training = model.training
    old_side = tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    results: list[Generation | None] = [None] * len(texts)
    try:
        bar = tqdm(total=len(texts), desc=desc, disable=not progress_bar)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(device)
            with compute_precision(compute_dtype, device):
                out = model.generate(
                    **batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                    temperature=None, top_p=None, top_k=None, pad_token_id=pad_id, eos_token_id=eos_ids,
                )
            new = out[:, batch["input_ids"].shape[1] :].tolist()
            for i, ids in zip(idx, new, strict=True):
                n, finished = _cut_at_eos(ids, set(eos_ids))
                answer = tokenizer.decode(ids[:n], skip_special_tokens=True)
                results[i] = Generation(prompts[i], answer, n, finished)
            bar.update(len(idx))
        bar.close()
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return [r for r in results if r is not None]


def _eos_ids(model, tokenizer) -> list[int]:
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, gen_eos):
        for v in value if isinstance(value, list | tuple) else [value]:
            if v is not None and int(v) not in ids:
                ids.append(int(v))
    if not ids:
        raise ValueError("the tokenizer has no EOS token; generation could not stop")
    return ids


def _cut_at_eos(ids: list[int], eos: set[int]) -> tuple[int, bool]:
    """Number of tokens before the first EOS, and whether an EOS was found."""
    for n, t in enumerate(ids):
        if t in eos:
            return n, True
    return len(ids), False
