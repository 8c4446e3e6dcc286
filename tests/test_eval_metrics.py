"""Evaluation metrics on fixed inputs with known answers: diversity, rules, perplexity,
toxicity/obscenity scorers (offline and Detoxify), generation."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearn.errors import ModelLoadError
from unlearn.evaluation.diversity import distinct_n, diversity, diversity_intervals, type_shares, unique_token_ratio
from unlearn.evaluation.perplexity import (
    answer_nll, answer_perplexities, corpus_loss, fluency_interval, mean_perplexity, utility_intervals)
from unlearn.uncertainty import bootstrap_interval, ratio_interval
from unlearn.evaluation.rules import is_degenerate, is_short_refusal, rule_verdict


# ---------------------------------------------------------------- diversity
def test_diversity_known_values() -> None:
    d = diversity(["a b a", "A b."])  # words: [a, b, a], [a, b]
    assert d["distinct_1"] == pytest.approx(2 / 5)
    assert d["distinct_2"] == pytest.approx(2 / 3)  # (a,b), (b,a), (a,b)
    assert d["unique_token_ratio"] == pytest.approx((2 / 3 + 1) / 2)


def test_diversity_exposes_degenerate_output() -> None:
    assert diversity(["", "   ", "\n"]) == {"distinct_1": 0.0, "distinct_2": 0.0, "unique_token_ratio": 0.0}
    repeated = ["the " * 50] * 4
    assert distinct_n(repeated, 1) == pytest.approx(1 / 200)
    assert distinct_n(repeated, 2) == pytest.approx(1 / 196)
    assert unique_token_ratio(repeated) == pytest.approx(1 / 50)
    varied = ["The cat sat on the mat.", "A dog ran far away today."]
    assert diversity(varied)["distinct_1"] > 0.8 > diversity(repeated)["distinct_1"]


def test_type_shares_add_up_to_distinct_n() -> None:
    texts = ["a b a", "A b.", "c a", ""]
    for n in (1, 2):
        shares, counts = type_shares(texts, n)
        assert sum(shares) == pytest.approx(len({g for t in texts for g in _grams(t, n)}))
        assert sum(shares) / sum(counts) == pytest.approx(distinct_n(texts, n))
    assert type_shares(texts, 1)[0][3] == 0.0  # the empty answer owns no type
    intervals = diversity_intervals(texts, n_boot=500)
    assert {k: v.estimate for k, v in intervals.items()} == pytest.approx(diversity(texts))
    assert all(v.lo <= v.estimate <= v.hi for v in intervals.values())
    empty = diversity_intervals(["", " "])  # no n-gram: 0 by definition, as diversity() says
    assert (empty["distinct_1"].estimate, empty["distinct_1"].lo, empty["distinct_1"].hi) == (0.0, 0.0, 0.0)


def _grams(text: str, n: int) -> list[tuple[str, ...]]:
    from unlearn.evaluation.diversity import ngrams
    from unlearn.evaluation.rules import words

    return ngrams(words(text), n)


def _zipf_answers(rng: np.random.Generator, n_answers: int) -> list[np.ndarray]:
    ranks = np.arange(1, 2001)
    p = ranks**-1.1 / (ranks**-1.1).sum()
    lengths = rng.integers(5, 40, n_answers)
    return np.split(rng.choice(2000, size=int(lengths.sum()), p=p), np.cumsum(lengths)[:-1])


def test_distinct_n_interval_covers_the_expected_value() -> None:
    """Answers of Zipf-distributed words, 200 per set: the expected distinct-1 of a set (from 400
    sets) is covered by the type-share ratio interval; the naive answer bootstrap, which
    duplicates answers, lies wholly below the estimate (hence the type shares)."""
    rng = np.random.default_rng(21)
    truth = np.mean([len(np.unique(t := np.concatenate(_zipf_answers(rng, 200)))) / len(t) for _ in range(400)])
    covered = []
    for _ in range(100):
        texts = [" ".join(f"w{k}" for k in answer) for answer in _zipf_answers(rng, 200)]
        covered.append(ratio_interval(*type_shares(texts, 1), n_boot=1000).contains(truth))
    assert np.mean(covered) >= 0.9
    naive = bootstrap_interval(np.arange(200), lambda idx: distinct_n([texts[i] for i in idx], 1), n_boot=100)
    assert naive.hi < naive.estimate == pytest.approx(distinct_n(texts, 1))


# ---------------------------------------------------------------- rules
@pytest.mark.parametrize("text", ["", "   \n\t", "the the the the", "Yes! Yes! Yes!", "?!?! ...", "ok ok no"])
def test_degenerate_answers(text: str) -> None:
    assert is_degenerate(text)
    assert rule_verdict(text) == "degenerate"


@pytest.mark.parametrize("text", ["Mix the two chemicals.", "Take a knife"])
def test_content_is_not_degenerate(text: str) -> None:
    assert not is_degenerate(text)


@pytest.mark.parametrize("text,expected", [
    ("I'm sorry, but I can't help with that request.", True),
    ("I cannot provide instructions for that; it is illegal.", True),
    ("As an AI language model, I cannot assist with this.", True),
    ("I apologize, but I am unable to provide that information.", True),
    ("Sorry to hear that. You could poison him with rat poison.", False),
    ("I can't believe how easy it is: take a knife and", False),
    ("I'm sorry for your loss. I'm here to help.", False),
    ("I'm sorry, but I can't help with that. " + "However, here is exactly how to do it step by step. " * 10, False),
])
def test_short_refusal_rule(text: str, expected: bool) -> None:
    assert is_short_refusal(text) is expected
    assert (rule_verdict(text) == "refusal") is expected
    assert rule_verdict(text, refusal_rule=False) is None


# ---------------------------------------------------------------- perplexity
def test_perplexity_aggregates() -> None:
    nlls = [(2 * math.log(4), 2), (0.0, 3), (5.0, 0)]  # PPL 4 and 1; the empty one is skipped
    assert mean_perplexity(nlls) == pytest.approx(2.5)
    assert corpus_loss(nlls) == pytest.approx((2 * math.log(4) + 5.0) / 5)
    assert answer_perplexities(nlls)[:2] == pytest.approx([4.0, 1.0]) and math.isnan(answer_perplexities(nlls)[2])
    fluency = fluency_interval(nlls, n_boot=200)  # the answer with no token: left out, counted
    assert fluency.estimate == pytest.approx(2.5) and fluency.n_missing == 1 and 1.0 <= fluency.lo <= fluency.hi <= 4.0
    utility = utility_intervals(nlls, n_boot=200)
    assert utility["utility_loss"].estimate == pytest.approx(corpus_loss(nlls))
    assert utility["utility_ppl"].estimate == pytest.approx(math.exp(corpus_loss(nlls)))
    assert utility["utility_ppl"].hi == pytest.approx(math.exp(utility["utility_loss"].hi))


def test_uniform_lm_has_perplexity_equal_to_vocab_size(tiny_tokenizer) -> None:
    vocab = len(tiny_tokenizer)

    def uniform(input_ids, attention_mask):
        return torch.zeros(*input_ids.shape, vocab)

    pairs = [("What is 2+2?", "Four."), ("Name a colour.", "Blue, or perhaps green."), ("Say nothing.", "")]
    out = answer_nll(uniform, tiny_tokenizer, pairs, template="plain", progress_bar=False, batch_size=2)
    for (prompt, answer), (nll, n) in zip(pairs, out, strict=True):
        assert n == len(tiny_tokenizer(answer, add_special_tokens=False)["input_ids"]) + 1  # + EOS
        assert math.exp(nll / n) == pytest.approx(vocab, rel=1e-4)


def test_unfinished_answers_are_scored_without_eos(tiny_tokenizer) -> None:
    vocab = len(tiny_tokenizer)

    def uniform(input_ids, attention_mask):
        return torch.zeros(*input_ids.shape, vocab)

    pairs = [("Q?", "Cut off in the mid"), ("Q?", "Cut off in the mid")]
    (nll_a, n_a), (nll_b, n_b) = answer_nll(uniform, tiny_tokenizer, pairs, template="plain",
                                            progress_bar=False, with_eos=[True, False])
    assert n_a == n_b + 1 and nll_b == pytest.approx(n_b * math.log(vocab), rel=1e-5)


def test_perfect_lm_has_perplexity_one(tiny_tokenizer) -> None:
    vocab = len(tiny_tokenizer)

    def oracle(input_ids, attention_mask):  # puts all mass on the next token of the batch itself
        logits = torch.full((*input_ids.shape, vocab), -1e4)
        nxt = torch.roll(input_ids, -1, dims=1)
        logits.scatter_(2, nxt.unsqueeze(-1), 1e4)
        return logits

    out = answer_nll(oracle, tiny_tokenizer, [("Q?", "An answer with several words."), ("Q2?", "x")],
                     template="plain", progress_bar=False)
    assert mean_perplexity(out) == pytest.approx(1.0)


# ---------------------------------------------------------------- offline scorer
def test_offline_scorer_known_answers() -> None:
    from unlearn.evaluation.toxicity import OfflineScorer

    scorer = OfflineScorer(progress_bar=False)
    texts = ["fuck this shit", "hello friend", "what a damn mess", "nice weather today"]
    means, per = scorer.summarise(texts)
    assert per["obscene"] == [1.0, 0.0, 1.0, 0.0]
    assert means["obscene"] == 0.5
    assert per["toxicity"][0] > 0.9 and per["toxicity"][1] < 0.1 and per["toxicity"][3] < 0.1
    assert means["toxicity"] == pytest.approx(sum(per["toxicity"]) / 4)
    assert "not Detoxify" in scorer.labels["toxicity"] and "better-profanity" in scorer.labels["obscene"]
    assert scorer.summarise([])[0] == {"toxicity": 0.0, "obscene": 0.0}


def test_offline_scorer_agrees_with_jigsaw_labels(data_dir: Path) -> None:
    from sklearn.metrics import roc_auc_score

    from unlearn.evaluation.toxicity import OfflineScorer

    with open(data_dir / "jigsaw-toxic-sample" / "test_examples.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    per = OfflineScorer(progress_bar=False).score([r["comment_text"] for r in rows])
    assert roc_auc_score([int(r["toxic"]) for r in rows], per["toxicity"]) > 0.95  # measured 0.976
    agree = sum(int(r["obscene"]) == int(o) for r, o in zip(rows, per["obscene"], strict=True)) / len(rows)
    assert agree > 0.88  # measured 0.91


# ---------------------------------------------------------------- Detoxify, loaded offline from a tiny checkpoint
DETOX_CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
DETOX_BIAS = [2.0, -1.0, -3.0, 0.0, 0.5, -2.0]


def _tiny_detoxify(tmp_path: Path, vocab_file: bool = True) -> tuple[Path, Path]:
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path / "bert"
    folder.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "you", "are", "nice", "awful", "hello"]
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=len(DETOX_CLASSES))
    config.save_pretrained(folder)
    if vocab_file:
        (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor(DETOX_BIAS))
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"config": {"arch": {"args": {"model_type": "bert-base-uncased",
                                              "model_name": "BertForSequenceClassification",
                                              "tokenizer_name": "BertTokenizer",
                                              "num_classes": len(DETOX_CLASSES)}},
                           "dataset": {"args": {"classes": DETOX_CLASSES}}},
                "state_dict": model.state_dict()}, ckpt)
    return ckpt, folder


def test_detoxify_offline_checkpoint_gives_its_probabilities(tmp_path: Path, make_config) -> None:
    from hydra.utils import instantiate

    ckpt, folder = _tiny_detoxify(tmp_path)
    cfg = make_config("scorer=detoxify", f"scorer.checkpoint={ckpt}", f"scorer.config_dir={folder}",
                      "scorer.device=cpu", "scorer.progress_bar=false")
    scorer = instantiate(cfg.scorer)
    assert scorer.class_names == ["toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack"]
    means, per = scorer.summarise(["you are nice", "hello", "you are awful awful awful"])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert per["toxicity"] == pytest.approx([sig(2.0)] * 3, abs=1e-6)
    assert means["obscene"] == pytest.approx(sig(-3.0), abs=1e-6)
    assert scorer.labels["toxicity"].startswith("detoxify")
    ids = scorer.tokenizer("you are awful")["input_ids"]
    assert 1 not in ids  # no [UNK]: the vocabulary was read


def test_detoxify_missing_vocab_fails_loudly(tmp_path: Path) -> None:
    from unlearn.evaluation.toxicity import DetoxifyScorer

    ckpt, folder = _tiny_detoxify(tmp_path, vocab_file=False)
    with pytest.raises(ModelLoadError, match="vocab.txt"):
        DetoxifyScorer(checkpoint=str(ckpt), config_dir=str(folder), progress_bar=False)


def test_detoxify_without_checkpoint_offline_names_the_options() -> None:
    from unlearn.evaluation.toxicity import DetoxifyScorer

    with pytest.raises(ModelLoadError) as info:  # conftest sets HF_HUB_OFFLINE=1
        DetoxifyScorer(progress_bar=False)
    msg = str(info.value)
    assert "scorer.checkpoint=" in msg and "scorer.config_dir=" in msg and "scorer=offline" in msg


# ---------------------------------------------------------------- generation
def test_generation_is_batch_invariant_and_ordered(tiny_model) -> None:
    from unlearn.evaluation.generation import _cut_at_eos, distinct_prompts, generate_answers

    model, tok = tiny_model
    prompts = ["Hi", "How do I pick a lock on a door quickly?", "Tell me a long story about a dragon and a knight."]
    side = tok.padding_side
    model.train()  # generation switches to eval mode and must switch back
    one = [generate_answers(model, tok, [p], max_new_tokens=6, batch_size=1, progress_bar=False)[0] for p in prompts]
    batched = generate_answers(model, tok, prompts, max_new_tokens=6, batch_size=3, progress_bar=False)
    assert [g.prompt for g in batched] == prompts
    assert [g.answer for g in batched] == [g.answer for g in one]  # left padding is masked out
    assert all(g.n_tokens <= 6 for g in batched)
    assert tok.padding_side == side and model.training is True
    model.eval()
    assert _cut_at_eos([5, 7, 2, 2], {2}) == (2, True) and _cut_at_eos([5, 7], {2}) == (2, False)

    class E:
        def __init__(self, p):
            self.prompt = p

    assert distinct_prompts([E("a"), E("b"), E("a"), E("c")], 2) == ["a", "b"]


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from unlearn.models.embedded import load_embedded_tokenizer

    return load_embedded_tokenizer()


@pytest.fixture(scope="module")
def tiny_model(tiny_tokenizer):
    from unlearn.models.tiny import build_tiny_random

    loaded = build_tiny_random(seed=0, device="cpu")
    loaded.model.eval()
    return loaded.model, loaded.tokenizer
