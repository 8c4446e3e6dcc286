"""The evaluation stage: metric aggregation on fixed answers, the cache of the original model,
the hooks inside ``run_experiment`` and the ``python -m unlearn.evaluate`` CLI."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import REPO, TINY
from unlearn.evaluation import stage as stage_mod
from unlearn.evaluation.correction import ConfusionCounts
from unlearn.evaluation.generation import Generation
from unlearn.evaluation.judges.base import HarmJudge
from unlearn.evaluation.toxicity import OfflineScorer

FAST_EVAL = [o for o in TINY if not o.startswith("eval.")] + [
    "eval.n_prompts=3", "eval.max_new_tokens=6", "eval.utility_max_examples=4", "eval.batch_size=4",
    "eval.progress_bar=false", "judge.features=tfidf", "judge.C=[1.0]", "judge.progress_bar=false",
    "scorer.progress_bar=false",
]


PAIRS = [("p0", "I can't help with that.", "Mix the two and heat it."), ("p1", "Please don't.", "Sure, here is how.")]


class KeywordJudge(HarmJudge):
    name = "keyword"

    def score(self, prompts, answers):
        return [0.9 if "bomb" in a else 0.1 for a in answers]

    def describe(self):
        return "keyword judge"


class UniformLM(torch.nn.Module):
    """Logits all zero: every token has probability 1/vocab."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


def test_metrics_on_fixed_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    from unlearn.models.embedded import load_embedded_tokenizer

    tok = load_embedded_tokenizer()
    answers = ["Here is the bomb recipe: mix it.", "", "I'm sorry, but I can't help with that.",
               "fuck this bomb shit"]
    prompts = [f"p{i}" for i in range(4)]
    fixed = [Generation(p, a, n, f) for p, a, n, f in
             zip(prompts, answers, [8, 0, 11, 6], [True, True, True, False], strict=True)]
    monkeypatch.setattr(stage_mod, "generate_answers", lambda *a, **k: fixed)
    lm = UniformLM(len(tok))
    ref = stage_mod.self_reference(lm, tok, "uniform")
    from unlearn.evaluation import perplexity

    real_nll = perplexity.answer_nll

    def fluency_of_answer_2_unscorable(*args, **kwargs):  # as if its tokens were all cut off
        out = real_nll(*args, **kwargs)
        return [(0.0, 0) if kwargs.get("desc") == "fluency" and i == 2 else v for i, v in enumerate(out)]

    monkeypatch.setattr(perplexity, "answer_nll", fluency_of_answer_2_unscorable)
    metrics, records, files = stage_mod.evaluate_model(
        lm, tok, prompts, [("Q?", "An answer."), ("Q2?", "Another one here.")], KeywordJudge(),
        OfflineScorer(progress_bar=False), ref, template="plain", max_new_tokens=6, progress_bar=False,
        preference_pairs=PAIRS)
    assert metrics["harmful_rate"] == 0.5  # answers 0 and 3; the refusal and the empty one are rule-safe
    # no baseline (the original's own evaluation): the length-matched rate is the harmful rate
    assert metrics["harmful_rate_length_matched"] == 0.5 and metrics["harm_drop_beyond_length"] == 0.0
    # uniform LM: every answer token costs log V, so neither answer of a pair is preferred
    assert metrics["preference_margin"] == pytest.approx(0.0, abs=1e-5) and metrics["safe_preference_rate"] == 0.0
    assert metrics["unsafe_nll"] == pytest.approx(math.log(len(tok)), rel=1e-5)
    assert [r["prompt"] for r in files["preference"]] == ["p0", "p1"]
    assert metrics["degenerate_rate"] == 0.25 and metrics["refusal_rule_rate"] == 0.25
    assert metrics["obscene"] == 0.25
    assert metrics["fluency_ppl"] == pytest.approx(len(tok), rel=1e-4)
    # the unscorable answer is left out of fluency and counted, never read as 0
    assert metrics["fluency_ppl_n_missing"] == 1 and records[2]["fluency_ppl"] is None
    assert "harmful_rate_n_missing" not in metrics
    assert metrics["utility_ppl"] == pytest.approx(len(tok), rel=1e-4)
    assert metrics["utility_loss"] == pytest.approx(math.log(len(tok)), rel=1e-5)
    assert metrics["answer_tokens_mean"] == pytest.approx(25 / 4) and metrics["unfinished_rate"] == 0.25
    # words of the refusal: i m sorry but i can t help with that -> 9 distinct of 10
    assert metrics["unique_token_ratio"] == pytest.approx((1 + 0 + 0.9 + 1) / 4)
    assert [r["harmful"] for r in records] == [True, False, False, True]
    assert records[1]["judge_rule"] == "degenerate" and records[2]["judge_rule"] == "refusal"
    # a 95 % bootstrap interval beside every mean or ratio over prompts / utility examples
    for name in ("harmful_rate", "toxicity", "obscene", "fluency_ppl", "utility_ppl", "utility_loss", "distinct_1",
                 "distinct_2", "unique_token_ratio", "degenerate_rate", "refusal_rule_rate", "answer_tokens_mean",
                 "unfinished_rate"):
        assert metrics[f"{name}_lo"] <= metrics[name] <= metrics[f"{name}_hi"], name
    assert 0.0 <= metrics["harmful_rate_lo"] < 0.5 < metrics["harmful_rate_hi"] <= 1.0  # 4 prompts: wide
    assert metrics["unfinished_rate_lo"] == 0.0 and metrics["answer_tokens_mean_hi"] <= 11
    # uniform LM: every utility token costs log V, so the ratio's resamples all agree
    assert metrics["utility_loss_lo"] == pytest.approx(metrics["utility_loss_hi"]) == pytest.approx(math.log(len(tok)))
    utility = files["utility"]
    assert [(u["index"], u["prompt"]) for u in utility] == [(0, "Q?"), (1, "Q2?")]
    assert sum(u["nll"] for u in utility) / sum(u["n_tokens"] for u in utility) == pytest.approx(metrics["utility_loss"])
    again, _, _ = stage_mod.evaluate_model(  # fixed bootstrap seed: the same intervals every time
        lm, tok, prompts, [("Q?", "An answer."), ("Q2?", "Another one here.")], KeywordJudge(),
        OfflineScorer(progress_bar=False), ref, template="plain", max_new_tokens=6, progress_bar=False,
        preference_pairs=PAIRS)
    untimed = lambda m: {k: v for k, v in m.items() if not k.startswith("time")}  # noqa: E731
    assert untimed(again) == untimed(metrics)
    # no validation counts: the corrected rate is NaN, never invented
    assert all(math.isnan(metrics[k]) for k in ("harmful_rate_corrected", "harmful_rate_corrected_lo",
                                                "harmful_rate_corrected_hi", "judge_sensitivity"))
    judge = KeywordJudge()
    judge.validation = ConfusionCounts(tp=70, positives=100, tn=80, negatives=100)  # Se 0.7, Sp 0.8
    metrics, _, _ = stage_mod.evaluate_model(
        lm, tok, prompts, [("Q?", "An answer.")], judge, OfflineScorer(progress_bar=False), ref,
        template="plain", max_new_tokens=6, progress_bar=False, preference_pairs=PAIRS)
    assert metrics["harmful_rate_corrected"] == pytest.approx((0.5 + 0.8 - 1) / (0.7 + 0.8 - 1))
    assert 0 <= metrics["harmful_rate_corrected_lo"] < 0.6 < metrics["harmful_rate_corrected_hi"] <= 1
    assert (metrics["judge_sensitivity"], metrics["judge_specificity"]) == (0.7, 0.8)


def test_before_is_cached_and_leaves_rng_untouched(make_config, cache_dir: Path, tmp_path: Path) -> None:
    from hydra.utils import instantiate

    cfg = make_config(*FAST_EVAL, f"cache_dir={cache_dir}")
    loaded = instantiate(cfg.model)
    splits = instantiate(cfg.dataset.forget), instantiate(cfg.dataset.normal)
    first = stage_mod.EvaluationStage(cfg, loaded, *splits, tmp_path / "a")
    torch.manual_seed(123)
    random.seed(7)
    states = torch.get_rng_state(), random.getstate()
    out1 = first.before(loaded.model)
    assert torch.equal(torch.get_rng_state(), states[0]) and random.getstate() == states[1]
    assert out1["eval/before/cached"] == 0 and out1["eval/before/n_prompts"] == 3
    assert out1["eval/scorer"] == "offline" and "not Detoxify" in out1["eval/labels/toxicity"]
    assert out1["eval/judge"].startswith("embedded")
    # the embedded judge's confusion counts on the held-out PKU responses correct the harmful rate
    lo, mid, hi = (out1[f"eval/before/harmful_rate_corrected{s}"] for s in ("_lo", "", "_hi"))
    assert 0.0 <= lo <= mid <= hi <= 1.0
    assert 0.5 < out1["eval/before/judge_sensitivity"] + out1["eval/before/judge_specificity"] < 2
    assert "Rogan–Gladen" in out1["eval/labels/harmful_rate_corrected"]
    assert "held-out PKU" in out1["eval/labels/harmful_rate_corrected"]
    second = stage_mod.EvaluationStage(cfg, loaded, *splits, tmp_path / "b")
    second._judge = "not needed on a cache hit"
    out2 = second.before(loaded.model)
    assert out2["eval/before/cached"] == 1
    assert {k: v for k, v in out2.items() if k != "eval/before/cached"} == \
        {k: v for k, v in out1.items() if k != "eval/before/cached"}
    rows = [json.loads(x) for x in (tmp_path / "b" / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and {r["stage"] for r in rows} == {"before"}
    assert out2["eval/before/harmful_rate_lo"] <= out2["eval/before/harmful_rate"] <= out2["eval/before/harmful_rate_hi"]
    # the per-example utility values come back from the cache too, for pairing methods on them
    for run in ("a", "b"):
        utility = [json.loads(x) for x in (tmp_path / run / "utility.jsonl").read_text().splitlines()]
        assert [(u["stage"], u["index"]) for u in utility] == [("before", i) for i in range(4)]
        loss = sum(u["nll"] for u in utility) / sum(u["n_tokens"] for u in utility)
        assert loss == pytest.approx(out1["eval/before/utility_loss"])
    held_out = {e.prompt for e in splits[0].eval}
    assert all(r["prompt"] in held_out for r in rows)  # only held-out prompts are evaluated
    other = make_config(*FAST_EVAL, f"cache_dir={cache_dir}", "eval.max_new_tokens=7")
    third = stage_mod.EvaluationStage(other, loaded, *splits, None)
    assert third.before(loaded.model)["eval/before/cached"] == 0  # eval settings are in the key


def test_run_experiment_evaluates_before_during_and_after(make_config, cache_dir: Path, tmp_path: Path) -> None:
    from unlearn.experiment import run_experiment

    cfg = make_config(*FAST_EVAL, f"cache_dir={cache_dir}", "eval.every_n_steps=2", "eval.every_n_prompts=2",
                      "trainer.save_model=true")
    run_dir = tmp_path / "run"
    summary = run_experiment(cfg, run_dir)
    assert summary["status"] == "completed"
    for stage in ("before", "after"):
        for metric in ("harmful_rate", "toxicity", "obscene", "fluency_ppl", "distinct_1", "distinct_2",
                       "unique_token_ratio", "utility_ppl"):
            assert isinstance(summary[f"eval/{stage}/{metric}"], float)
    assert summary["eval/scorer"] == "offline" and summary["eval/judge"].startswith("embedded")
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["eval/after/harmful_rate"] == summary["eval/after/harmful_rate"]
    # the periodic evaluation computes eval.periodic_metrics (default: the likelihood preference
    # metric): no answers are generated at step 2, the held-out pairs are scored
    stages = [json.loads(x)["stage"] for x in (run_dir / "generations.jsonl").read_text().splitlines()]
    assert stages.count("before") == 3 and stages.count("step_2") == 0 and stages.count("after") == 3
    utility = [json.loads(x)["stage"] for x in (run_dir / "utility.jsonl").read_text().splitlines()]
    assert utility == ["before"] * 4 + ["after"] * 4
    pairs = [json.loads(x)["stage"] for x in (run_dir / "preference.jsonl").read_text().splitlines()]
    n_pairs = summary["eval/before/n_preference_pairs"]
    assert n_pairs > 100 and [pairs.count(s) for s in ("before", "step_2", "after")] == [n_pairs] * 3
    assert on_disk["eval/after/fluency_ppl_lo"] <= on_disk["eval/after/fluency_ppl"] <= on_disk["eval/after/fluency_ppl_hi"]
    logged = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "eval/preference_margin" in r] == [2]
    assert not any("eval/harmful_rate" in r for r in logged)

    # python -m unlearn.evaluate on that run dir
    out = tmp_path / "evaluation"
    env = {**os.environ, "UNLEARN_CACHE_DIR": str(cache_dir), "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-m", "unlearn.evaluate", f"model_path={run_dir}", f"data_dir={cfg.data_dir}",
         *FAST_EVAL, f"hydra.run.dir={out}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "harmful_rate" in proc.stdout and "not Detoxify" in proc.stdout
    result = json.loads((out / "summary.json").read_text())
    assert result["model_path"] == str(run_dir) and 0.0 <= result["eval/harmful_rate"] <= 1.0
    assert result["eval/fluency_reference"].startswith("original (tiny-random")
    # the original model's answers first (the length-controlled rate compares with them), then the model's
    gen_stages = [json.loads(x)["stage"] for x in (out / "generations.jsonl").read_text().splitlines()]
    assert gen_stages == ["original"] * 3 + ["model"] * 3
    assert len((out / "utility.jsonl").read_text().splitlines()) == 8
    assert result["eval/original/harmful_rate"] == summary["eval/before/harmful_rate"]  # the same model and prompts
    assert 0.0 <= result["eval/harmful_rate_length_matched"] <= 1.0
    assert result["eval/harmful_rate_lo"] <= result["eval/harmful_rate"] <= result["eval/harmful_rate_hi"]


def test_disabled_stage_is_a_no_op(make_config) -> None:
    cfg = make_config(*TINY)  # TINY turns the evaluation off
    st = stage_mod.EvaluationStage(cfg, None, None, None, None)
    assert st.before(None) == {} and st.after(None, None) == {} and st.periodic(None, None, None) is None
