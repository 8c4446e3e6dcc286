"""The update that reaches the weights is MOLLM's common descent direction (docs/geometry.md).

Each test fails on the code before the fix: the KL gradient at the reference was fp32 noise,
MGDA never moved while g_kl = 0, bf16 directions were summed in bf16, and nothing measured
the update the optimizer applied.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from conftest import TINY
from test_run import read_metrics
from unlearn.aggregators import DualSpace
from unlearn.experiment import apply_lora, run_experiment
from unlearn.losses import kl_to_reference
from unlearn.losses.tokens import IGNORE_INDEX
from unlearn.training.gramian import accumulate_gramian, accumulate_gramians, combine_into_grad
from unlearn.training.objectives import OBJECTIVES, Objectives
from unlearn.training.optimizers import MetricAdam
from unlearn.training.reference import adapter_disabled_reference, frozen_copy_reference


# ------------------------------------------------------------------ KL: exactly zero at the reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kl_gradient_is_exactly_zero_at_identical_logits(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    ref = (5 * torch.randn(3, 17, 4000, generator=gen)).to(dtype)
    labels = torch.randint(0, 4000, (3, 17), generator=gen)
    labels[:, :4] = IGNORE_INDEX
    logits = ref.clone().requires_grad_(True)
    value = kl_to_reference(logits, ref, labels)
    value.backward()
    assert value.item() == 0.0
    assert torch.count_nonzero(logits.grad) == 0


def test_kl_value_and_gradient_match_float64_elsewhere() -> None:
    gen = torch.Generator().manual_seed(1)
    ref = 3 * torch.randn(2, 9, 50, generator=gen)
    start = ref + 0.3 * torch.randn(2, 9, 50, generator=gen)
    labels = torch.randint(0, 50, (2, 9), generator=gen)
    labels[0, :3] = IGNORE_INDEX
    ours = start.clone().requires_grad_(True)
    value = kl_to_reference(ours, ref, labels)
    value.backward()
    exact = start.double().requires_grad_(True)
    keep = labels[:, 1:].ne(IGNORE_INDEX)
    logq = torch.log_softmax(exact[:, :-1][keep], -1)
    logp = torch.log_softmax(ref.double()[:, :-1][keep], -1)
    expected = (logp.exp() * (logp - logq)).sum() / keep.sum()
    expected.backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(ours.grad.double(), exact.grad, rtol=1e-5, atol=1e-9)


def _kl_gradient(make_config, lora: bool) -> list[torch.Tensor]:
    from hydra.utils import instantiate

    from unlearn.data.stream import BatchStream

    cfg = make_config(*TINY)
    loaded = instantiate(cfg.model)
    model = loaded.model
    if lora:
        model = apply_lora(model, cfg.trainer.lora_config)
        reference = adapter_disabled_reference(model)
    else:
        reference = frozen_copy_reference(model)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    objectives = Objectives.mollm(model, params, instantiate(cfg.loss), reference)
    normal = instantiate(cfg.dataset.normal).train
    stream = BatchStream(normal, loaded.tokenizer, 2, 64, "auto", 0)
    forget = BatchStream(normal, loaded.tokenizer, 2, 64, "auto", 1)
    values = objectives.losses_and_grads({"forget": forget.next_batch(), "normal": stream.next_batch()})
    assert values.losses["kl"] == 0.0
    return values.grads[OBJECTIVES.index("kl")]


@pytest.mark.parametrize("lora", [False, True], ids=["frozen_copy", "lora"])
def test_kl_gradient_is_exactly_zero_at_step_zero(lora: bool, make_config) -> None:
    g_kl = _kl_gradient(make_config, lora)
    assert sum(int(torch.count_nonzero(g)) for g in g_kl) == 0


# ------------------------------------------------------------------ MGDA moves at step 0


def test_mgda_moves_at_step_zero_of_a_run(make_config, tmp_path: Path) -> None:
    run_experiment(make_config(*TINY, "aggregator=mgda", "trainer.max_steps=1"), tmp_path)
    first = read_metrics(tmp_path)[0]
    assert first["weight/kl"] == 0.0 and first["agg/dropped"] == 1.0
    assert first["direction_norm"] > 1e-3 * first["grad_norm/forget"]
    assert first["update_norm"] > 0


# ------------------------------------------------------------------ fp32 combination for bf16 weights


def test_bf16_combination_keeps_every_descent_sign() -> None:
    """g0, g1 nearly parallel bf16 gradients (cos = 0.9999) and a third one leaning along their
    difference: g2's dual edge needs weights ≈ ±10 on g0 and g1. Summed in fp32 and cast once, the
    bf16 .grad keeps every g_i·d within 10 % of (K w)_i; summed in bf16 (the old code) g0·d and
    g1·d came out ×-100 to ×-130 of it, the wrong sign. (At cos 0.99999 even the final bf16 cast
    of d cannot hold margins that small: descent_update/* shows what such a step really did.)"""
    gen = torch.Generator().manual_seed(0)
    n = 200_000
    base, tilt, third = (torch.randn(n, generator=gen) for _ in range(3))
    tilt -= (tilt @ base) / (base @ base) * base
    tilt *= base.norm() / tilt.norm() * (2e-4) ** 0.5
    rows = [base, base + tilt, third + 0.5 * base + 30 * tilt]
    grads = [[row.to(torch.bfloat16)] for row in rows]
    exact = torch.stack([g[0].double() for g in grads])
    cos = float(exact[0] @ exact[1] / (exact[0].norm() * exact[1].norm()))
    assert 0.9998 < cos < 0.99995
    # the dual edges themselves (a rank cut below 1 - cos): large weights of opposite sign
    weights = DualSpace(rank_tol=1e-8)(accumulate_gramian(grads)).weights
    assert weights.min() < -5 and weights.max() > 5
    param = torch.zeros(n, dtype=torch.bfloat16, requires_grad=True)
    combine_into_grad([param], grads, weights.tolist())
    d = param.grad.double()
    promised = exact @ (weights @ exact)
    assert (promised > 0).all()
    assert ((exact @ d) > 0).all(), (exact @ d, promised)
    torch.testing.assert_close(exact @ d, promised, rtol=0.1, atol=0.0)


def test_combination_can_leave_the_gradients_intact() -> None:
    grads = [[torch.randn(10)], [torch.randn(10)]]
    kept = [g[0].clone() for g in grads]
    param = torch.zeros(10, requires_grad=True)
    combine_into_grad([param], grads, [0.5, 2.0], consume=False)
    assert all(torch.equal(g[0], k) for g, k in zip(grads, kept))
    torch.testing.assert_close(param.grad, 0.5 * kept[0] + 2.0 * kept[1])


def test_metric_gramian_is_g_p_gt() -> None:
    gen = torch.Generator().manual_seed(2)
    grads = [[torch.randn(30, 7, generator=gen), torch.randn(11, generator=gen)] for _ in range(3)]
    metric = [torch.rand(30, 7, generator=gen), torch.rand(11, generator=gen)]
    dense = torch.stack([torch.cat([t.double().reshape(-1) for t in row]) for row in grads])
    p = torch.cat([t.double().reshape(-1) for t in metric])
    expected = dense @ torch.diag(p) @ dense.T  # √P is applied in fp32: ~1e-6 relative
    torch.testing.assert_close(accumulate_gramians(grads, metric)[1], expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ the update's own descent check


@pytest.mark.parametrize("optimizer", ["adamw", "sgd", "metric_adam"])
def test_descent_update_is_logged_for_every_optimizer(optimizer: str, make_config, tmp_path: Path) -> None:
    run_experiment(make_config(*TINY, f"optimizer={optimizer}", "trainer.optimizer.lr=1e-3"), tmp_path)
    for record in read_metrics(tmp_path):
        assert all(math.isfinite(record[f"descent_update/{n}"]) for n in OBJECTIVES)
        assert -1.0 <= record["cos/direction_update"] <= 1.0 and record["update_norm"] > 0


@pytest.mark.parametrize("optimizer", ["adamw", "metric_adam"])  # both keep per-parameter state
def test_update_tracking_in_chunks_reaches_the_same_weights(optimizer: str, make_config, tmp_path: Path) -> None:
    """track_update steps the optimizer one chunk of parameters at a time (θ_before copied per
    chunk, not for the whole model): with every parameter its own chunk the weights after 3
    steps equal, bit for bit, those of an untracked run and of one whole-model chunk, and
    descent_update/* equals the one-chunk values up to fp64 summation order."""
    from safetensors.torch import load_file

    common = [*TINY, f"optimizer={optimizer}", "trainer.optimizer.lr=1e-3", "trainer.save_model=true"]
    if optimizer == "metric_adam":
        common.append("trainer.aggregation_metric=preconditioned")
    runs = {"whole": ["trainer.update_chunk_mb=4096"], "per_parameter": ["trainer.update_chunk_mb=1e-6"],
            "untracked": ["trainer.track_update=false"]}
    weights = {}
    for name, extra in runs.items():
        run_experiment(make_config(*common, *extra), tmp_path / name)
        weights[name] = load_file(tmp_path / name / "model" / "model.safetensors")
    for name in ("per_parameter", "untracked"):
        assert weights[name].keys() == weights["whole"].keys()
        assert all(torch.equal(weights[name][k], weights["whole"][k]) for k in weights["whole"]), name
    whole, split = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "per_parameter")
    assert len(whole) == len(split) == 3
    for a, b in zip(whole, split, strict=True):
        for key in [f"descent_update/{n}" for n in OBJECTIVES] + ["update_norm", "cos/direction_update"]:
            assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-15), key
        assert a["update_norm"] > 0


@pytest.mark.parametrize("aggregator", ["dual", "mgda"])
def test_sgd_update_is_the_direction(aggregator: str, make_config, tmp_path: Path) -> None:
    """The paper's θ ← θ − lr·d: u = lr·d, so g_i·u = lr·(K w)_i and cos(d, u) = 1, up to the
    rounding of θ − lr·d to the fp32 weights (u is measured on the weights: ~0.3 % for MGDA's
    short steps on the tiny model)."""
    lr = 0.05
    run_experiment(make_config(*TINY, f"aggregator={aggregator}", "optimizer=sgd",
                               f"trainer.optimizer.lr={lr}"), tmp_path)
    for record in read_metrics(tmp_path):
        assert record["cos/direction_update"] == pytest.approx(1.0, abs=1e-2)
        for name in OBJECTIVES:
            scale = lr * record[f"grad_norm/{name}"] * record["direction_norm"]
            assert record[f"descent_update/{name}"] == pytest.approx(lr * record[f"descent/{name}"],
                                                                     abs=2e-2 * scale)


@pytest.mark.parametrize("aggregator", ["dual", "mgda"])
def test_preconditioned_aggregation_makes_the_real_update_a_descent_step(
    aggregator: str, make_config, tmp_path: Path
) -> None:
    """MetricAdam with the weights computed on K_P = G P Gᵀ: g_j·u = lr (K_P w)_j ≥ 0 for the
    update the weights actually received, every step (and the step count is not the model's)."""
    lr = 1e-3
    run_experiment(make_config(*TINY, f"aggregator={aggregator}", "optimizer=metric_adam",
                               f"trainer.optimizer.lr={lr}", "trainer.aggregation_metric=preconditioned",
                               "trainer.max_steps=4"), tmp_path)
    lines = read_metrics(tmp_path)
    assert len(lines) == 4
    for record in lines:
        for name in OBJECTIVES:
            promised = lr * record[f"descent/{name}"]  # lr (K_P w)_j
            actual = record[f"descent_update/{name}"]
            rounding = 1e-6 * record[f"grad_norm/{name}"] * record["update_norm"]
            assert promised >= -rounding and actual >= -rounding, (name, record)
            # equal up to fp32 rounding of K_P's √P rows and of the weights θ − u
            assert actual == pytest.approx(promised, rel=1e-2, abs=rounding)


def test_preconditioned_aggregation_needs_a_preconditioned_optimizer(make_config, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="optimizer=metric_adam"):
        run_experiment(make_config(*TINY, "trainer.aggregation_metric=preconditioned"), tmp_path)


def test_metric_adam_preconditions_with_the_objectives_second_moment() -> None:
    """P_t = 1/(√v̂_t + ε) with v from mean_i g_i², known before d; the step is u = lr P_t d."""
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = MetricAdam([p], lr=0.1, beta2=0.9, eps=1e-8)
    g_a, g_b = torch.tensor([0.5, -1.0]), torch.tensor([1.5, 1.0])
    precond = opt.preconditioners([p], [[g_a], [g_b]])[0]
    v1 = (g_a**2 + g_b**2) / 2  # bias-corrected after one step: v̂_1 = mean_i g_i²
    torch.testing.assert_close(precond, 1 / (v1.sqrt() + 1e-8))
    d = torch.tensor([3.0, 0.25])  # any direction the aggregator picks: P does not change
    p.grad = d.clone()
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([1.0, -2.0]) - 0.1 * d * precond)
    # step 2: v̂_2 = (0.9·0.1·v1 + 0.1·s2) / (1 - 0.81), with s2 the new mean square
    s2 = torch.tensor([4.0, 0.0])
    expected = 1 / (((0.9 * 0.1 * v1 + 0.1 * s2) / (1 - 0.81)).sqrt() + 1e-8)
    torch.testing.assert_close(opt.preconditioners([p], [[torch.tensor([2.0, 0.0])]])[0], expected)


def test_metric_adam_refuses_weight_decay() -> None:
    with pytest.raises(ValueError, match="weight_decay"):
        MetricAdam([torch.nn.Parameter(torch.zeros(1))], weight_decay=0.01)


def test_public_losses_entry_matches_the_training_losses(make_config) -> None:
    """The probe, the one-backward path and the trainer share Objectives.losses."""
    from hydra.utils import instantiate

    from unlearn.data.stream import BatchStream

    cfg = make_config(*TINY)
    loaded = instantiate(cfg.model)
    objectives = Objectives.mollm(loaded.model, list(loaded.model.parameters()), instantiate(cfg.loss),
                                 frozen_copy_reference(loaded.model))
    normal = instantiate(cfg.dataset.normal).train
    f, n = (BatchStream(normal, loaded.tokenizer, 2, 64, "auto", s).next_batch() for s in (3, 4))
    values = objectives.losses({"forget": f, "normal": n})
    trained = objectives.losses_and_grads({"forget": f, "normal": n}).losses
    for name in OBJECTIVES:
        assert values[name] == pytest.approx(trained[name], rel=1e-6, abs=1e-9)
    assert values["forget_nll"] > 0
    assert not any(p.grad is not None for p in loaded.model.parameters())


def test_metric_adam_checkpoints_hold_no_per_step_buffers() -> None:
    p = torch.nn.Parameter(torch.ones(4))
    opt = MetricAdam([p], lr=0.1)
    opt.preconditioners([p], [[torch.ones(4)]])
    p.grad = torch.ones(4)
    opt.step()
    state = opt.state_dict()["state"][0]
    assert set(state) == {"v", "step"} and "precond" in opt.state[p]  # the live buffers stay
    again = MetricAdam([torch.nn.Parameter(torch.ones(4))], lr=0.1)
    again.load_state_dict(opt.state_dict())


def test_metric_adam_state_is_untouched_by_a_skipped_step() -> None:
    """The trainer asks for P before it knows whether the step will be skipped (e.g. a NaN in
    the combination): until step() nothing may be committed."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = MetricAdam([p], lr=0.1, beta2=0.9)
    opt.preconditioners([p], [[torch.ones(3)]])
    p.grad = torch.ones(3)
    opt.step()
    committed = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in opt.state[p].items() if k in ("v", "step")}
    opt.preconditioners([p], [[torch.full((3,), float("nan"))]])  # then the trainer skips
    assert opt.state[p]["step"] == committed["step"] and torch.equal(opt.state[p]["v"], committed["v"])
    precond = opt.preconditioners([p], [[2 * torch.ones(3)]])[0]
    expected_v = 0.9 * committed["v"] + 0.1 * 4.0
    torch.testing.assert_close(precond, 1 / ((expected_v / (1 - 0.81)).sqrt() + 1e-8))
