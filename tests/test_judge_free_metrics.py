"""Judge-free and length-controlled harm metrics: the held-out preference margin (no generation),
the harmful rate of the original's answers cut to the method's lengths, and their path through a
run, periodic curves and the results tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import TINY
from unlearn.data.pku_saferlhf import load_pku_saferlhf
from unlearn.evaluation import stage as stage_mod
from unlearn.evaluation.generation import Generation
from unlearn.evaluation.judges.base import HarmJudge
from unlearn.evaluation.metrics import EvalContext, MetricConfigError, build_metrics
from unlearn.evaluation.metrics.length_control import LengthControlledHarm, cut_to_words
from unlearn.evaluation.metrics.preference import PreferenceMargin
from unlearn.evaluation.perplexity import answer_nll, model_logits_fn
from unlearn.experiment import run_experiment
from unlearn.results.collect import collect_runs
from unlearn.results.comparisons import PAIRED, against_original, write_comparisons
from unlearn.results.length_control import length_control_rows, write_length_control
from unlearn.results.tables import build_table

EVAL = [o for o in TINY if not o.startswith("eval.")] + [
    "eval.n_prompts=4", "eval.max_new_tokens=6", "eval.utility_max_examples=4", "eval.batch_size=4",
    "eval.progress_bar=false", "eval.cache=false", "trainer.max_steps=2", "scorer.progress_bar=false",
]
PREFERENCE = "{_target_:unlearn.evaluation.metrics.preference.PreferenceMargin,max_pairs:6}"


class LongAnswerJudge(HarmJudge):
    """Flags an answer with at least 5 words: a judge whose verdict is length alone."""

    name = "long-answer"

    def score(self, prompts, answers):
        return [1.0 if len(a.split()) >= 5 else 0.0 for a in answers]

    def describe(self):
        return "long-answer judge"


def test_preference_pairs_are_the_labelled_pairs_of_the_eval_split(data_dir: Path) -> None:
    split = load_pku_saferlhf(str(data_dir))
    pairs = stage_mod.preference_pairs(split.eval)
    assert len(pairs) == len(split.eval) // 2  # every row of the local copy has one safe, one unsafe answer
    rows = list(zip(split.eval[0::2], split.eval[1::2], strict=True))
    for (p, s, u), (a, b) in zip(pairs, rows, strict=True):
        assert {(a.prompt, a.response, a.harmful), (b.prompt, b.response, b.harmful)} == {(p, s, False), (p, u, True)}
    assert {p for p, _, _ in pairs} == {e.prompt for e in split.eval}
    assert not {p for p, _, _ in pairs} & {e.prompt for e in split.train}


def test_pairs_need_one_safe_and_one_unsafe_answer() -> None:
    from unlearn.data.types import Example

    rows = [Example("a", "u1", True), Example("a", "s1", False),   # one pair, unsafe first
            Example("b", "s2", False), Example("b", "s3", False),  # both safe: no pair
            Example("c", "s4", False), Example("c", "u4", True)]
    assert stage_mod.preference_pairs(rows) == [("a", "s1", "u1"), ("c", "s4", "u4")]


def test_margin_is_the_mean_token_loglik_difference(make_config, data_dir: Path) -> None:
    """Δ = ℓ(safe) − ℓ(unsafe) per pair, from the same NLLs the utility metric computes; swapping
    the answers flips every margin and the preference rate."""
    from hydra.utils import instantiate

    cfg = make_config("model=tiny_random")
    loaded = instantiate(cfg.model)
    pairs = stage_mod.preference_pairs(load_pku_saferlhf(str(data_dir)).eval)
    metric = PreferenceMargin(pairs_per_prompt=1, max_pairs=5, compute_dtype="float32")

    def ctx(triples):
        return EvalContext(loaded.model, loaded.tokenizer, [], [], [], None, lambda: None, lambda: None,
                           template="auto", max_length=64, batch_size=4, preference_pairs=triples)

    out = metric.compute(ctx(pairs))
    rows = out.files["preference"]
    assert len(rows) == 5 and len({r["prompt"] for r in rows}) == 5
    nll = answer_nll(model_logits_fn(loaded.model), loaded.tokenizer,
                     [(p, a) for p, s, u in metric.select(pairs) for a in (s, u)], "cpu", 64, "auto", 4, False)
    for i, r in enumerate(rows):
        safe, unsafe = nll[2 * i][0] / nll[2 * i][1], nll[2 * i + 1][0] / nll[2 * i + 1][1]
        assert r["margin"] == pytest.approx(unsafe - safe, abs=1e-4)  # shared prompt cache: float error only
    margin = out.intervals["preference_margin"]
    assert margin.estimate == pytest.approx(sum(r["margin"] for r in rows) / 5)
    assert margin.lo <= margin.estimate <= margin.hi
    assert out.intervals["safe_preference_rate"].estimate == pytest.approx(sum(r["margin"] > 0 for r in rows) / 5)
    assert all(r["safe_preferred"] == float(r["margin"] > 0) for r in rows)
    cut = PreferenceMargin(max_pairs=3, max_answer_tokens=4, compute_dtype="float32").compute(
        EvalContext(loaded.model, loaded.tokenizer, [], [], [], None, lambda: None, lambda: None, max_length=256,
                    preference_pairs=pairs)).files["preference"]
    assert [(r["safe_tokens"], r["unsafe_tokens"]) for r in cut] == [(4, 4)] * 3  # first 4 tokens, no EOS
    swapped = metric.compute(ctx([(p, u, s) for p, s, u in pairs])).intervals
    assert swapped["preference_margin"].estimate == pytest.approx(-margin.estimate)
    assert swapped["unsafe_nll"].estimate == pytest.approx(out.intervals["safe_nll"].estimate)


def test_bfloat16_products_move_margins_by_rounding_only(make_config, data_dir: Path, monkeypatch) -> None:
    """``compute_dtype``: bfloat16 under autocast gives the float32 margins up to bfloat16 rounding;
    ``auto`` follows the hardware; the label names the products; an unknown value names the options."""
    from hydra.utils import instantiate

    from unlearn.models.precision import resolve_compute_dtype

    loaded = instantiate(make_config("model=tiny_random").model)
    pairs = stage_mod.preference_pairs(load_pku_saferlhf(str(data_dir)).eval)
    ctx = EvalContext(loaded.model, loaded.tokenizer, [], [], [], None, lambda: None, lambda: None, max_length=128,
                      batch_size=4, preference_pairs=pairs)
    full, half = (PreferenceMargin(max_pairs=6, compute_dtype=d).compute(ctx) for d in ("float32", "bfloat16"))
    assert "float32 products" in full.labels["eval/labels/preference"]
    assert "bfloat16 products" in half.labels["eval/labels/preference"]
    diffs = [abs(a["margin"] - b["margin"]) for a, b in zip(full.files["preference"], half.files["preference"], strict=True)]
    assert 0 < max(diffs) < 0.05  # a different computation, within bfloat16's rounding
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())  # weights stay as loaded
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": False, "amx_bf16": False})
    assert resolve_compute_dtype("auto", "cpu") == "float32"  # emulated bfloat16 would be slower
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": False, "amx_bf16": True})
    assert resolve_compute_dtype("auto", "cpu") == "bfloat16"
    assert resolve_compute_dtype("float32", "cpu") == "float32"
    with pytest.raises(MetricConfigError, match="auto, float32, bfloat16"):
        build_metrics([{"_target_": "unlearn.evaluation.metrics.preference.PreferenceMargin", "compute_dtype": "fp8"}])


def test_shared_prompt_nll_equals_separate_scoring(make_config, data_dir: Path) -> None:
    """The prompt encoded once with its KV cache reused (after the prompts' common prefix, encoded
    once for all) gives answer_nll's values: groups of 1–3 answers, cut answers without EOS, and
    prompts cut by max_length (scored separately)."""
    from hydra.utils import instantiate

    from unlearn.data.formatting import encode_example
    from unlearn.evaluation.shared_prompt import MIN_SHARED_PREFIX, common_prefix, shared_prompt_nll, split_prompt

    loaded = instantiate(make_config("model=tiny_random").model)
    pairs = stage_mod.preference_pairs(load_pku_saferlhf(str(data_dir)).eval)[:7]
    groups = [(p, [s, u][: 1 + i % 2] + (["Short."] if i % 3 == 0 else [])) for i, (p, s, u) in enumerate(pairs)]
    eos = [[j != 1 for j in range(len(answers))] for _, answers in groups]
    prompts = [split_prompt(encode_example(loaded.tokenizer, p, a[0], 256, "auto"))[0] for p, a in groups]
    assert len(common_prefix(prompts)) >= MIN_SHARED_PREFIX  # the chat template's system turn is shared
    for max_length in (256, 40):  # 40: most prompts are cut, those groups take the separate path
        got = shared_prompt_nll(loaded.model, loaded.tokenizer, groups, "cpu", max_length, "auto", 3, with_eos=eos)
        flat = [(p, a) for p, answers in groups for a in answers]
        want = answer_nll(model_logits_fn(loaded.model), loaded.tokenizer, flat, "cpu", max_length, "auto", 4, False,
                          with_eos=[k for e in eos for k in e])
        assert [len(g) for g in got] == [len(a) for _, a in groups]
        for (n, c), (wn, wc) in zip([v for g in got for v in g], want, strict=True):
            assert c == wc and n == pytest.approx(wn, rel=1e-5, abs=1e-4)


def test_common_prefix_leaves_every_prompt_a_token() -> None:
    from unlearn.evaluation.shared_prompt import common_prefix

    assert common_prefix([[1, 2, 3, 4], [1, 2, 3, 5, 6]]) == [1, 2, 3]
    assert common_prefix([[1, 2, 3], [1, 2, 3, 4]]) == [1, 2]  # the shorter prompt keeps its last token
    assert common_prefix([[7, 2], [1, 2]]) == [] and common_prefix([]) == []


def test_preference_settings_and_missing_pairs_fail_with_the_fix() -> None:
    with pytest.raises(MetricConfigError, match="pairs_per_prompt must be"):
        build_metrics([{"_target_": "unlearn.evaluation.metrics.preference.PreferenceMargin", "pairs_per_prompt": 0}])
    ctx = EvalContext(torch.nn.Linear(1, 1), None, [], [], [], None, lambda: None, lambda: None)
    with pytest.raises(MetricConfigError, match="no \\(safe, unsafe\\) answer pairs"):
        PreferenceMargin().compute(ctx)


def test_cut_to_words() -> None:
    assert cut_to_words("Step one:  mix\nthe two things well.", 3) == "Step one: mix"
    assert cut_to_words("short", 10) == "short" and cut_to_words("a b", 0) == ""


def test_length_control_rejudges_the_original_cut_to_the_same_lengths() -> None:
    """With a judge that flags length alone, the whole drop is explained by length: the original
    cut to the method's lengths is flagged exactly as often as the method."""
    prompts = ["p0", "p1", "p2", "p3"]
    original = ["one two three four five six seven", "a b c d e f", "x y", "w1 w2 w3 w4 w5"]
    after = ["short answer", "one two three four five", "yes", "tiny"]
    ctx = EvalContext(None, None, prompts, [Generation(p, a, 3, True) for p, a in zip(prompts, after, strict=True)],
                      [], None, LongAnswerJudge, lambda: None,
                      baseline=[{"prompt": p, "answer": a} for p, a in zip(prompts, original, strict=True)])
    out = LengthControlledHarm().compute(ctx)
    assert out.per_prompt["harmful_length_matched"] == [False, True, False, False]
    assert out.intervals["harmful_rate_length_matched"].estimate == pytest.approx(0.25)
    assert out.per_prompt["harm_drop_beyond_length"] == [0.0, 0.0, 0.0, 0.0]
    # the original's own evaluation: no baseline, the matched rate is its harmful rate
    own = EvalContext(None, None, prompts, [Generation(p, a, 3, True) for p, a in zip(prompts, original, strict=True)],
                      [], None, LongAnswerJudge, lambda: None, per_prompt={"harmful": [True, True, False, True]})
    assert LengthControlledHarm().compute(own).intervals["harmful_rate_length_matched"].estimate == pytest.approx(0.75)


def test_a_run_writes_preference_curves_and_length_control(make_config, cache_dir: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """before/after/periodic preference values from preference.jsonl; periodic stages generate
    nothing; the length-matched rate uses the before stage's answers; the table shows both."""
    monkeypatch.setattr("unlearn.evaluation.stage.EvaluationStage.judge", property(lambda self: LongAnswerJudge()))
    entries = f"eval.metrics=[harmful_rate,length_control,{PREFERENCE}]"
    run_dir = tmp_path / "sweep" / "run"
    cfg = make_config(*EVAL, entries, f"eval.periodic_metrics=[{PREFERENCE}]", "eval.every_n_steps=1",
                      f"cache_dir={cache_dir}")
    summary = run_experiment(cfg, run_dir)
    assert summary["status"] == "completed"
    rows = [json.loads(x) for x in (run_dir / "preference.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["before"] * 6 + ["step_1"] * 6 + ["step_2"] * 6 + ["after"] * 6
    for stage in ("before", "after"):
        block = [r for r in rows if r["stage"] == stage]
        assert summary[f"eval/{stage}/preference_margin"] == pytest.approx(sum(r["margin"] for r in block) / 6)
        assert summary[f"eval/{stage}/preference_margin_lo"] <= summary[f"eval/{stage}/preference_margin"]
    gens = [json.loads(x) for x in (run_dir / "generations.jsonl").read_text().splitlines()]
    assert {g["stage"] for g in gens} == {"before", "after"}  # periodic curves generate nothing
    before = {g["prompt"]: g["answer"] for g in gens if g["stage"] == "before"}
    after = [g for g in gens if g["stage"] == "after"]
    for g in after:
        cut = cut_to_words(before[g["prompt"]], len(g["answer"].split()))
        assert g["harmful_length_matched"] == LongAnswerJudge().judge([g["prompt"]], [cut])[0].harmful
        assert g["harm_drop_beyond_length"] == float(g["harmful_length_matched"]) - float(g["harmful"])
    table = build_table("demo", collect_runs([tmp_path / "sweep"]))
    shown = [c.key for c in table.shown]
    assert {"preference_margin", "safe_preference_rate", "unsafe_nll", "harm_drop_beyond_length"} <= set(shown)
    row = table.rows[1]
    assert row.mean["preference_margin"] == pytest.approx(summary["eval/after/preference_margin"])
    assert row.how["preference_margin"].startswith("seeds×prompts")  # the per-pair file was read back
    assert table.rows[0].mean["unsafe_nll"] == pytest.approx(summary["eval/before/unsafe_nll"])
    found = {c.metric: c for c in against_original(table)}
    margin = found["preference_margin"]
    assert margin.how == PAIRED and margin.n_prompts == 6 and margin.seeds == (1, 1)
    assert margin.interval.estimate == pytest.approx(summary["eval/after/preference_margin"]
                                                     - summary["eval/before/preference_margin"])
    assert found["harmful_rate"].interval.estimate == pytest.approx(summary["eval/after/harmful_rate"]
                                                                    - summary["eval/before/harmful_rate"])
    (lc,) = length_control_rows(table)  # drop = explained by length + surviving the control
    assert lc["drop"] == pytest.approx(lc["explained_by_length"] + lc["surviving"])
    assert lc["surviving"] == pytest.approx(summary["eval/after/harm_drop_beyond_length"])
    assert "explained by length" in write_length_control(table, tmp_path / "tables")["length_md"].read_text()
    files = write_comparisons(table, tmp_path / "tables")
    assert "differences against original" in files["paired_md"].read_text()
    assert any(line.startswith("demo,original,") for line in files["paired_csv"].read_text().splitlines())
