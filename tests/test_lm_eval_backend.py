"""lm-eval backend (unlearn/evaluation/lm_eval_backend.py) on a tiny random Llama, offline."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("lm_eval")

from unlearn.errors import HubUnavailableError  # noqa: E402
from unlearn.evaluation.lm_eval_backend import (  # noqa: E402
    OFFLINE_TASKS_DIR,
    LmEvalUnavailableError,
    UnknownTaskError,
    evaluate_tasks,
)

# Two-choice documents; task b is task a with the gold label flipped.
DOCS = [
    {"question": "Which colour is the sky on a clear day?", "choices": ["blue", "green"], "a": 0},
    {"question": "How many legs does a spider have?", "choices": ["six", "eight"], "a": 1},
    {"question": "What do bees make?", "choices": ["milk", "honey"], "a": 1},
    {"question": "Which is a planet?", "choices": ["Mars", "Paris"], "a": 0},
    {"question": "What is frozen water called?", "choices": ["steam", "ice"], "a": 1},
    {"question": "Which animal barks?", "choices": ["dog", "fish"], "a": 0},
]
TEMPLATE = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: {label}
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""
GROUP = """group: toy_group
task:
  - toy_a
  - toy_b
aggregate_metric_list:
  - metric: acc
    aggregation: mean
    weight_by_size: true
metadata:
  version: 1.0
"""


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    from unlearn.models.tiny import build_tiny_random

    return build_tiny_random(device="cpu")


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """toy_a and toy_b (flipped gold) as local JSONL + YAML, and the group toy_group of both."""
    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    rows = [{**doc, "b": 1 - doc["a"]} for doc in DOCS]
    data = folder / "toy.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    for label in ("a", "b"):
        (folder / f"toy_{label}.yaml").write_text(TEMPLATE.format(
            name=f"toy_{label}", data=data, cache=folder / "hf_cache", label=label))
    (folder / "toy_group.yaml").write_text(GROUP)
    return folder


@pytest.fixture(scope="module")
def first_run(tiny, task_dir):
    """The group evaluated once with the model in train mode; the state it was handed in."""
    tiny.model.train()
    before = {k: v.detach().clone() for k, v in tiny.model.state_dict().items()}
    result = evaluate_tasks(tiny.model, tiny.tokenizer, ["toy_group"], include_path=task_dir,
                            include_defaults=False, batch_size=4)
    return result, before


def _direct_acc(model, tokenizer, gold: str) -> list[float]:
    """Per-document acc from summed log-probs of " <choice>" after the prompt, computed here."""
    out = []
    with torch.no_grad():
        for doc in DOCS:
            context = f"Question: {doc['question']}\nAnswer:"
            context_ids = tokenizer.encode(context)
            scores = []
            for choice in doc["choices"]:
                ids = tokenizer.encode(f"{context} {choice}")
                assert ids[: len(context_ids)] == context_ids
                logp = model(torch.tensor([ids])).logits[0].log_softmax(-1)
                span = range(len(context_ids), len(ids))
                scores.append(sum(logp[i - 1, ids[i]].item() for i in span))
            label = doc["a"] if gold == "a" else 1 - doc["a"]
            out.append(float(int(np.argmax(scores)) == label))
    return out


def test_metrics_and_per_document_values(first_run, tiny) -> None:
    result, _ = first_run
    m, n = result.metrics, len(DOCS)
    for task in ("toy_a", "toy_b"):
        values = result.samples[f"{task}/acc"]
        assert m[f"{task}/n"] == n and len(values) == n and result.doc_ids[task] == list(range(n))
        assert set(values) <= {0.0, 1.0} and 0.0 <= m[f"{task}/acc"] <= 1.0
        assert m[f"{task}/acc"] == pytest.approx(np.mean(values))
        assert m[f"{task}/acc_stderr"] == pytest.approx(np.std(values, ddof=1) / math.sqrt(n))
        assert len(result.samples[f"{task}/acc_norm"]) == n and f"{task}/acc_norm_stderr" in m
    assert not any("," in key for key in m)  # ",none" stripped
    # Flipping every gold label of a two-choice task flips every per-document outcome.
    a, b = np.array(result.samples["toy_a/acc"]), np.array(result.samples["toy_b/acc"])
    assert np.all(a + b == 1) and m["toy_a/acc"] + m["toy_b/acc"] == pytest.approx(1.0)
    assert m["toy_group/n"] == 2 * n and m["toy_group/acc"] == pytest.approx(0.5)
    # The outcomes are the model's: the same comparison of log-likelihoods, computed directly.
    assert result.samples["toy_a/acc"] == _direct_acc(tiny.model, tiny.tokenizer, "a")
    assert result.lm_eval_version


def test_model_left_as_it_came_and_runs_repeat(first_run, tiny, task_dir) -> None:
    result, before = first_run
    assert all(module.training for module in tiny.model.modules())
    after = tiny.model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert all(p.device.type == "cpu" for p in tiny.model.parameters())
    tiny.model.eval()
    again = evaluate_tasks(tiny.model, tiny.tokenizer, ["toy_group"], include_path=task_dir,
                           include_defaults=False, batch_size=2)
    assert not tiny.model.training
    assert again.metrics == result.metrics and again.samples == result.samples


def test_limit_and_tokenizer_without_pad(tiny, task_dir) -> None:
    pad = tiny.tokenizer.pad_token
    tiny.tokenizer.pad_token = None  # HFLM picks one; the caller's tokenizer gets None back
    try:
        result = evaluate_tasks(tiny.model, tiny.tokenizer, ["toy_a"], include_path=str(task_dir),
                                include_defaults=False, limit=2)
        assert tiny.tokenizer.pad_token is None
    finally:
        tiny.tokenizer.pad_token = pad
    assert result.metrics["toy_a/n"] == 2 and len(result.samples["toy_a/acc"]) == 2
    assert result.doc_ids == {"toy_a": [0, 1]}


def test_shipped_offline_task(tiny) -> None:
    """conf/lm_eval_tasks: MMLU dev questions read from the installed lm-eval, no hub."""
    sys.path.insert(0, str(OFFLINE_TASKS_DIR / "mmlu_dev_offline"))
    try:
        import mmlu_dev
    finally:
        sys.path.pop(0)
    rows = mmlu_dev.rows()
    assert len(rows) >= 250 and len({r["subject"] for r in rows}) == 57
    assert all(0 <= r["answer"] < len(r["choices"]) == len(r["letters"]) for r in rows)
    result = evaluate_tasks(tiny.model, tiny.tokenizer, ["mmlu_dev_offline"],
                            include_path=OFFLINE_TASKS_DIR, include_defaults=False, limit=4)
    assert result.metrics["mmlu_dev_offline/n"] == 4
    assert result.metrics["mmlu_dev_offline/acc"] == pytest.approx(
        np.mean(result.samples["mmlu_dev_offline/acc"]))


def test_unknown_task_names_what_to_do(tiny, task_dir) -> None:
    with pytest.raises(UnknownTaskError) as info:
        evaluate_tasks(tiny.model, tiny.tokenizer, ["toy_aa", "no_such_task"],
                       include_path=task_dir, include_defaults=False)
    message = str(info.value)
    assert "'no_such_task'" in message and "did you mean toy_a" in message
    assert "include_path" in message and "hub" in message


def test_hub_dataset_offline(tiny, tmp_path) -> None:
    (tmp_path / "hub_task.yaml").write_text(
        "task: hub_task\ndataset_path: no-such-org/no-such-dataset\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: q\ndoc_to_choice: ['x', 'y']\n"
        "doc_to_target: 0\n")
    with pytest.raises(HubUnavailableError, match="include_path"):
        evaluate_tasks(tiny.model, tiny.tokenizer, ["hub_task"], include_path=tmp_path,
                       include_defaults=False)


def test_lm_eval_missing(tiny, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(LmEvalUnavailableError, match=r"pip install lm-eval==\d"):
        evaluate_tasks(tiny.model, tiny.tokenizer, ["toy_a"])
