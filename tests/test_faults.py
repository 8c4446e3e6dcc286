"""Numerical faults: a NaN or Inf in a loss, a gradient, the Gramian, the aggregator's weights or
the combined direction skips the step (counted and logged, never reaching the optimizer), and K
consecutive skips stop the run with a clear message."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from conftest import CONF, TINY

from unlearn.aggregators import AggregationResult, DualSpace
from unlearn.data.stream import BatchStream
from unlearn.data.types import Example
from unlearn.experiment import run_experiment
from unlearn.losses import UCE
from unlearn.models.tiny import build_tiny_random
from unlearn.tracking import Tracker
from unlearn.training import trainer as trainer_module
from unlearn.training.objectives import Objectives
from unlearn.training.reference import frozen_copy_reference
from unlearn.training.trainer import TooManySkippedSteps, UnlearningTrainer

# The evaluation stage (conf/eval) is not what these tests measure: keep the runs to training.
NO_EVAL = ["eval.enabled=false"]  # the evaluation stage has its own tests


class FaultyLoss(UCE):
    """UCE that returns NaN (or +Inf) on the listed calls (1-based)."""

    def __init__(self, bad_calls=(), value: float = math.nan, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bad_calls, self.value, self.calls = set(bad_calls), value, 0

    def __call__(self, logits, labels, ref_logits=None):
        self.calls += 1
        loss = super().__call__(logits, labels, ref_logits)
        return loss * self.value if self.calls in self.bad_calls else loss


class AlwaysNaN(UCE):
    """For run_experiment: ``loss._target_=test_faults.AlwaysNaN``."""

    def __call__(self, logits, labels, ref_logits=None):
        return super().__call__(logits, labels, ref_logits) * math.nan


class CountingAdamW(torch.optim.AdamW):
    """Records every step and asserts it only ever sees finite gradients."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.steps_taken = 0

    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                assert p.grad is None or torch.isfinite(p.grad).all(), "non-finite gradient reached the optimizer"
        self.steps_taken += 1
        return super().step(closure)


@pytest.fixture(scope="module")
def loaded():
    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before conftest's offline env
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        return build_tiny_random(num_layers=1, hidden_size=16, intermediate_size=32, num_heads=2, device="cpu")


def make_trainer(loaded, run_dir: Path, loss=None, aggregator=None, max_steps=4, max_skips=3, **kw):
    model = loaded.model
    model.load_state_dict(loaded.initial_state)  # every test starts from the same weights
    params = [p for p in model.parameters() if p.requires_grad]
    examples = [Example(f"How do I do thing {i}?", f"Here is harmful answer {i}.", True) for i in range(8)]
    stream = lambda seed: BatchStream(examples, loaded.tokenizer, 2, 32, "plain", seed)
    optimizer = CountingAdamW(params, lr=1e-3)
    return UnlearningTrainer(
        model=model, params=params,
        objectives=Objectives.mollm(model, params, loss or UCE(), frozen_copy_reference(model)),
        aggregator=aggregator or DualSpace(), optimizer=optimizer,
        streams={"forget": stream(0), "normal": stream(1)}, tracker=Tracker(run_dir),
        max_steps=max_steps, max_consecutive_skips=max_skips, progress_bar=False, **kw,
    )


@pytest.fixture(autouse=True)
def _remember_initial_weights(loaded):
    if not hasattr(loaded, "initial_state"):
        loaded.initial_state = {k: v.clone() for k, v in loaded.model.state_dict().items()}


def snapshot(trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.params]


def train_watching(trainer, watch_step: int):
    """Train; return (result, weights before ``watch_step``, weights after it)."""
    seen = {}
    original = trainer.train_step

    def step():
        if trainer.step + 1 == watch_step:
            seen["before"] = snapshot(trainer)
        record = original()
        if trainer.step == watch_step:
            seen["after"] = snapshot(trainer)
        return record

    trainer.train_step = step
    return trainer.train(), seen["before"], seen["after"]


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_skipped_only(run_dir: Path, trainer, skipped_step: int, reason: str, before, after) -> None:
    lines = read_metrics(run_dir)
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    assert [r["skipped"] for r in lines] == [int(r["step"] == skipped_step) for r in lines]
    bad = lines[skipped_step - 1]
    assert reason in bad["skip_reason"] and bad["skipped_total"] == 1
    assert not any(k.startswith("loss/") for k in bad)  # no half-finished metrics
    assert trainer.optimizer.steps_taken == 3 and trainer.skipped == 1 and trainer.step == 4
    assert all(torch.equal(a, b) for a, b in zip(before, after)), "a skipped step changed the weights"
    assert all(p.grad is None for p in trainer.params)


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
def test_non_finite_loss_skips_the_step(loaded, tmp_path, caplog, value) -> None:
    trainer = make_trainer(loaded, tmp_path, loss=FaultyLoss(bad_calls={2}, value=value))
    with caplog.at_level(logging.WARNING, logger="unlearn.training.trainer"):
        result, before, after = train_watching(trainer, 2)
    assert result.steps == 4 and result.skipped_steps == 1
    assert_skipped_only(tmp_path, trainer, 2, "loss/forget is", before, after)
    assert any("step 2: skipped" in r.getMessage() and "loss/forget" in r.getMessage() for r in caplog.records)


def test_nan_gradient_with_finite_loss_skips_the_step(loaded, tmp_path) -> None:
    """A NaN that appears only in the backward pass is caught through the Gramian."""
    hooks = []

    def on_step_end(step: int) -> None:  # poison the gradients of step 3 only
        if step == 2:
            weight = loaded.model.model.layers[0].mlp.down_proj.weight
            hooks.append(weight.register_hook(lambda g: torch.full_like(g, math.nan)))
        elif step == 3:
            hooks.pop().remove()

    trainer = make_trainer(loaded, tmp_path, on_step_end=on_step_end)
    _, before, after = train_watching(trainer, 3)
    assert_skipped_only(tmp_path, trainer, 3, "Gramian has NaN or Inf entries (gradient of forget, kl, retain)",
                        before, after)


def test_inf_gramian_skips_the_step(loaded, tmp_path, monkeypatch) -> None:
    real, calls = trainer_module.accumulate_gramians, []

    def gramians(grads, metric, **kwargs):
        calls.append(1)
        k, k_p = real(grads, metric)
        if len(calls) == 1:
            k[1, 1] = math.inf
        return k, k_p

    monkeypatch.setattr(trainer_module, "accumulate_gramians", gramians)
    trainer = make_trainer(loaded, tmp_path)
    _, before, after = train_watching(trainer, 1)
    assert_skipped_only(tmp_path, trainer, 1, "gradient of kl", before, after)


def test_non_finite_aggregator_weights_skip_the_step(loaded, tmp_path) -> None:
    class Flaky(DualSpace):
        calls = 0

        def aggregate(self, gramian):
            Flaky.calls += 1
            if Flaky.calls == 4:
                return AggregationResult(torch.tensor([math.nan, 0.0, 1.0], dtype=torch.float64))
            return super().aggregate(gramian)

    trainer = make_trainer(loaded, tmp_path, aggregator=Flaky())
    _, before, after = train_watching(trainer, 4)
    assert_skipped_only(tmp_path, trainer, 4, "aggregator returned non-finite weights", before, after)


def test_overflow_in_the_combined_direction_skips_the_step(loaded, tmp_path, monkeypatch) -> None:
    """E.g. Σ w_i g_i overflowing when cast to a half-precision parameter dtype."""
    real, calls = trainer_module.combine_into_grad, []

    def combine(params, grads, weights, consume=True, out=None):
        calls.append(1)
        directions = real(params, grads, weights, consume=consume, out=out)
        if len(calls) == 2:
            params[0].grad[0, 0] = math.inf
        return directions

    monkeypatch.setattr(trainer_module, "combine_into_grad", combine)
    trainer = make_trainer(loaded, tmp_path)
    _, before, after = train_watching(trainer, 2)
    assert_skipped_only(tmp_path, trainer, 2, "combined update direction has NaN or Inf", before, after)


def test_consecutive_skips_stop_the_run_with_a_clear_message(loaded, tmp_path) -> None:
    trainer = make_trainer(loaded, tmp_path, loss=FaultyLoss(bad_calls=range(1, 100)), max_steps=10, max_skips=3)
    before = snapshot(trainer)
    with pytest.raises(TooManySkippedSteps) as info:
        trainer.train()
    message = str(info.value)
    assert "stopped at step 3: 3 consecutive steps" in message
    assert "trainer.max_consecutive_skips=3" in message and "loss/forget is nan" in message
    assert [r["skipped"] for r in read_metrics(tmp_path)] == [1, 1, 1]
    assert trainer.optimizer.steps_taken == 0
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(trainer)))


def test_isolated_skips_do_not_stop_the_run(loaded, tmp_path) -> None:
    """The counter is of consecutive skips: 2 bad, 1 good, 2 bad never reaches K=3."""
    trainer = make_trainer(loaded, tmp_path, loss=FaultyLoss(bad_calls={1, 2, 4, 5}), max_steps=6, max_skips=3)
    result = trainer.train()
    assert result.steps == 6 and result.skipped_steps == 4
    assert [r["skipped"] for r in read_metrics(tmp_path)] == [1, 1, 0, 1, 1, 0]
    assert trainer.optimizer.steps_taken == 2
    assert result.first["step"] == 3 and result.last["step"] == 6


def test_run_stopped_by_skips_still_writes_summary_and_metrics(make_config, tmp_path) -> None:
    cfg = make_config(*TINY, *NO_EVAL, "loss._target_=test_faults.AlwaysNaN", "trainer.max_steps=10",
                      "trainer.max_consecutive_skips=2", "threads=1")
    n = torch.get_num_threads()
    try:
        with pytest.raises(TooManySkippedSteps):
            run_experiment(cfg, tmp_path)
    finally:
        torch.set_num_threads(n)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "TooManySkippedSteps: stopped at step 2: 2 consecutive steps" in summary["error"]
    lines = read_metrics(tmp_path)
    assert [(r["step"], r["skipped"], r["skipped_total"]) for r in lines] == [(1, 1, 1), (2, 1, 2)]
