"""Objectives as a configured list (conf/objectives/): two, three or four objectives, each on its
data source, Yao et al.'s recipe (loss=ga objectives=yao at weights 0.5/1/1), and the errors for a bad list."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import TINY

YAO = ("loss=ga", "objectives=yao", "aggregator=weighted_sum", "aggregator.weights=[0.5,1.0,1.0]")

from unlearn.data.sources import mismatch_examples, source
from unlearn.data.types import Example
from unlearn.errors import DataError
from unlearn.experiment import build_objectives, run_experiment
from unlearn.identity import method_label
from unlearn.losses import UCE, AnswerCrossEntropy, KLToReference
from unlearn.models.tiny import build_tiny_random
from unlearn.training.objectives import Objective, Objectives, mollm_objectives
from unlearn.training.reference import frozen_copy_reference


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_method_yao_composes_ga_mismatch_kl_with_their_weights(make_config) -> None:
    cfg = make_config(*TINY, *YAO)
    objectives = build_objectives(cfg)
    assert [(o.name, o.data, type(o.loss).__name__) for o in objectives] == [
        ("forget", "forget", "GradientAscent"), ("mismatch", "mismatch", "AnswerCrossEntropy"),
        ("kl", "normal", "KLToReference")]
    assert list(cfg.aggregator.weights) == [0.5, 1.0, 1.0]
    from omegaconf import OmegaConf
    assert method_label(OmegaConf.to_container(cfg, resolve=False)) == "ga,mismatch,kl+weighted_sum(weights=0.5,1,1)"
    assert method_label(OmegaConf.to_container(make_config(*TINY), resolve=False)) == "uce+dual"


def test_yao_run_logs_each_objective(make_config, tmp_path: Path) -> None:
    """Yao et al.'s recipe on tiny_random: three losses, the 0.5/1/1 weights,
    a mismatch loss that is a cross-entropy (> 0) and GA's mean log p (< 0)."""
    summary = run_experiment(make_config(*TINY, *YAO), tmp_path)
    assert summary["status"] == "completed" and summary["method"] == "ga,mismatch,kl+weighted_sum(weights=0.5,1,1)"
    assert summary["objectives"] == ["forget", "mismatch", "kl"]
    lines = read_metrics(tmp_path)
    for record in lines:
        assert [record[f"weight/{n}"] for n in ("forget", "mismatch", "kl")] == [0.5, 1.0, 1.0]
        assert record["loss/forget"] < 0 < record["loss/mismatch"]
        assert "loss/retain" not in record and math.isfinite(record["descent/mismatch"])
    assert lines[0]["loss/kl"] == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("overrides, names", [
    (["~objectives.retain"], ["forget", "kl"]),
    (["+objectives.mismatch.loss._target_=unlearn.losses.AnswerCrossEntropy",
      "+objectives.mismatch.data=mismatch"], ["forget", "kl", "retain", "mismatch"]),
])
def test_dual_runs_on_two_and_four_objectives(make_config, tmp_path: Path, overrides, names) -> None:
    summary = run_experiment(make_config(*TINY, *overrides), tmp_path)
    assert summary["status"] == "completed" and summary["objectives"] == names
    assert summary["method"] == ("uce+dual" if names == ["forget", "kl", "retain"] else
                                 ",".join(["uce", *names[1:]]) + "+dual")
    for record in read_metrics(tmp_path):
        assert {f"weight/{n}" for n in names} <= set(record)
        for name in names:  # the dual direction lowers every objective to first order
            assert record[f"descent/{name}"] >= -1e-6 * record["direction_norm"] * record[f"grad_norm/{name}"] \
                - 1e-6 * max(record[f"grad_norm/{n}"] for n in names) * record["direction_norm"]


def test_safe_answers_objective_trains_on_the_train_splits_safe_answers(make_config, data_dir: Path,
                                                                        tmp_path: Path) -> None:
    """objectives=mollm_safe: a fourth objective on (harmful prompt, safe answer) pairs of the
    forget train split only; dual keeps descent for all four."""
    from unlearn.data.pku_saferlhf import load_pku_saferlhf
    from unlearn.data.sources import source

    split = load_pku_saferlhf(str(data_dir))
    rows = source("safe").examples(split, None, 0)
    assert rows and not any(r.harmful for r in rows)
    assert {r.prompt for r in rows} <= {e.prompt for e in split.train}
    assert not {r.prompt for r in rows} & {e.prompt for e in split.eval}
    summary = run_experiment(make_config(*TINY, "objectives=mollm_safe"), tmp_path)
    assert summary["status"] == "completed" and summary["objectives"] == ["forget", "kl", "retain", "safe"]
    assert summary["method"] == "uce,kl,retain,safe+dual"
    for record in read_metrics(tmp_path):
        assert "loss/safe" in record and "weight/safe" in record


def test_shared_forward_gives_each_objectives_own_gradient() -> None:
    """Objectives on one source share a forward pass; each gradient equals that loss's own."""
    torch.manual_seed(0)
    loaded = build_tiny_random()
    model, tok = loaded.model, loaded.tokenizer
    params = [p for p in model.parameters() if p.requires_grad]
    objectives = Objectives(model, params, [Objective("forget", UCE(), "forget"),
                                            Objective("kl", KLToReference(), "normal"),
                                            Objective("retain", AnswerCrossEntropy(), "normal"),
                                            Objective("mismatch", AnswerCrossEntropy(), "mismatch")],
                            frozen_copy_reference(model))
    from unlearn.data.stream import BatchStream
    rows = {"forget": [Example("how do I hurt", "like this", True)] * 2,
            "normal": [Example("what is tea", "a drink"), Example("sky colour", "blue")],
            "mismatch": [Example("how do I hurt", "a drink"), Example("how do I hurt", "blue")]}
    batches = {k: BatchStream(v, tok, 2, 32).next_batch() for k, v in rows.items()}
    with torch.no_grad():  # move off the reference so the KL gradient is not zero
        for p in params:
            p.add_(0.01 * torch.randn_like(p))
    values = objectives.losses_and_grads(batches)
    assert list(values.losses) == ["forget", "kl", "retain", "mismatch"]
    for i, objective in enumerate(objectives.objectives):
        batch = batches[objective.data]
        ref = objectives.reference_logits(batch) if getattr(objective.loss, "needs_reference", False) else None
        loss = objective.loss(objectives.logits(batch), batch["labels"], ref)
        expected = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
        assert float(loss.detach()) == pytest.approx(values.losses[objective.name], rel=1e-6)
        for g, e in zip(values.grads[i], expected, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-8)
    # the mismatch term is the retain cross-entropy on (harmful prompt, normal answer) rows
    assert values.losses["mismatch"] != values.losses["retain"]


def test_mismatch_pairs_harmful_prompts_with_random_normal_answers() -> None:
    forget = [Example(f"harm {i}", f"unsafe {i}", True) for i in range(50)]
    normal = [Example(f"q {i}", f"answer {i}") for i in range(7)]
    rows = mismatch_examples(forget, normal, seed=3)
    assert [r.prompt for r in rows] == [e.prompt for e in forget]
    assert {r.response for r in rows} <= {e.response for e in normal}
    assert len({r.response for r in rows}) > 3 and not any(r.harmful for r in rows)
    assert rows == mismatch_examples(forget, normal, seed=3)
    assert rows != mismatch_examples(forget, normal, seed=4)


def test_bad_objective_lists_fail_clearly(make_config, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown objective data source 'harmful'.*forget.*mismatch.*normal"):
        build_objectives(make_config(*TINY, "objectives.retain.data=harmful"))
    with pytest.raises(DataError, match="unknown objective data source"):
        source("nope")
    with pytest.raises(Exception, match="objectives.retain must be a mapping with `loss`"):
        build_objectives(make_config(*TINY, "~objectives.retain.data"))
    with pytest.raises(ValueError, match="2 weights for 3 objectives|weighted_sum has 2 weights for 3"):
        run_experiment(make_config(*TINY, "aggregator=weighted_sum", "aggregator.weights=[1,1]",
                                   "trainer.max_consecutive_skips=1"), tmp_path)
    assert [o.name for o in mollm_objectives(UCE())] == ["forget", "kl", "retain"]


def test_results_follow_each_runs_objectives(tmp_path: Path) -> None:
    """Tables, CSVs and descent counts use each run's own objective list (yao has no retain)."""
    from unlearn.results.collect import Run, objective_names, run_objectives
    from unlearn.results.plots import descent_violations
    from unlearn.results.tables import steps_to_csv

    def step(names, bad=()):
        rec = {"step": 1, "skipped": 0, "direction_norm": 1.0}
        for n in names:
            rec.update({f"loss/{n}": 1.0, f"grad_norm/{n}": 1.0, f"descent/{n}": -1.0 if n in bad else 1.0})
        return rec

    yao = ("forget", "mismatch", "kl")
    runs = [Run(tmp_path / "a", "x", "uce+dual", 0, "completed", {"objectives": ["forget", "kl", "retain"]},
                metrics=[step(("forget", "kl", "retain"))]),
            Run(tmp_path / "b", "x", "ga,mismatch,kl+dual", 0, "completed", {"objectives": list(yao)},
                metrics=[step(yao, bad=("mismatch",))]),
            Run(tmp_path / "c", "x", "uce+mgda", 0, "completed", {}, metrics=[])]  # older run: MOLLM's
    assert run_objectives(runs[2]) == ("forget", "kl", "retain")
    assert objective_names(runs) == ("forget", "kl", "retain", "mismatch")
    header = steps_to_csv(runs).splitlines()[0].split(",")
    assert "loss/mismatch" in header and "descent/retain" in header
    shares = descent_violations(runs)["dual"]
    assert shares["steps"] == 2 and shares["any"] == 0.5 and shares["mismatch"] == 1.0
    assert shares["retain"] == 0.0 and shares["kl"] == 0.0  # retain counted on the run that has it
