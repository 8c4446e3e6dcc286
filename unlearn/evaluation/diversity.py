"""Diversity of a set of answers, reported beside fluency so degenerate output shows up.

With w_i the lower-cased ``\\w+`` words of answer i and G_n(i) its list of word n-grams:

    distinct-n         = |∪_i set(G_n(i))| / Σ_i |G_n(i)|      (0 when there is no n-gram)
    unique_token_ratio = (1/N) Σ_i |set(w_i)| / |w_i|          (an empty answer counts 0)

**Intervals over answers** (:func:`diversity_intervals`). unique_token_ratio is a mean of
per-answer values: percentile bootstrap of the mean. distinct-n is not: resampling answers with
replacement duplicates them, which adds n-grams but no new types, so the bootstrap distribution
sits below the estimate (200 answers of Zipf-distributed words, ``tests/test_eval_metrics.py``:
distinct-1 = 0.188, naive interval [0.135, 0.152]). Instead each n-gram occurrence carries
1/c(g) of a type, c(g) its count in the whole set, so that with

    u_i = Σ_{g ∈ G_n(i)} 1/c(g),   t_i = |G_n(i)|,   Σ_i u_i = |∪_i set(G_n(i))|,

distinct-n = Σ u_i / Σ t_i exactly, and its interval is the ratio bootstrap of the (u_i, t_i)
pairs (shares fixed at the full set's counts): how much the value depends on which answers were
drawn (it covered the expected distinct-1 of such a set in 97 of 100 simulated sets).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from unlearn.evaluation.rules import words
from unlearn.uncertainty import Interval, mean_interval, ratio_interval


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    grams = [g for t in texts for g in ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def type_shares(texts: Sequence[str], n: int) -> tuple[list[float], list[int]]:
    """Per answer (u_i, t_i): its share of the distinct n-grams and its n-gram count, with
    Σ u_i / Σ t_i = distinct-n (module docstring)."""
    per_answer = [ngrams(words(t), n) for t in texts]
    counts = Counter(g for grams in per_answer for g in grams)
    return [sum(1.0 / counts[g] for g in grams) for grams in per_answer], [len(g) for g in per_answer]


def unique_token_ratios(texts: Sequence[str]) -> list[float]:
    """|set(w_i)| / |w_i| per answer (0 for an answer without words)."""
    return [(len(set(w)) / len(w)) if w else 0.0 for w in (words(t) for t in texts)]


def unique_token_ratio(texts: Sequence[str]) -> float:
    ratios = unique_token_ratios(texts)
    return sum(ratios) / len(ratios) if ratios else 0.0


def diversity(texts: Sequence[str]) -> dict[str, float]:
    return {"distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2),
            "unique_token_ratio": unique_token_ratio(texts)}


def diversity_intervals(texts: Sequence[str], **bootstrap) -> dict[str, Interval]:
    """:func:`diversity`'s metrics with bootstrap intervals over the answers (module docstring);
    ``bootstrap``: ``n_boot``, ``level``, ``seed``. No n-gram at all: distinct-n is 0 by
    definition, with a zero-width interval."""
    level = bootstrap.get("level", 0.95)
    out: dict[str, Interval] = {}
    for n in (1, 2):
        shares, counts = type_shares(texts, n)
        if sum(counts):
            out[f"distinct_{n}"] = ratio_interval(shares, counts, **bootstrap)
        else:
            out[f"distinct_{n}"] = Interval(0.0, 0.0, 0.0, level, "no n-gram: 0 by definition", len(texts))
    ratios = unique_token_ratios(texts)
    out["unique_token_ratio"] = (mean_interval(ratios, **bootstrap) if ratios
                                 else Interval(0.0, 0.0, 0.0, level, "no answers: 0 by definition"))
    return out
