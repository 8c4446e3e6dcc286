"""End-to-end runs: tiny_random for every aggregator, forget losses and LoRA; a sweep through the
Hydra CLI; and a short run on the embedded SmolLM2 in which the forget loss falls."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY
from unlearn.experiment import run_experiment
from unlearn.training.objectives import OBJECTIVES

ZERO_TOL = 1e-6  # conf/aggregator/dual.yaml


def descent_bound(record: dict, name: str) -> float:
    """Lowest admissible g_i·d for the dual direction.

    Kept gradients: g_i·d = ‖d_i‖²/k ≥ 0 up to rounding (1e-9·‖g_i‖·‖d‖). A gradient dropped as
    near-zero (‖g_i‖ ≤ zero_tol·max‖g‖) only has |g_i·d| ≤ zero_tol·max‖g‖·‖d‖.
    """
    d = record["direction_norm"]
    g_max = max(record[f"grad_norm/{n}"] for n in OBJECTIVES)
    return -(1e-9 * record[f"grad_norm/{name}"] * d + ZERO_TOL * g_max * d)


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("aggregator", ["weighted_sum", "mgda", "dual", "upgrad"])
def test_three_step_tiny_run(aggregator: str, make_config, tmp_path: Path) -> None:
    """``python -m unlearn.run aggregator=…`` on tiny_random (upgrad: a TorchJD method)."""
    summary = run_experiment(make_config(*TINY, f"aggregator={aggregator}"), tmp_path)
    lines = read_metrics(tmp_path)
    assert summary["status"] == "completed" and summary["steps"] == 3
    assert [r["step"] for r in lines] == [1, 2, 3]
    for record in lines:
        assert record["skipped"] == 0
        for name in OBJECTIVES:
            for key in ("loss", "grad_norm", "weight", "descent"):
                assert math.isfinite(record[f"{key}/{name}"]), (key, name, record)
        assert {"cos/forget_kl", "cos/forget_retain", "cos/kl_retain", "time/step_s"} <= set(record)
        if aggregator == "dual":
            for name in OBJECTIVES:
                assert record[f"descent/{name}"] >= descent_bound(record, name), (name, record)
    # the model equals the reference at step 0, so KL and its gradient are 0 there
    assert lines[0]["loss/kl"] == pytest.approx(0.0, abs=1e-7)
    if aggregator in {"dual", "mgda", "upgrad"}:  # the exactly-zero KL gradient is dropped
        assert lines[0]["weight/kl"] == 0.0 and lines[0]["agg/dropped"] == 1.0
    if aggregator == "upgrad":
        assert any(r["weight/forget"] > 0 for r in lines)
    if aggregator == "mgda":
        assert all(sum(r[f"weight/{n}"] for n in OBJECTIVES) == pytest.approx(1.0) for r in lines)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["method"] == f"uce+{aggregator}"
    assert saved["peak_rss_bytes"] > 0 and saved["wall_time_s"] > 0
    assert saved["final/loss/forget"] == lines[-1]["loss/forget"]


@pytest.mark.parametrize("loss", ["ga", "npo", "uce_bounded"])
def test_forget_loss_options_run(loss: str, make_config, tmp_path: Path) -> None:
    summary = run_experiment(make_config(*TINY, f"loss={loss}", "trainer.max_steps=2"), tmp_path)
    assert summary["status"] == "completed"
    lines = read_metrics(tmp_path)
    assert all(math.isfinite(r["loss/forget"]) for r in lines)
    if loss == "npo":  # at the reference the log-ratio is 0: L = (2/β) log 2
        assert lines[0]["loss/forget"] == pytest.approx(2 / 0.1 * math.log(2), rel=1e-4)


@pytest.mark.parametrize("aggregator", ["weighted_sum", "mgda", "dual"])
def test_lora_run_uses_adapter_disabled_reference(aggregator: str, make_config, tmp_path: Path) -> None:
    cfg = make_config(*TINY, f"aggregator={aggregator}", "trainer.lora=true", "trainer.save_model=true",
                      "trainer.lora_config.target_modules=[q_proj,v_proj]", "trainer.optimizer.lr=1e-2")
    summary = run_experiment(cfg, tmp_path)
    lines = read_metrics(tmp_path)
    # trainable: LoRA A and B of q_proj and v_proj in 2 layers, r=8, hidden 64
    assert summary["trainable_params"] == 2 * 2 * (64 * 8 + 8 * 64)
    assert lines[0]["loss/kl"] == pytest.approx(0.0, abs=1e-7)  # adapter B starts at 0
    assert lines[-1]["loss/kl"] > 0  # after updates the adapter moves away from the reference
    assert (tmp_path / "model" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "model" / "model.safetensors").exists()
    if aggregator == "dual":
        for record in lines:
            assert all(record[f"descent/{n}"] >= descent_bound(record, n) for n in OBJECTIVES), record


@pytest.mark.parametrize("aggregator", ["mgda", "dual"])
def test_bf16_model_trains_with_an_fp64_gramian(aggregator: str, make_config, tmp_path: Path) -> None:
    """bf16 weights and gradients: the Gramian is upcast (no bf16 dot products), steps are finite
    and the dual direction is still a common descent direction of the bf16 gradients."""
    summary = run_experiment(make_config(*TINY, f"aggregator={aggregator}", "model.dtype=bfloat16",
                                         "trainer.optimizer.lr=1e-3"), tmp_path)
    lines = read_metrics(tmp_path)
    assert summary["status"] == "completed" and [r["skipped"] for r in lines] == [0, 0, 0]
    for record in lines:
        assert all(math.isfinite(record[f"grad_norm/{n}"]) for n in OBJECTIVES)
        if aggregator == "dual":
            assert all(record[f"descent/{n}"] >= descent_bound(record, n) for n in OBJECTIVES), record
    assert lines[-1]["loss/kl"] > 0


def test_run_writes_everything_inside_run_dir(make_config, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_experiment(make_config(*TINY, "trainer.save_model=true", "logger.mode=offline"), run_dir)
    assert (run_dir / "model" / "model.safetensors").is_file()
    assert not list((run_dir / "model").glob("*.bin"))
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_cli_sweep_makes_one_dir_per_job(data_dir: Path, tmp_path: Path) -> None:
    overrides = [o for o in TINY if not o.startswith("trainer.max_steps")] + ["trainer.max_steps=1"]
    assert len(",".join(overrides)) > 255  # Hydra's job dir name, uncut, would be too long for the file system
    env = {**os.environ, "UNLEARN_DATA_DIR": str(data_dir), "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, "-m", "unlearn.run", "-m", "aggregator=weighted_sum,mgda,dual",
         *overrides, f"hydra.sweep.dir={tmp_path}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert [p.name.split("_", 1)[0] for p in jobs] == ["0", "1", "2"]
    assert all(len(p.name.encode()) <= 255 for p in jobs) and len({p.name[2:] for p in jobs}) == 3
    methods = {json.loads((p / "summary.json").read_text())["method"] for p in jobs}
    assert methods == {"uce+weighted_sum", "uce+mgda", "uce+dual"}
    for job in jobs:
        assert (job / ".hydra" / "config.yaml").is_file() and (job / "metrics.jsonl").is_file()
    # each job ends with its report (unlearn.evaluation.standalone.format_run_report)
    assert proc.stdout.count("before → after") == 3 and "(no evaluation: eval.enabled=false)" in proc.stdout
    for job in jobs:
        assert f"summary:     {job / 'summary.json'}" in proc.stdout


@pytest.mark.slow
def test_embedded_smollm2_forget_loss_falls(make_config, tmp_path: Path) -> None:
    """Five steps of UCE + dual on the real embedded model and the real PKU data, in bfloat16
    autocast as the paper's experiment trains.

    Per-step losses come from different batches, so the check is the UCE of one fixed batch of
    forget-train answers, under the original model and under the unlearned model saved by the run.
    """
    import torch
    from hydra.utils import instantiate
    from transformers import AutoModelForCausalLM

    from unlearn.data.formatting import collate, encode_example
    from unlearn.data.pku_saferlhf import forget_examples
    from unlearn.losses import UCE, kl_to_reference

    cfg = make_config(
        "trainer.max_steps=5", "trainer.forget_batch_size=4", "trainer.normal_batch_size=4",
        "dataset.max_length=128", "trainer.save_model=true", "logger.mode=disabled",
        "trainer.progress_bar=false", "eval.enabled=false", "trainer.probe_every=0",  # checked below instead
        "trainer.compute_dtype=bfloat16",  # experiment=paper_embedded's precision (and 0.6x the time)
    )
    summary = run_experiment(cfg, tmp_path)
    lines = read_metrics(tmp_path)
    assert summary["model"] == "SmolLM2-135M-Instruct" and summary["status"] == "completed"
    for r in lines:
        for name in OBJECTIVES:
            assert r[f"descent/{name}"] >= descent_bound(r, name)

    original = instantiate(cfg.model)
    unlearned = AutoModelForCausalLM.from_pretrained(tmp_path / "model", use_safetensors=True)
    probe = forget_examples(instantiate(cfg.dataset.forget).train)[:16]
    batch = collate([encode_example(original.tokenizer, e.prompt, e.response, 128) for e in probe],
                    original.tokenizer.pad_token_id)
    with torch.no_grad():
        ref = original.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        new = unlearned(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    before, after = UCE()(ref, batch["labels"]).item(), UCE()(new, batch["labels"]).item()
    assert after < 0.95 * before, (before, after)
    # the model moved, but stayed close to the original on these answers
    assert kl_to_reference(new, ref, batch["labels"]).item() < 0.5


def test_weighted_sum_one_backward_matches_three_gradient_path(make_config, tmp_path: Path) -> None:
    """The fast path (Σ c_i L_i, one backward) and the Gramian path give the same training."""
    common = [*TINY, "aggregator=weighted_sum", "aggregator.weights=[1.0,0.5,2.0]"]
    slow = run_experiment(make_config(*common), tmp_path / "three")
    fast = run_experiment(make_config(*common, "trainer.track_gradients=false"), tmp_path / "one")
    lines_fast = read_metrics(tmp_path / "one")
    assert "descent/forget" not in lines_fast[0] and lines_fast[0]["weight/retain"] == 2.0
    for key in ("final/loss/forget", "final/loss/kl", "final/loss/retain"):
        assert fast[key] == pytest.approx(slow[key], rel=1e-4, abs=1e-7), key


def test_heldout_probe_logs_eval_split_losses_beside_the_training_probe(make_config, tmp_path: Path) -> None:
    """heldout/* comes at the probe steps and at the end, on eval-split examples (so its values
    differ from probe/*), starts at KL 0, and trainer.heldout_probe_size=0 turns it off."""
    cfg = make_config(*TINY, "trainer.max_steps=3", "trainer.probe_every=2", "trainer.probe_size=4",
                      "trainer.heldout_probe_size=4", "trainer.optimizer.lr=1e-2")
    summary = run_experiment(cfg, tmp_path)
    lines = read_metrics(tmp_path)
    assert [r["step"] for r in lines if "heldout/forget" in r] == [1, 3]
    assert {"heldout/forget_nll", "heldout/kl", "heldout/retain"} <= set(lines[0])
    assert lines[0]["heldout/kl"] == pytest.approx(0.0, abs=1e-7)
    assert lines[0]["heldout/forget_nll"] != lines[0]["probe/forget_nll"]
    assert summary["initial/heldout/forget"] == lines[0]["heldout/forget"]
    assert summary["final/heldout/kl"] > 0
    # the judge-free margin on the first 4 held-out (safe, unsafe) pairs, at every probe point
    assert [r["step"] for r in lines if "heldout/margin" in r] == [1, 3]
    from hydra.utils import instantiate

    from unlearn.data.pku_saferlhf import load_pku_saferlhf
    from unlearn.evaluation.metrics.preference import PreferenceMargin
    from unlearn.evaluation.stage import preference_pairs

    original = instantiate(cfg.model)
    metric = PreferenceMargin()
    pairs = metric.select(preference_pairs(load_pku_saferlhf(cfg.data_dir).eval))[:4]
    rows, _ = metric.score(original.model, original.tokenizer, pairs, "cpu", cfg.dataset.max_length, batch_size=4)
    assert lines[0]["heldout/margin"] == pytest.approx(sum(r["margin"] for r in rows) / 4, abs=1e-6)
    assert lines[0]["heldout/safe_preference_rate"] == sum(r["safe_preferred"] for r in rows) / 4
    assert summary["final/heldout/margin"] != summary["initial/heldout/margin"]
    off = run_experiment(make_config(*TINY, "trainer.max_steps=1", "trainer.probe_every=1",
                                     "trainer.heldout_probe_size=0"), tmp_path / "off")
    assert "initial/probe/forget" in off and not any(k.startswith(("initial/heldout", "final/heldout"))
                                                     for k in off)


def test_probe_tracks_fixed_training_examples(make_config, tmp_path: Path) -> None:
    """probe/* is measured on the same examples every time: at step 1 the model is the
    reference (KL exactly 0), probe steps follow probe_every, and training moves the values."""
    cfg = make_config(*TINY, "trainer.max_steps=4", "trainer.probe_every=2", "trainer.probe_size=4",
                      "trainer.optimizer.lr=1e-2")
    summary = run_experiment(cfg, tmp_path)
    lines = read_metrics(tmp_path)
    probed = [r["step"] for r in lines if "probe/forget" in r]
    assert probed == [1, 3]
    assert lines[0]["probe/kl"] == pytest.approx(0.0, abs=1e-7)
    assert summary["initial/probe/kl"] == lines[0]["probe/kl"]
    assert summary["final/probe/forget"] != summary["initial/probe/forget"]
    assert summary["final/probe/kl"] > 0
    assert {"probe/forget_nll", "probe/retain"} <= set(lines[2])
    # the same examples give the same value: a second run's step-1 probe is identical
    again = run_experiment(make_config(*TINY, "trainer.max_steps=1", "trainer.probe_every=2",
                                       "trainer.probe_size=4"), tmp_path / "again")
    assert again["initial/probe/forget"] == summary["initial/probe/forget"]
