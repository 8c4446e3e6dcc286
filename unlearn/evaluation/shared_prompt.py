"""NLLs of several answers to one prompt, with the prompt encoded once (its KV cache reused).

For a prompt x and answers y¹ … yᵏ, :func:`answer_nll` of :mod:`.perplexity` runs x through the
model k times. Here x runs once (left-padded in the batch, positions from its attention mask) and
each answer continues from x's cache, so the cost is |x| + Σ|yʲ| tokens instead of k·|x| + Σ|yʲ|:

    NLL(yʲ | x) = −log p(y₁ʲ | x) − Σ_{t≥2} log p(y_tʲ | x, y_<tʲ)

(the first term from the prompt's last position). The prompts' common prefix (a chat template's
system turn, about half of a short prompt's tokens) is encoded once for all of them and its cache
copied into every batch, so the prompt tokens cost |common prefix| + Σ(|x| − |common prefix|).
The result equals :func:`~.perplexity.answer_nll`
on the same encoded examples (same labels, same truncation) up to floating-point error; a group
whose answers' encodings do not share one prompt (a prompt cut by ``max_length``), and every
group of a model whose forward takes no KV cache, is scored by :func:`~.perplexity.answer_nll`.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from unlearn.data.formatting import encode_example
from unlearn.evaluation.perplexity import answer_nll, model_logits_fn
from unlearn.losses.tokens import IGNORE_INDEX

MIN_SHARED_PREFIX = 4  # tokens: a shorter common prefix is encoded with each prompt


def cache_keyword(model) -> str | None:
    """The forward keyword of the KV cache: ``cache`` (transformers ≥ 5.x) or ``past_key_values``;
    None for a model whose forward takes no cache and no ``position_ids`` (scored separately)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(type(base).forward).parameters
    if "position_ids" not in params:
        return None
    return next((k for k in ("cache", "past_key_values") if k in params), None)


def split_prompt(encoded: dict[str, list[int]]) -> tuple[list[int], list[int]]:
    """``(prompt ids, scored answer ids)`` of an :func:`encode_example` result."""
    n_prompt = sum(label == IGNORE_INDEX for label in encoded["labels"])
    return encoded["input_ids"][:n_prompt], encoded["labels"][n_prompt:]


@torch.inference_mode()
def shared_prompt_nll(
    model,
    tokenizer,
    groups: Sequence[tuple[str, Sequence[str]]],
    device: torch.device | str = "cpu",
    max_length: int = 1024,
    template: str = "auto",
    batch_size: int = 8,
    progress_bar: bool = False,
    with_eos: Sequence[Sequence[bool]] | None = None,
    desc: str = "nll",
) -> list[list[tuple[float, int]]]:
    """``(NLL, n_tokens)`` of each answer of each ``(prompt, answers)`` group, in order
    (:func:`~.perplexity.answer_nll`'s values; ``with_eos[g][j]`` False: answer j of group g was
    cut and its EOS is not scored). ``batch_size`` counts groups."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[list[tuple[float, int]]] = [[] for _ in groups]
    shared, separate = [], []
    keyword = cache_keyword(model)
    for g, (prompt, answers) in enumerate(groups):
        encoded = [encode_example(tokenizer, prompt, a, max_length, template) for a in answers]
        parts = [split_prompt(e) for e in encoded]
        labels = [list(lab) for _, lab in parts]
        if with_eos is not None:
            for lab, keep in zip(labels, with_eos[g], strict=True):
                if not keep and lab and lab[-1] == tokenizer.eos_token_id:
                    lab.pop()
        if keyword is not None and all(p == parts[0][0] for p, _ in parts) and parts[0][0] and all(labels):
            shared.append((g, parts[0][0], labels))
        else:
            separate.append(g)
    if separate:
        flat = [(groups[g][0], a) for g in separate for a in groups[g][1]]
        eos = None if with_eos is None else [k for g in separate for k in with_eos[g]]
        nll = answer_nll(model_logits_fn(model), tokenizer, flat, device, max_length, template, batch_size,
                         False, with_eos=eos)
        i = 0
        for g in separate:
            out[g] = nll[i: i + len(groups[g][1])]
            i += len(groups[g][1])
    shared.sort(key=lambda item: -len(item[1]) - max(len(lab) for lab in item[2]))
    prefix = _encode_prefix(model, common_prefix([p for _, p, _ in shared]), device, keyword)
    for s in tqdm(range(0, len(shared), batch_size), desc=desc, disable=not progress_bar):
        batch = shared[s: s + batch_size]
        for (g, _, _), values in zip(batch, _score_batch(model, batch, pad, device, keyword, prefix), strict=True):
            out[g] = values
    return out


def common_prefix(prompts: Sequence[Sequence[int]]) -> list[int]:
    """The longest token prefix of every prompt that leaves each at least one token of its own
    (the prompt's last position predicts the answer's first token)."""
    if not prompts:
        return []
    limit = min(len(p) for p in prompts) - 1
    first = prompts[0]
    n = 0
    while n < limit and all(p[n] == first[n] for p in prompts):
        n += 1
    return list(first[:n])


def _encode_prefix(model, prefix: list[int], device, keyword: str | None):
    """``(n_tokens, KV cache)`` of the common prefix, or None when it is too short to share."""
    if keyword is None or len(prefix) < MIN_SHARED_PREFIX:
        return None
    ids = torch.tensor([prefix], device=device)
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, logits_to_keep=1)
    return len(prefix), getattr(out, "cache", None) or out.past_key_values


def _score_batch(model, batch, pad: int, device, keyword: str, prefix=None) -> list[list[tuple[float, int]]]:
    n_prefix, prefix_cache = prefix if prefix is not None else (0, None)
    prompts = [p[n_prefix:] for _, p, _ in batch]
    answers = [lab for _, _, labels in batch for lab in labels]
    repeats = torch.tensor([len(labels) for _, _, labels in batch], device=device)
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long, device=device)
    mask = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
    for row, p in enumerate(prompts):  # left padding: every prompt ends at the last column
        ids[row, width - len(p):] = torch.tensor(p, device=device)
        mask[row, width - len(p):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    extra = {}
    if prefix_cache is not None:  # every row continues the shared prefix (padding sits between them)
        cache = copy.deepcopy(prefix_cache)
        cache.batch_select_indices(torch.zeros(len(prompts), dtype=torch.long, device=device))
        mask = torch.cat([torch.ones((len(prompts), n_prefix), dtype=torch.long, device=device), mask], dim=1)
        positions = positions + n_prefix
        extra[keyword] = cache
    first = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                  **extra)
    cache = getattr(first, "cache", None) or first.past_key_values
    if int(repeats.min()) == int(repeats.max()):
        cache.batch_repeat_interleave(int(repeats[0]))
    else:
        cache.batch_select_indices(torch.repeat_interleave(torch.arange(len(prompts), device=device), repeats))
    a_width = max(len(a) for a in answers)
    a_ids = torch.full((len(answers), a_width), pad, dtype=torch.long, device=device)
    a_mask = torch.zeros((len(answers), a_width), dtype=torch.long, device=device)
    for row, a in enumerate(answers):
        a_ids[row, : len(a)] = torch.tensor(a, device=device)
        a_mask[row, : len(a)] = 1
    p_mask = mask.repeat_interleave(repeats, dim=0)
    positions = p_mask.sum(-1, keepdim=True) + torch.arange(a_width, device=device)
    rest = model(input_ids=a_ids[:, :-1], attention_mask=torch.cat([p_mask, a_mask[:, :-1]], dim=1),
                 position_ids=positions[:, :-1], use_cache=True, **{keyword: cache}) if a_width > 1 else None
    logits = first.logits[:, -1:].repeat_interleave(repeats, dim=0)
    if rest is not None:
        logits = torch.cat([logits, rest.logits], dim=1)
    keep = a_mask.bool()
    per_token = F.cross_entropy(logits[keep].float(), a_ids[keep], reduction="none")
    rows = keep.nonzero(as_tuple=True)[0]
    nll = torch.zeros(len(answers), dtype=per_token.dtype, device=per_token.device).index_add_(0, rows, per_token)
    counts = keep.sum(dim=1)
    values = [(float(n), int(c)) for n, c in zip(nll, counts, strict=True)]
    out, i = [], 0
    for _, _, labels in batch:
        out.append(values[i: i + len(labels)])
        i += len(labels)
    return out
