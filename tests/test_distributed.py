"""Data parallel without DDP (:mod:`unlearn.training.distributed`): 2 CPU processes over gloo.

One ``torch.multiprocessing.spawn`` of two workers (1 torch thread each) runs every scenario on a
one-layer tiny Llama, each rank on its own shard of 8 forget and 8 normal examples, and saves
what it saw: the logged records, the parameters after every step and, through a recording
:class:`GradientSync`, its local per-objective gradients before the all-reduce. The tests then
compare the ranks with each other and with a single-process replay of the same steps.
"""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from conftest import TINY, compose_config
from rank_fixtures import FORGET, NORMAL, NaNOnce, spawn_ranks
from unlearn.aggregators import MGDA, DualSpace, WeightedSum
from unlearn.data.stream import BatchStream
from unlearn.data.types import Example
from unlearn.losses import UCE
from unlearn.training import distributed
from unlearn.training.distributed import GradientSync
from unlearn.training.gramian import accumulate_gramian, combine_into_grad
from unlearn.training.objectives import OBJECTIVES, Objectives
from unlearn.training.reference import frozen_copy_reference
from unlearn.training.trainer import UnlearningTrainer
from unlearn.tracking import NullTracker

WORLD = 2
LR = 1e-2
AGGREGATORS = {"dual": DualSpace, "mgda": MGDA,
               "weighted_sum": lambda: WeightedSum([1.0, 0.5, 2.0])}
SCENARIOS = {  # name: (aggregator, steps, track_gradients, rank whose first forget loss is NaN,
    #                      grad_accum_steps)
    "dual": ("dual", 2, True, None, 1),
    "mgda": ("mgda", 2, True, None, 1),
    "one_backward": ("weighted_sum", 2, False, None, 1),
    "nan_on_rank1": ("dual", 2, True, 1, 1),
    "dual_accum": ("dual", 1, True, None, 2),
}



class RecordingSync(GradientSync):
    """Keeps a copy of this rank's local losses and tensors before the all-reduce."""

    def __init__(self) -> None:
        super().__init__()
        self.local: list[dict] = []

    def __call__(self, losses, tensors, failure):
        self.local.append({"losses": dict(losses), "failure": failure,
                           "tensors": [t.detach().clone() for t in tensors or []]})
        return super().__call__(losses, tensors, failure)


class ListTracker(NullTracker):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict] = []

    def log(self, record) -> None:
        self.records.append(dict(record))


def tiny_model():
    from unlearn.models.tiny import build_tiny_random

    return build_tiny_random(num_layers=1, hidden_size=16, intermediate_size=32, num_heads=2,
                             device="cpu")


def run_scenario(loaded, initial, rank: int, aggregator: str, steps: int, track: bool, nan_rank,
                 accum: int) -> dict:
    model = loaded.model
    model.load_state_dict(initial)
    params = [p for p in model.parameters() if p.requires_grad]
    reference = frozen_copy_reference(model)
    with torch.no_grad():  # move away from the reference (the same on both ranks): g_KL ≠ 0
        noise = torch.Generator().manual_seed(0)
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=noise))
    start = [p.detach().clone() for p in params]
    stream = lambda examples, seed: BatchStream(examples, loaded.tokenizer, 2, 32, "plain", seed,
                                                rank=rank, num_shards=WORLD)
    sync, tracker, after = RecordingSync(), ListTracker(), []
    trainer = UnlearningTrainer(
        model=model, params=params,
        objectives=Objectives.mollm(model, params, NaNOnce() if rank == nan_rank else UCE(),
                                   reference),
        aggregator=AGGREGATORS[aggregator](), optimizer=torch.optim.AdamW(params, lr=LR),
        streams={"forget": stream(FORGET, 0), "normal": stream(NORMAL, 1)}, tracker=tracker,
        max_steps=steps, grad_accum_steps=accum, progress_bar=False, track_gradients=track,
        sync=sync,
        on_step_end=lambda step: after.append([p.detach().clone() for p in params]),
    )
    trainer.train()
    return {"records": tracker.records, "start": start, "after": after, "local": sync.local}


def collectives(rank: int) -> dict:
    """all_reduce_mean_ over mixed dtypes and tiny buckets; broadcast_ from rank 0."""
    tensors = [torch.full((3, 5), float(rank + 1)),
               torch.full((7,), 10.0 * (rank + 1), dtype=torch.bfloat16),
               torch.arange(4, dtype=torch.float64) * (rank + 1),
               torch.full((2, 2), float(rank)).t()]  # not contiguous
    distributed.all_reduce_mean_(tensors, bucket_numel=12)
    shared = [torch.full((5,), float(rank)), torch.full((3,), rank + 0.5, dtype=torch.float64)]
    distributed.broadcast_(shared)
    return {"mean": tensors, "broadcast": shared}


def worker(rank: int, init_file: str, out_dir: str, run_cfg) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    try:
        results: dict = {"collectives": collectives(rank)}
        loaded = tiny_model()
        initial = {k: v.clone() for k, v in loaded.model.state_dict().items()}
        for name, spec in SCENARIOS.items():
            results[name] = run_scenario(loaded, initial, rank, *spec)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
        # end to end: run_experiment joins the existing group; each rank passes its own run dir
        from unlearn.experiment import run_experiment

        summary = run_experiment(run_cfg, Path(out_dir) / f"run-rank{rank}")
        (Path(out_dir) / f"summary-rank{rank}.json").write_text(json.dumps(summary, default=str))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, data_dir) -> list[dict]:
    out = tmp_path_factory.mktemp("dp")
    cfg = compose_config([*TINY, "trainer.max_steps=2", "aggregator=dual", "threads=1"], data_dir)
    return spawn_ranks(worker, out, cfg, WORLD)


# ------------------------------------------------------------------ the single-process replay

def unflatten(tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    n = len(tensors) // len(OBJECTIVES)
    return [[t.clone() for t in tensors[i * n:(i + 1) * n]] for i in range(len(OBJECTIVES))]


def direction(flat: list[torch.Tensor], aggregator: str) -> list[torch.Tensor]:
    """``Σ_i w_i g_i`` with ``w = A(G Gᵀ)``, as the trainer forms it."""
    grads = unflatten(flat)
    weights = AGGREGATORS[aggregator]()(accumulate_gramian(grads)).weights.tolist()
    holders = [torch.zeros_like(g) for g in grads[0]]
    combine_into_grad(holders, grads, weights)
    return [h.grad for h in holders]


def mean_over_ranks(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[torch.Tensor]:
    return [(x + y) / WORLD for x, y in zip(a, b, strict=True)]


def aggregate_then_average(ranks, name: str, step: int, aggregator: str) -> list[torch.Tensor]:
    """The wrong order: each rank aggregates its own gradients, then the directions are averaged."""
    local = [r[name]["local"][step]["tensors"] for r in ranks]
    return mean_over_ranks(direction(local[0], aggregator), direction(local[1], aggregator))


def average_then_aggregate(ranks, name: str, step: int, aggregator: str) -> list[torch.Tensor]:
    """What the trainer must do: mean of every objective's gradient, then one aggregation."""
    mean = mean_over_ranks(*(r[name]["local"][step]["tensors"] for r in ranks))
    return mean if aggregator is None else direction(mean, aggregator)


def replay(initial: list[torch.Tensor],
           directions: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
    """The same AdamW steps in one process; parameters after each step."""
    params = [t.clone().requires_grad_(True) for t in initial]
    optimizer = torch.optim.AdamW(params, lr=LR)
    out = []
    for d in directions:
        for p, g in zip(params, d, strict=True):
            p.grad = g.clone()
        optimizer.step()
        out.append([p.detach().clone() for p in params])
    return out


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------ tests

@pytest.mark.parametrize("name", ["dual", "mgda", "one_backward"])
def test_ranks_stay_bitwise_in_sync(ranks, name: str) -> None:
    r0, r1 = ranks[0][name], ranks[1][name]
    # the shards really differ: without the all-reduce the ranks would take different steps
    assert max_diff(r0["local"][0]["tensors"], r1["local"][0]["tensors"]) > 1e-4
    assert len(r0["after"]) == len(r1["after"]) == 2
    for step in range(2):
        for a, b in zip(r0["after"][step], r1["after"][step], strict=True):
            assert torch.equal(a, b), (name, step)
        assert max_diff(r0["after"][step], ranks[0][name]["start"]) > 0  # and they moved
    for rec0, rec1 in zip(r0["records"], r1["records"], strict=True):
        assert rec0["skipped"] == rec1["skipped"] == 0
        for key in (*(f"weight/{n}" for n in OBJECTIVES), *(f"loss/{n}" for n in OBJECTIVES)):
            assert rec0[key] == rec1[key], (name, key)
        for n in OBJECTIVES:  # the logged loss is the mean of the ranks' local losses
            local = [r[name]["local"][rec0["step"] - 1]["losses"][n] for r in ranks]
            assert rec0[f"loss/{n}"] == pytest.approx(sum(local) / WORLD, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("name", ["dual", "mgda"])
def test_aggregation_happens_after_the_all_reduce(ranks, name: str) -> None:
    """Distributed = one process aggregating the mean gradients ≠ mean of per-rank directions."""
    aggregator = SCENARIOS[name][0]
    right = [average_then_aggregate(ranks, name, s, aggregator) for s in range(2)]
    wrong = [aggregate_then_average(ranks, name, s, aggregator) for s in range(2)]
    start = ranks[0][name]["start"]
    reference, counterfactual = replay(start, right), replay(start, wrong)
    for step in range(2):
        assert max_diff(ranks[0][name]["after"][step], reference[step]) <= 1e-7, step
    # the two orders give clearly different directions and parameters
    norm = max(float(t.abs().max()) for t in right[0])
    assert max_diff(right[0], wrong[0]) > 1e-2 * norm
    assert max_diff(ranks[0][name]["after"][1], counterfactual[1]) > 1e-4


def test_grad_accumulation_all_reduces_once_per_step(ranks) -> None:
    r0, r1 = ranks[0]["dual_accum"], ranks[1]["dual_accum"]
    assert len(r0["local"]) == len(r1["local"]) == 1  # one all-reduce for 2 micro-batches
    assert all(torch.equal(a, b) for a, b in zip(r0["after"][0], r1["after"][0], strict=True))
    reference = replay(r0["start"], [average_then_aggregate(ranks, "dual_accum", 0, "dual")])
    assert max_diff(r0["after"][0], reference[0]) <= 1e-7


def test_one_backward_weighted_sum_uses_the_mean_gradient(ranks) -> None:
    directions = [average_then_aggregate(ranks, "one_backward", s, None) for s in range(2)]
    reference = replay(ranks[0]["one_backward"]["start"], directions)
    for step in range(2):
        assert max_diff(ranks[0]["one_backward"]["after"][step], reference[step]) <= 1e-7
    assert "weight/kl" in ranks[0]["one_backward"]["records"][0]


def test_a_non_finite_loss_on_one_rank_skips_the_step_on_every_rank(ranks) -> None:
    r0, r1 = ranks[0]["nan_on_rank1"], ranks[1]["nan_on_rank1"]
    assert [r["skipped"] for r in r0["records"]] == [r["skipped"] for r in r1["records"]] == [1, 0]
    assert "rank 1" in r0["records"][0]["skip_reason"]
    assert "loss/forget is nan" in r1["records"][0]["skip_reason"]
    for a, b, start in zip(r0["after"][0], r1["after"][0], r0["start"], strict=True):
        assert torch.equal(a, b) and torch.equal(a, start)  # nothing reached the optimizer
    for a, b in zip(r0["after"][1], r1["after"][1], strict=True):
        assert torch.equal(a, b)
    assert max_diff(r0["after"][1], r0["start"]) > 0


def test_collectives(ranks) -> None:
    for results in ranks:
        mean, shared = results["collectives"]["mean"], results["collectives"]["broadcast"]
        assert torch.equal(mean[0], torch.full((3, 5), 1.5))
        assert torch.equal(mean[1], torch.full((7,), 15.0, dtype=torch.bfloat16))
        assert torch.equal(mean[2], torch.arange(4, dtype=torch.float64) * 1.5)
        assert torch.equal(mean[3], torch.full((2, 2), 0.5))
        assert torch.equal(shared[0], torch.zeros(5))
        assert torch.equal(shared[1], torch.full((3,), 0.5, dtype=torch.float64))


def test_run_experiment_writes_only_from_rank_0(ranks) -> None:
    out = ranks[0]["dir"]
    run_dir = out / "run-rank0"
    assert not (out / "run-rank1").exists()  # rank 1 trained in rank 0's run dir and wrote nothing
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2] and all("time/sync_s" in r for r in lines)
    saved = json.loads((run_dir / "summary.json").read_text())
    assert (saved["status"], saved["world_size"], saved["backend"]) == ("completed", 2, "gloo")
    s0, s1 = ranks[0]["summary"], ranks[1]["summary"]
    assert s1["status"] == "completed"
    for key in ("final/loss/forget", "final/loss/kl", "final/loss/retain"):
        assert s0[key] == s1[key] == saved[key]


# ------------------------------------------------------------------ single process: unchanged

def test_without_a_process_group_everything_is_a_no_op() -> None:
    assert not dist.is_initialized() and distributed.world_size() == 1
    tensors = [torch.ones(3)]
    distributed.all_reduce_mean_(tensors)
    distributed.broadcast_(tensors)
    assert torch.equal(tensors[0], torch.ones(3))
    losses = {"forget": 1.0}
    assert GradientSync()(losses, tensors, None) is None and losses == {"forget": 1.0}
    assert GradientSync()(losses, None, "loss/forget is nan") == "loss/forget is nan"
    with distributed.process_group() as r:
        assert (r.rank, r.world_size, r.is_main, r.distributed) == (0, 1, True, False)
    assert distributed.on_main(lambda: 7) == 7


def test_shards_are_disjoint_and_one_process_keeps_its_order() -> None:
    from unlearn.models.embedded import load_embedded_tokenizer

    tokenizer = load_embedded_tokenizer()
    examples = [Example(f"q{i}", f"a{i}") for i in range(11)]
    whole = BatchStream(examples, tokenizer, 1, 16, "plain", seed=3)
    order = list(range(11))
    random.Random(3).shuffle(order)
    assert whole._order == order  # the single-process stream is unchanged
    shards = [BatchStream(examples, tokenizer, 1, 16, "plain", seed=3, rank=r, num_shards=3)._order
              for r in range(3)]
    assert all(len(s) == 3 for s in shards)  # ⌊11/3⌋ each
    assert sorted(sum(shards, [])) == sorted(order[:9]) and len(set(sum(shards, []))) == 9


def test_non_main_ranks_keep_hydra_out_of_the_run_dir(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from conftest import CONF
    from unlearn.run import non_main_rank_overrides

    assert non_main_rank_overrides({"RANK": "0", "WORLD_SIZE": "2"}) == []
    assert non_main_rank_overrides({}) == []
    extra = non_main_rank_overrides({"RANK": "1", "WORLD_SIZE": "2"})
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra.run.dir={tmp_path}/mine", *extra],
                      return_hydra_config=True)
    assert cfg.hydra.output_subdir is None  # no .hydra/ folder
    assert cfg.hydra.run.dir != f"{tmp_path}/mine" and "unlearn-rank1" in cfg.hydra.run.dir
    assert "file" not in cfg.hydra.job_logging.get("handlers", {})  # no <job>.log file
