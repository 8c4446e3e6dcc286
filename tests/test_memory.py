"""The memory preflight (:mod:`unlearn.memory`) and gradient checkpointing
(:mod:`unlearn.training.recompute`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from conftest import REPO
from unlearn.memory import (
    GB,
    Architecture,
    MemoryPreflightError,
    Setting,
    architecture,
    estimate,
    preflight,
)

FIXES = ("trainer.lora=true", "trainer.strategy=fsdp on", "trainer.gradient_checkpointing=true",
         "trainer.track_update=false")


def test_llama3_8b_full_fine_tuning_is_refused_before_loading(make_config) -> None:
    cfg = make_config("model=llama3_8b", "trainer.lora=false")
    with pytest.raises(MemoryPreflightError) as info:
        preflight(cfg)
    message = str(info.value)
    assert "does not fit" in message and "GB per device" in message and "8.03 B parameters" in message
    for fix in FIXES:
        assert fix in message, fix


def test_the_parts_follow_the_options(make_config) -> None:
    s = Setting.from_config(make_config("model=llama3_8b", "trainer.lora=false"))
    assert s.arch.total_params == 8_030_261_248 and s.weight_bytes == 2
    full = estimate(s)
    # one bf16 copy of the weights, a reference copy, m = 3 gradients
    assert full["weights"] == full["reference"] == pytest.approx(8_030_261_248 * 2)
    assert full["gradients"] == pytest.approx(3 * full["weights"])
    lora = estimate(replace(s, lora=True, lora_r=16, lora_targets=("q_proj", "k_proj", "v_proj", "o_proj")))
    assert lora["trainable_params"] == 13_631_488  # the H200 check's 13.6 M adapter parameters
    assert lora["reference"] == 0 and lora["gradients"] < 2e-3 * full["gradients"]
    sharded = estimate(replace(s, strategy="fsdp", world_size=8))
    for part in ("weights", "reference", "gradients", "optimizer"):
        assert sharded[part] == pytest.approx(full[part] / 8)
    # θ_before of one chunk: the embedding (the largest parameter) alone, or its shard within a
    # 256 MiB chunk; never the whole model
    assert full["update_snapshot"] == pytest.approx(128_256 * 4096 * 2)
    assert sharded["update_snapshot"] == pytest.approx(256 * 2**20)
    assert lora["update_snapshot"] == pytest.approx(13_631_488 * 2)
    assert sharded["activations"] == full["activations"]  # activations are per rank, not sharded
    assert estimate(replace(s, gradient_checkpointing=True))["activations"] < full["activations"] / 5
    assert estimate(replace(s, track_update=False))["update_snapshot"] == 0


def test_small_models_fit_and_parameter_counts_come_from_configs(make_config, tmp_path) -> None:
    parts = preflight(make_config("model=tiny_random"))
    assert 0 < parts["total"] < 2 * GB  # logits over the 49k vocabulary dominate
    # SmolLM2-135M: 134.5 M parameters from its known shape, no weights loaded
    assert architecture(make_config().model).total_params == pytest.approx(134.5e6, rel=1e-3)
    (tmp_path / "config.json").write_text(json.dumps({
        "vocab_size": 100, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "tie_word_embeddings": False}))
    arch = architecture({"_target_": "unlearn.models.pretrained.load_pretrained", "path": str(tmp_path)})
    assert arch == Architecture(100, 8, 16, 2, 2, 1, False)
    with pytest.raises(ValueError, match="model.architecture"):
        architecture({"_target_": "x.load_pretrained", "path": "org/unknown-model"})


def test_the_run_command_stops_before_loading_weights(data_dir, tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-m", "unlearn.run", "model=llama3_8b", "trainer.lora=false",
         f"data_dir={data_dir}", f"hydra.run.dir={tmp_path}/run", "logger.mode=disabled"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "MemoryPreflightError" in out and "GB per device" in out
    for fix in FIXES:
        assert fix in out, fix
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "does not fit" in summary["error"]


# ------------------------------------------------------------------ gradient checkpointing

def _losses_and_grads(lora: bool, checkpointing: bool):
    from unlearn.data.stream import BatchStream
    from unlearn.data.types import Example
    from unlearn.experiment import apply_lora
    from unlearn.losses import UCE
    from unlearn.models.tiny import build_tiny_random
    from unlearn.training.objectives import Objectives
    from unlearn.training.recompute import enable_gradient_checkpointing
    from unlearn.training.reference import adapter_disabled_reference, frozen_copy_reference
    from omegaconf import OmegaConf

    loaded = build_tiny_random(num_layers=2, hidden_size=16, intermediate_size=32, num_heads=2,
                               device="cpu")
    model = loaded.model
    if lora:
        torch.manual_seed(0)
        model = apply_lora(model, OmegaConf.create({"r": 4, "alpha": 8, "dropout": 0.0,
                                                     "target_modules": ["q_proj", "v_proj"]}))
        reference = adapter_disabled_reference(model)
    else:
        reference = frozen_copy_reference(model)
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():  # away from the reference: a non-zero KL gradient
        gen = torch.Generator().manual_seed(1)
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    if checkpointing:
        enable_gradient_checkpointing(model, lora=lora)
        assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    model.train()
    examples = [Example(f"question {i}?", f"answer number {i}.", True) for i in range(4)]
    batch = BatchStream(examples, loaded.tokenizer, 4, 32, "plain", 0).next_batch()
    values = Objectives.mollm(model, params, UCE(), reference).losses_and_grads(
        {"forget": batch, "normal": batch})
    return values


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_gives_the_same_losses_and_gradients(lora: bool) -> None:
    plain = _losses_and_grads(lora, checkpointing=False)
    recomputed = _losses_and_grads(lora, checkpointing=True)
    assert plain.losses == pytest.approx(recomputed.losses, rel=1e-6)
    for a, b in zip(plain.grads, recomputed.grads, strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.allclose(x, y, rtol=1e-5, atol=1e-7)
    assert all(float(g.abs().sum()) > 0 for g in recomputed.grads[0])  # every adapter tensor learns


def test_memory_and_layout_keys_are_declared_non_result() -> None:
    from unlearn.identity import is_result_key

    for key in ("trainer.strategy", "trainer.gradient_checkpointing", "trainer.memory_check",
                "trainer.fsdp.reshard_after_forward", "model.architecture.params"):
        assert not is_result_key(key), key
    assert is_result_key("trainer.fsdp.mixed_precision")  # bf16 compute changes the numbers
