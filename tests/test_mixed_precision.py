"""``trainer.compute_dtype`` and ``eval.compute_dtype``: forward passes under bfloat16 autocast,
weights, gradients and the Gramian in the loaded dtype, values within bfloat16 rounding of the
float32 run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import TINY
from unlearn.config_check import ConfigError, validate_config
from unlearn.evaluation.generation import generate_answers
from unlearn.experiment import run_experiment


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_bfloat16_training_follows_the_float32_run_within_rounding(make_config, tmp_path: Path) -> None:
    common = [*TINY, "aggregator=dual", "trainer.max_steps=2", "trainer.probe_every=0", "trainer.optimizer.lr=1e-3"]
    full = run_experiment(make_config(*common), tmp_path / "float32")
    half = run_experiment(make_config(*common, "trainer.compute_dtype=bfloat16"), tmp_path / "bfloat16")
    assert full["status"] == half["status"] == "completed"
    for key in ("final/loss/forget", "final/loss/kl", "final/loss/retain"):
        assert half[key] != full[key] and half[key] == pytest.approx(full[key], rel=0.05, abs=0.02), key
    for line in read_metrics(tmp_path / "bfloat16"):  # the common-descent property on the gradients it computed
        assert all(v >= -1e-6 for k, v in line.items() if k.startswith("descent/") and isinstance(v, float)), line


def test_bfloat16_logits_reach_the_losses_in_float32(make_config) -> None:
    from hydra.utils import instantiate

    from unlearn.training.objectives import Objectives, mollm_objectives
    from unlearn.losses import UCE

    loaded = instantiate(make_config("model=tiny_random").model)
    params = list(loaded.model.parameters())
    objectives = Objectives(loaded.model, params, mollm_objectives(UCE()), lambda: None,
                            compute_dtype="bfloat16")
    batch = {"input_ids": torch.randint(0, 100, (2, 8)), "attention_mask": torch.ones(2, 8, dtype=torch.long)}
    logits = objectives.logits(batch)
    assert logits.dtype == torch.float32 and all(p.dtype == torch.float32 for p in params)
    with torch.no_grad():
        full = loaded.model(**batch).logits
    assert (logits - full).abs().max() > 0 and torch.allclose(logits, full, atol=0.1)
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        Objectives(loaded.model, params, mollm_objectives(UCE()), lambda: None, compute_dtype="fp16")


def test_bfloat16_greedy_decoding_runs_and_unknown_dtypes_are_refused(make_config) -> None:
    from hydra.utils import instantiate

    loaded = instantiate(make_config("model=tiny_random").model)
    prompts = ["How do I pick a lock?", "Say hello."]
    gens = generate_answers(loaded.model, loaded.tokenizer, prompts, 6, 2, progress_bar=False,
                            compute_dtype="bfloat16")
    assert [g.prompt for g in gens] == prompts and all(0 < g.n_tokens <= 6 for g in gens)
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    for key in ("trainer.compute_dtype", "eval.compute_dtype"):
        with pytest.raises(ConfigError, match=f"{key}.*float32 or bfloat16"):
            validate_config(make_config(f"{key}=fp16"))
