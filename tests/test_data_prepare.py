"""``python -m unlearn.data``: the local data folder (write, check), the pinned hub revisions, the
pre-flight data check of runs and evaluations, and the before → after report of a run.

Offline: the hub is replaced by fake rows (or rows rebuilt from the shared copies); the PyRIT
labels come from the installed pyrit package."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from conftest import CONF, REPO, TINY, compose_config
from unlearn.data import layout, prepare
from unlearn.errors import DataError, HubUnavailableError


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("UNLEARN_DATA_DIR", None)
    return subprocess.run([sys.executable, "-m", "unlearn.data", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------- --check

def test_check_of_an_empty_folder_lists_what_is_missing(tmp_path: Path) -> None:
    proc = run_cli(str(tmp_path), "--check")
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    for f in layout.FILES:
        assert f"MISSING  {f.path}" in out
    assert "3 required file(s) missing" in out
    assert f"make data DATA_DIR={tmp_path}" in out
    assert "PKU-Alignment/PKU-SafeRLHF@v0, split test" in out
    assert "pyrit==1.1.0" in out
    assert not list(tmp_path.iterdir())  # --check writes nothing


def test_check_of_the_shared_data_passes(data_dir: Path, capsys) -> None:
    assert prepare.main([str(data_dir), "--check"]) == 0
    out = capsys.readouterr().out
    assert "all required files present" in out and "MISSING" not in out and "BAD" not in out
    assert "5135 pairs, 930 prompts" in out and "817 questions" in out


def test_check_reports_an_unreadable_file(data_dir: Path, tmp_path: Path, capsys) -> None:
    for f in layout.FILES:
        (tmp_path / f.path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f.path).write_bytes((data_dir / f.path).read_bytes())
    (tmp_path / layout.PYRIT_FILE).write_text("{not json\n")
    assert prepare.main([str(tmp_path), "--check"]) == 1
    out = capsys.readouterr().out
    assert f"BAD      {layout.PYRIT_FILE}" in out and "malformed JSON" in out
    assert "note     pku-saferlhf-v0-test-pairs/SOURCE.md is missing" in out


# --------------------------------------------------------------------------- writing the folders

def test_pyrit_labels_are_copied_from_the_installed_package(data_dir: Path, tmp_path: Path) -> None:
    if importlib.util.find_spec("pyrit") is None:
        pytest.skip("pyrit is not installed (make setup installs it)")
    prepare.prepare(tmp_path, [layout.PYRIT_DIR])
    written = (tmp_path / layout.PYRIT_FILE).read_bytes()
    assert written == (data_dir / layout.PYRIT_FILE).read_bytes()  # the copy the results used
    source = (tmp_path / layout.PYRIT_DIR / "SOURCE.md").read_text()
    assert "MIT" in source and "| 1593 |" in source and "identical to that copy" in source


def hub_row(i: int, safe0: bool, safe1: bool, prompt: str | None = None) -> dict:
    return {"prompt": prompt or f"prompt {i // 2}", "response_0": f"answer {i}a", "response_1": f"answer {i}b",
            "is_response_0_safe": safe0, "is_response_1_safe": safe1,
            "safer_response_id": 0 if safe0 else 1, "better_response_id": 1}


def test_pku_pairs_from_the_pinned_hub_test_split(tmp_path: Path, monkeypatch) -> None:
    rows = [hub_row(0, True, False), hub_row(1, False, True), hub_row(2, True, True), hub_row(3, False, False),
            {**hub_row(4, True, False), "response_1": "answer 4a"}]
    calls = []

    def fake_hub(hub_id, split, name=None, revision=None):
        calls.append((hub_id, split, name, revision))
        return rows

    monkeypatch.setattr("unlearn.hub.load_hub_dataset", fake_hub)
    prepare.prepare(tmp_path, [layout.PKU_DIR])
    assert calls == [("PKU-Alignment/PKU-SafeRLHF", "test", None, "v0")]
    schema = [json.loads(x) for x in (tmp_path / layout.PKU_FILE).read_text().splitlines()]
    assert [r["id"] for r in schema] == [0, 1]
    assert schema[1]["response_0"] == "answer 1a" and schema[1]["is_response_1_safe"] is True  # hub order kept
    pairs = [json.loads(x) for x in (tmp_path / layout.PKU_DIR / "pairs.jsonl").read_text().splitlines()]
    assert pairs[1] == {"id": 1, "prompt": "prompt 0", "safe_response": "answer 1b", "unsafe_response": "answer 1a"}
    source = (tmp_path / layout.PKU_DIR / "SOURCE.md").read_text()
    assert "split `test`" in source and "revision `v0`" in source and "CC BY-NC 4.0" in source
    assert "The hub split has 5 rows: kept 2" in source and "1 with both responses safe" in source

    from unlearn.data.pku_saferlhf import load_pku_saferlhf

    split = load_pku_saferlhf(str(tmp_path), eval_fraction=0.0)
    assert sorted((e.response, e.harmful) for e in split.train) == [
        ("answer 0a", False), ("answer 0b", True), ("answer 1a", True), ("answer 1b", False)]


def test_truthfulqa_csv_from_hub_rows_reads_like_the_shared_copy(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """Hub rows rebuilt from the shared CSV → TruthfulQA.csv: the loader and the judge read the same."""
    from unlearn.data.records import read_csv
    from unlearn.data.truthfulqa import load_truthfulqa
    from unlearn.evaluation.judges.training_data import truthfulqa_correct_answers

    def split_answers(text: str) -> list[str]:
        return [a.strip() for a in text.split(";") if a.strip()]

    rows = [{"type": r["Type"], "category": r["Category"], "question": r["Question"], "best_answer": r["Best Answer"],
             "correct_answers": split_answers(r["Correct Answers"]),
             "incorrect_answers": split_answers(r["Incorrect Answers"]), "source": r["Source"]}
            for _, r in read_csv(data_dir / layout.TRUTHFULQA_FILE)]
    calls = []
    monkeypatch.setattr("unlearn.hub.load_hub_dataset",
                        lambda *a, **k: calls.append((a, k)) or rows)
    prepare.prepare(tmp_path, [layout.TRUTHFULQA_DIR])
    assert calls == [(("truthfulqa/truthful_qa", "validation", "generation"), {"revision": layout.TRUTHFULQA.revision})]
    with open(tmp_path / layout.TRUTHFULQA_FILE, newline="", encoding="utf-8") as f:
        assert next(csv.reader(f)) == list(prepare.TRUTHFULQA_COLUMNS)
    assert load_truthfulqa(str(tmp_path)) == load_truthfulqa(str(data_dir))
    assert truthfulqa_correct_answers(tmp_path) == truthfulqa_correct_answers(data_dir)
    assert "| `TruthfulQA.csv` | 817 |" in (tmp_path / layout.TRUTHFULQA_DIR / "SOURCE.md").read_text()


def test_without_network_what_can_be_written_is_written(tmp_path: Path, monkeypatch, capsys) -> None:
    import urllib.error
    import urllib.request

    def no_hub(hub_id, *a, **k):
        raise HubUnavailableError(f"cannot reach the Hugging Face hub to download {hub_id}. Pass data_dir=…")

    def no_github(*a, **k):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr("unlearn.hub.load_hub_dataset", no_hub)
    monkeypatch.setattr(urllib.request, "urlopen", no_github)
    code = prepare.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAILED   pku-saferlhf-v0-test-pairs/: HubUnavailableError" in out and "Pass data_dir" not in out
    assert "FAILED   jigsaw-toxic-sample/" in out
    if importlib.util.find_spec("pyrit") is not None:
        assert "wrote    pyrit-scorer-evals/" in out and f"ok       {layout.PYRIT_FILE}" in out
    assert "2 required file(s) missing" in out


def test_present_folders_are_kept(data_dir: Path, capsys) -> None:
    """``make data`` on a complete folder (the shared one) writes nothing."""
    before = {f.path: (data_dir / f.path).stat().st_mtime_ns for f in layout.FILES}
    assert prepare.main([str(data_dir)]) == 0
    assert "kept     pku-saferlhf-v0-test-pairs/" in capsys.readouterr().out
    assert before == {f.path: (data_dir / f.path).stat().st_mtime_ns for f in layout.FILES}


# --------------------------------------------------------------------------- hub loaders

def test_hub_loaders_pass_the_pinned_revision(data_dir: Path, monkeypatch) -> None:
    from unlearn.data.pku_saferlhf import load_pku_saferlhf
    from unlearn.data.truthfulqa import load_truthfulqa

    calls = []
    pku = [hub_row(i, i % 2 == 0, i % 2 == 1, prompt=f"q{i}") for i in range(8)]
    tqa = [{"question": f"q{i}", "best_answer": f"a{i}"} for i in range(8)]

    def fake_hub(hub_id, split, name=None, revision=None):
        calls.append((hub_id, split, name, revision))
        return tqa if "truthful" in hub_id else pku

    monkeypatch.setattr("unlearn.hub.load_hub_dataset", fake_hub)
    load_pku_saferlhf(None)
    load_truthfulqa(None)
    load_pku_saferlhf(None, hub_id="someone/other-pku")  # not pinned: its main branch
    assert calls == [("PKU-Alignment/PKU-SafeRLHF", "train", None, "v0"),
                     ("truthfulqa/truthful_qa", "validation", "generation", layout.TRUTHFULQA.revision),
                     ("someone/other-pku", "train", None, None)]


# --------------------------------------------------------------------------- pre-flight check

@pytest.fixture
def no_model_no_data(monkeypatch):
    """Loading a model or a data set fails the test: the check must come first."""
    def forbidden(*a, **k):
        raise AssertionError("loaded before the data check")

    monkeypatch.setattr("unlearn.models.tiny.build_tiny_random", forbidden)
    monkeypatch.setattr("unlearn.hub.load_hub_dataset", forbidden)
    monkeypatch.setattr("unlearn.data.pku_saferlhf.local_file", forbidden)
    monkeypatch.setattr("unlearn.data.truthfulqa.local_file", forbidden)


WITH_EVAL = [o for o in TINY if not o.startswith("eval.")] + ["eval.enabled=true", "judge=embedded"]


def test_run_with_the_embedded_judge_and_no_data_dir_fails_before_loading(no_model_no_data, tmp_path: Path) -> None:
    from unlearn.experiment import run_experiment

    with pytest.raises(DataError) as info:
        run_experiment(compose_config([*WITH_EVAL, "data_dir=null"]), tmp_path)
    message = str(info.value)
    assert "before loading any model" in message and "data_dir is null" in message
    assert "make data DATA_DIR=<folder>" in message and "data_dir=<folder>" in message
    assert "pyrit-scorer-evals/scorer_evals.jsonl" in message and "truthfulqa/TruthfulQA.csv" in message
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["status"] == "failed" and "DataError" in saved["error"]


def test_run_with_an_incomplete_data_dir_names_each_missing_file(no_model_no_data, tmp_path: Path) -> None:
    from unlearn.experiment import run_experiment

    (tmp_path / "data").mkdir()
    with pytest.raises(DataError) as info:
        run_experiment(compose_config([*WITH_EVAL, f"data_dir={tmp_path / 'data'}"]), tmp_path / "run")
    message = str(info.value)
    assert f"dataset.forget: {tmp_path / 'data' / layout.PKU_FILE} is missing" in message
    assert f"make data DATA_DIR={tmp_path / 'data'}" in message


def test_judge_without_local_rows_needs_no_data_dir() -> None:
    cfg = compose_config([*WITH_EVAL, "data_dir=null", "judge.pyrit_fraction=0", "judge.benign_correct_answers=false"])
    assert layout.data_needs(cfg) == []
    layout.check_run_data(cfg)
    layout.check_run_data(compose_config([*TINY, "data_dir=null"]))  # eval off: no judge


def test_evaluate_checks_the_data_before_loading(no_model_no_data, tmp_path: Path) -> None:
    from unlearn.evaluation.standalone import evaluate_standalone

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[*WITH_EVAL, "data_dir=null"])
    with pytest.raises(DataError, match="make data DATA_DIR=<folder>"):
        evaluate_standalone(cfg, tmp_path)


# --------------------------------------------------------------------------- the run's report

def fake_summary() -> dict:
    s = {"status": "completed", "method": "uce+dual", "seed": 0, "model": "tiny", "steps": 3, "eval/judge": "embedded"}
    for stage, rate in (("before", 0.6), ("after", 0.25)):
        for key, value in (("harmful_rate", rate), ("refusal_rate", 0.1), ("fluency_ppl", 12.5),
                           ("preference_margin", -0.3), ("toxicity", 0.01)):
            s[f"eval/{stage}/{key}"] = value
            s[f"eval/{stage}/{key}_lo"], s[f"eval/{stage}/{key}_hi"] = value - 0.05, value + 0.05
    s["eval/after/harm_drop_beyond_length"] = 0.2  # after only, no interval
    return s


def test_run_report_shows_before_and_after_with_intervals(tmp_path: Path) -> None:
    from unlearn.evaluation.standalone import format_run_report

    (tmp_path / "model").mkdir()
    (tmp_path / "generations.jsonl").write_text("")
    text = format_run_report(fake_summary(), tmp_path)
    lines = text.splitlines()
    assert lines[0] == "uce+dual (seed 0), model tiny, 3 steps: before → after (95 % intervals)"
    row = next(x for x in lines if x.strip().startswith("harmful_rate"))
    assert "0.6 (0.55 – 0.65)" in row and "0.25 (0.2 – 0.3)" in row and row.endswith("[embedded]")
    assert row.index("0.6 (") < row.index("0.25 (")
    drop = next(x for x in lines if x.strip().startswith("harm_drop_beyond_length"))
    assert drop.split()[1:] == ["–", "0.2"]
    names = [x.split()[0] for x in lines[2:] if x.startswith("  ")]
    assert names == ["harmful_rate", "harm_drop_beyond_length", "preference_margin", "refusal_rate", "fluency_ppl"]
    assert "toxicity" not in text  # not a headline metric
    assert f"summary:     {tmp_path / 'summary.json'}" in text
    assert f"generations: {tmp_path / 'generations.jsonl'}" in text and f"model:       {tmp_path / 'model'}" in text


def test_run_report_without_evaluation_or_model(tmp_path: Path) -> None:
    from unlearn.evaluation.standalone import format_run_report

    text = format_run_report({"method": "uce+dual", "seed": 1, "model": "tiny", "steps": 3}, tmp_path)
    assert "(no evaluation: eval.enabled=false)" in text
    assert "(not saved: trainer.save_model=false)" in text and "generations: (none written)" in text


def test_standalone_table_keeps_its_single_column() -> None:
    from unlearn.evaluation.standalone import format_summary

    s = {"model": "m", "eval/harmful_rate": 0.3, "eval/harmful_rate_lo": 0.2, "eval/harmful_rate_hi": 0.4,
         "eval/judge": "embedded", "eval/refusal_rate": 0.5, "eval/n_prompts": 200}
    lines = format_summary(s).splitlines()
    assert lines[0] == "model: m"
    assert lines[1].split() == ["harmful_rate", "0.3", "(0.2", "–", "0.4)", "[embedded]"]
    assert [x.split()[0] for x in lines[1:]] == ["harmful_rate", "refusal_rate", "n_prompts"]


def test_tiny_run_report(make_config, tmp_path: Path) -> None:
    """One tiny_random step with a judge-free evaluation: the report reads the real summary keys."""
    from unlearn.evaluation.standalone import format_run_report
    from unlearn.experiment import run_experiment

    overrides = [o for o in TINY if not o.startswith(("eval.", "trainer.max_steps", "trainer.save_model"))] + [
        "trainer.max_steps=1", "trainer.save_model=true", "eval.enabled=true", "eval.metrics=[answers,behaviour]",
        "eval.n_prompts=3", "eval.max_new_tokens=6", "eval.batch_size=4", "eval.progress_bar=false",
        "eval.cache=false"]
    summary = run_experiment(make_config(*overrides), tmp_path)
    text = format_run_report(summary, tmp_path)
    rows = {x.split()[0]: x for x in text.splitlines() if x.startswith("  ") and not x.startswith("  metric")}
    assert {"refusal_rate", "off_topic_rate", "degenerate_loop_rate", "answer_tokens_mean"} <= set(rows)
    assert all(len(r.split()) >= 3 for r in rows.values())  # a before and an after value
    assert f"model:       {tmp_path / 'model'}" in text and f"generations: {tmp_path / 'generations.jsonl'}" in text
