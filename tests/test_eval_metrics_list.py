"""Metrics as the ``eval.metrics`` ``_target_`` list: a new metric is one module and one entry,
its declared columns reach summary.json and the results tables; FreshQA and lm-eval metrics on
tiny_random; bad entries fail with the fix."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import TINY

from unlearn.evaluation.metrics import (
    Column,
    EvalContext,
    Metric,
    MetricConfigError,
    MetricOutput,
    build_metrics,
    default_metric_names,
)
from unlearn.experiment import run_experiment
from unlearn.results.collect import collect_runs
from unlearn.results.tables import build_table, to_markdown

EVAL = [o for o in TINY if not o.startswith("eval.")] + [
    "eval.n_prompts=4", "eval.max_new_tokens=6", "eval.utility_max_examples=4", "eval.batch_size=4",
    "eval.progress_bar=false", "eval.cache=false", "trainer.max_steps=1", "scorer.progress_bar=false",
]
QUESTION_MARKS = {"_target_": "test_eval_metrics_list.QuestionMarks"}


class QuestionMarks(Metric):
    """A metric defined outside the package: the share of answers containing '?'."""

    name = "question_marks"
    columns = (Column("question_mark_rate", "Answers with '?'", "lower", 3, field="has_question_mark"),)

    def compute(self, ctx: EvalContext) -> MetricOutput:
        from unlearn.uncertainty import mean_interval

        flags = [float("?" in a) for a in ctx.answers]
        return MetricOutput(intervals={"question_mark_rate": mean_interval(flags, **ctx.bootstrap)},
                            per_prompt={"has_question_mark": [bool(f) for f in flags]})


def test_a_new_metric_needs_one_module_and_one_entry(make_config, cache_dir: Path, tmp_path: Path) -> None:
    """Only the new metric and utility run (no judge is built); its column reaches the table."""
    entries = f"eval.metrics=[utility,{{_target_:{QUESTION_MARKS['_target_']}}}]"
    run_dir = tmp_path / "sweep" / "run"
    summary = run_experiment(make_config(*EVAL, entries, f"cache_dir={cache_dir}"), run_dir)
    assert summary["status"] == "completed"
    assert "eval/after/harmful_rate" not in summary and "eval/judge" not in summary
    answers = [json.loads(x) for x in (run_dir / "generations.jsonl").read_text().splitlines()]
    after = [a for a in answers if a["stage"] == "after"]
    rate = sum("?" in a["answer"] for a in after) / len(after)
    assert summary["eval/after/question_mark_rate"] == pytest.approx(rate)
    assert [a["has_question_mark"] for a in after] == ["?" in a["answer"] for a in after]
    assert [c["key"] for c in summary["eval/columns"]] == ["utility_ppl", "utility_loss", "question_mark_rate"]
    table = build_table("demo", collect_runs([tmp_path / "sweep"]))
    assert [c.key for c in table.shown] == ["utility_ppl", "question_mark_rate"]
    assert "Answers with '?' ↓" in to_markdown(table).splitlines()[2]
    row = table.rows[1]
    assert row.mean["question_mark_rate"] == pytest.approx(rate)
    assert row.how["question_mark_rate"].startswith("seeds×prompts")  # read back from the declared field


def test_default_list_is_conf_eval_default() -> None:
    names = default_metric_names()
    assert names[:2] == ["harmful_rate", "length_control"]  # length control reuses the harm verdicts
    assert {"toxicity", "fluency", "diversity", "utility", "answers", "behaviour", "preference"} <= set(names)
    keys = [c.key for m in build_metrics(names) for c in m.columns]
    assert len(keys) == len(set(keys))  # one owner per summary key


@pytest.mark.parametrize("entries, message", [
    (["nope"], r"unknown metric 'nope'; choose from \[.*freshqa.*lm_eval"),
    ([{"_target_": "unlearn.evaluation.metrics.nope.Missing"}], "check the _target_ path"),
    ([{"_target_": "unlearn.evaluation.judges.base.Verdict", "harmful": True, "score": 0.0}],
     "not a subclass of .*Metric"),
    (["utility", "utility"], "two metrics are named"),
    ([{"_target_": "unlearn.evaluation.metrics.freshqa.FreshQAUtility", "split": "VAL"}], "split must be TEST or DEV"),
    ([{"_target_": "unlearn.evaluation.metrics.lm_eval.LmEvalTasks", "tasks": []}], "tasks is empty"),
    ([42], "neither an option of conf/metric/"),
])
def test_bad_metric_entries_fail_with_the_fix(entries, message) -> None:
    with pytest.raises(MetricConfigError, match=message):
        build_metrics(entries)


def test_freshqa_and_lm_eval_metrics_on_tiny(make_config, cache_dir: Path, tmp_path: Path) -> None:
    """FreshQA loss and MMLU-dev accuracy (lm-eval, offline task) as configured metrics."""
    pytest.importorskip("inspect_evals")
    pytest.importorskip("lm_eval")
    entries = ("eval.metrics=[{_target_:unlearn.evaluation.metrics.freshqa.FreshQAUtility,n_questions:6},"
               "{_target_:unlearn.evaluation.metrics.lm_eval.LmEvalTasks,tasks:[mmlu_dev_offline],limit:5,"
               "include_defaults:false}]")
    run_dir = tmp_path / "sweep" / "run"
    summary = run_experiment(make_config(*EVAL, entries, f"cache_dir={cache_dir}"), run_dir)
    assert summary["status"] == "completed"
    for stage in ("before", "after"):
        rows = [json.loads(x) for x in (run_dir / "freshqa.jsonl").read_text().splitlines()]
        rows = [r for r in rows if r["stage"] == stage]
        assert len(rows) == 6 and summary[f"eval/{stage}/freshqa_n"] == 6
        loss = sum(r["nll"] for r in rows) / sum(r["n_tokens"] for r in rows)
        assert summary[f"eval/{stage}/freshqa_loss"] == pytest.approx(loss)
        assert sum(r["value"] for r in rows) / 6 == pytest.approx(loss)
        assert loss > math.log(10)  # a random tiny model is far from fluent English
        acc = summary[f"eval/{stage}/lm_eval/mmlu_dev_offline/acc"]
        docs = [json.loads(x) for x in (run_dir / "lm_eval_mmlu_dev_offline.jsonl").read_text().splitlines()]
        docs = [d for d in docs if d["stage"] == stage]
        assert [d["doc_id"] for d in docs] == list(range(5)) and {d["value"] for d in docs} <= {0.0, 1.0}
        assert acc == pytest.approx(sum(d["value"] for d in docs) / 5)
        assert summary[f"eval/{stage}/lm_eval/mmlu_dev_offline/n"] == 5
    assert summary["eval/lm_eval"].startswith("lm-eval 0.4")
    table = build_table("demo", collect_runs([tmp_path / "sweep"]))
    assert [c.key for c in table.shown] == ["freshqa_loss", "lm_eval/mmlu_dev_offline/acc"]
    row = table.rows[1]
    assert row.how["freshqa_loss"].startswith("seeds×prompts")  # the per-question file was read back
    assert row.mean["lm_eval/mmlu_dev_offline/acc"] == pytest.approx(summary["eval/after/lm_eval/mmlu_dev_offline/acc"])
