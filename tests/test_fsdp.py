"""Fully sharded training (``trainer.strategy=fsdp``, :mod:`unlearn.training.sharding`): 2 CPU
processes over gloo, FSDP2 on a one-layer tiny Llama.

One ``torch.multiprocessing.spawn`` of two workers runs every scenario (dual, MGDA and the
weighted sum for 2 steps; a NaN forget loss on rank 1 only) and one end-to-end
``run_experiment`` with ``trainer.strategy=fsdp``; each rank saves the whole parameters after every
step (gathered from the shards) and its records. The tests compare them with a single-process
replay: each step, the mean over the two data shards of every objective's gradient, then the
Gramian, the aggregator, d and AdamW, without any process group.
"""

from __future__ import annotations

import json
import math
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from conftest import TINY, compose_config
from rank_fixtures import FORGET, NORMAL, NaNOnce, spawn_ranks
from unlearn.aggregators import MGDA, DualSpace, WeightedSum
from unlearn.data.stream import BatchStream
from unlearn.losses import UCE
from unlearn.training.gramian import accumulate_gramian, combine_into_grad
from unlearn.training.objectives import OBJECTIVES, Objectives, mollm_objectives
from unlearn.training.reference import frozen_copy_reference
from unlearn.tracking import NullTracker

WORLD = 2
LR = 1e-2
STEPS = 2
AGGREGATORS = {"dual": DualSpace, "mgda": MGDA,
               "weighted_sum": lambda: WeightedSum([1.0, 0.5, 2.0])}
SCENARIOS = {"dual": ("dual", None), "mgda": ("mgda", None), "weighted_sum": ("weighted_sum", None),
             "nan_on_rank1": ("dual", 1)}  # name: (aggregator, rank whose first forget loss is NaN)



class ListTracker(NullTracker):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict] = []

    def log(self, record) -> None:
        self.records.append(dict(record))


def tiny_model(initial=None):
    """The one-layer tiny Llama, moved away from its reference by fixed noise (g_KL ≠ 0);
    returns (loaded, frozen unsharded copy of the original)."""
    from unlearn.models.tiny import build_tiny_random

    loaded = build_tiny_random(num_layers=1, hidden_size=16, intermediate_size=32, num_heads=2,
                               device="cpu")
    if initial is not None:
        loaded.model.load_state_dict(initial)
    return loaded


def perturb(params) -> None:
    with torch.no_grad():
        noise = torch.Generator().manual_seed(0)
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=noise))


def streams(tokenizer, rank: int) -> dict[str, BatchStream]:
    make = lambda examples, seed: BatchStream(examples, tokenizer, 2, 32, "plain", seed,
                                              rank=rank, num_shards=WORLD)
    return {"forget": make(FORGET, 0), "normal": make(NORMAL, 1)}


def run_scenario(rank: int, initial, aggregator: str, nan_rank) -> dict:
    from unlearn.training import sharding
    from unlearn.training.trainer import UnlearningTrainer

    loaded = tiny_model(initial)
    model = loaded.model
    reference = sharding.sharded_reference(model)  # the original weights
    perturb([p for p in model.parameters() if p.requires_grad])
    sharded = sharding.shard_for_training(model)
    params, tracker, after = sharded.params, ListTracker(), []
    loss = NaNOnce() if rank == nan_rank else UCE()
    objectives = sharding.ShardedObjectives(model, sharded.sharded_params, params,
                                            mollm_objectives(loss), reference)
    trainer = UnlearningTrainer(
        model=model, params=params, objectives=objectives, aggregator=AGGREGATORS[aggregator](),
        optimizer=torch.optim.AdamW(params, lr=LR), streams=streams(loaded.tokenizer, rank),
        tracker=tracker, max_steps=STEPS, progress_bar=False, sync=sharding.ShardedSync(),
        on_step_end=lambda step: after.append([p.full_tensor().detach().clone()
                                               for p in sharded.sharded_params]),
    )
    trainer.train()
    kinds = sorted({type(p).__name__ for p in sharded.sharded_params})
    shard_sizes = [p.numel() for p in params]
    return {"records": tracker.records, "after": after, "kinds": kinds, "shard_sizes": shard_sizes}


def worker(rank: int, init_file: str, out_dir: str, run_cfg) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=120))
    try:
        initial = {k: v.clone() for k, v in tiny_model().model.state_dict().items()}
        results = {name: run_scenario(rank, initial, *spec) for name, spec in SCENARIOS.items()}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
        from unlearn.experiment import run_experiment

        summary = run_experiment(run_cfg, Path(out_dir) / f"run-rank{rank}")
        (Path(out_dir) / f"summary-rank{rank}.json").write_text(json.dumps(summary, default=str))
        # checkpoints: a 2-step run writing one per step; its newest is deleted and it resumes
        from omegaconf import OmegaConf

        ckpt_cfg = OmegaConf.merge(run_cfg, {"trainer": {"checkpoint_every": 1, "save_model": False}})
        run_dir = Path(out_dir) / f"ckpt-rank{rank}"
        run_experiment(ckpt_cfg, run_dir)
        dist.barrier()
        if rank == 0:
            (run_dir / "uninterrupted.txt").write_text((run_dir / "metrics.jsonl").read_text())
            shutil.rmtree(run_dir / "checkpoints" / "step-000002")
        dist.barrier()
        run_experiment(OmegaConf.merge(ckpt_cfg, {"resume": True}), run_dir)
        # a stop signal seen by rank 1 alone, after step 1: every rank stops there with a
        # checkpoint (none is left waiting in a collective), and the resumed run finishes the same
        import os
        import signal

        from unlearn.training import trainer as trainer_module
        from unlearn.training.distributed import any_rank
        from unlearn.training.preemption import Preempted

        flags = [any_rank(rank == 1), any_rank(False)]
        step = trainer_module.UnlearningTrainer.train_step

        def signalled_step(self):
            record = step(self)
            if rank == 1 and self.step == 1:
                os.kill(os.getpid(), signal.SIGUSR1)
            return record

        trainer_module.UnlearningTrainer.train_step = signalled_step
        stopped = None
        try:
            run_experiment(ckpt_cfg, Path(out_dir) / f"preempt-rank{rank}")
        except Preempted as exc:
            stopped = exc.step
        finally:
            trainer_module.UnlearningTrainer.train_step = step
        dist.barrier()
        run_experiment(OmegaConf.merge(ckpt_cfg, {"resume": True}), Path(out_dir) / f"preempt-rank{rank}")
        torch.save({"any_rank": flags, "stopped_at": stopped}, Path(out_dir) / f"preempt-rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, data_dir) -> list[dict]:
    out = tmp_path_factory.mktemp("fsdp")
    cfg = compose_config([*TINY, "trainer.max_steps=2", "aggregator=dual", "threads=1",
                          "trainer.strategy=fsdp", "trainer.save_model=true",
                          "trainer.probe_every=1", "trainer.probe_size=2",
                          "trainer.heldout_probe_size=0"], data_dir)
    return spawn_ranks(worker, out, cfg, WORLD)


def replay(aggregator: str) -> dict:
    """The same steps in one process: mean of the two shards' gradients, then one aggregation;
    one torch thread, as the ranks use (another thread count sums in another order)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _replay(aggregator)
    finally:
        torch.set_num_threads(threads)


def _replay(aggregator: str) -> dict:
    initial = {k: v.clone() for k, v in tiny_model().model.state_dict().items()}
    loaded = tiny_model(initial)
    model = loaded.model
    params = [p for p in model.parameters() if p.requires_grad]
    reference = frozen_copy_reference(model)
    perturb(params)
    objectives = Objectives.mollm(model, params, UCE(), reference)
    shards = [streams(loaded.tokenizer, r) for r in range(WORLD)]
    optimizer = torch.optim.AdamW(params, lr=LR)
    after, gramians = [], []
    for _ in range(STEPS):
        values = [objectives.losses_and_grads({k: s.next_batch() for k, s in shard.items()})
                  for shard in shards]
        grads = [[(a + b) / WORLD for a, b in zip(ga, gb, strict=True)]
                 for ga, gb in zip(values[0].grads, values[1].grads, strict=True)]
        gramian = accumulate_gramian(grads)
        combine_into_grad(params, grads, AGGREGATORS[aggregator]()(gramian).weights.tolist())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        after.append([p.detach().clone() for p in params])
        gramians.append(gramian)
    return {"after": after, "gramians": gramians}


def max_diff(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("name", ["dual", "mgda", "weighted_sum"])
def test_fsdp_equals_a_single_process_replay(ranks, name: str) -> None:
    reference = replay(SCENARIOS[name][0])
    r0, r1 = ranks[0][name], ranks[1][name]
    assert r0["kinds"] == ["DTensor"]  # the trained parameters really are sharded
    assert sum(r0["shard_sizes"]) + sum(r1["shard_sizes"]) == sum(
        p.numel() for p in reference["after"][0])
    assert len(r0["after"]) == STEPS
    for step in range(STEPS):
        assert max_diff(r0["after"][step], reference["after"][step]) <= 1e-6, (name, step)
        assert max_diff(r0["after"][step], r1["after"][step]) == 0.0
        record = r0["records"][step]
        assert record["skipped"] == 0
        for i, n in enumerate(OBJECTIVES):  # the Gramian of the shards, summed over the ranks
            expected = math.sqrt(float(reference["gramians"][step][i, i]))
            assert record[f"grad_norm/{n}"] == pytest.approx(expected, rel=1e-5)
            assert r1["records"][step][f"weight/{n}"] == record[f"weight/{n}"]
        assert "descent_update/forget" in record and record["update_norm"] > 0


def test_every_dual_step_is_a_common_descent_direction(ranks) -> None:
    for results in ranks:
        for record in results["dual"]["records"]:
            scale = max(record[f"grad_norm/{n}"] ** 2 for n in OBJECTIVES)
            for n in OBJECTIVES:
                assert record[f"descent/{n}"] >= -1e-6 * scale, (n, record)


def test_a_nan_on_one_rank_makes_every_rank_skip(ranks) -> None:
    r0, r1 = ranks[0]["nan_on_rank1"], ranks[1]["nan_on_rank1"]
    assert [r["skipped"] for r in r0["records"]] == [r["skipped"] for r in r1["records"]] == [1, 0]
    assert "rank 1" in r0["records"][0]["skip_reason"]
    assert "loss/forget is nan" in r1["records"][0]["skip_reason"]
    assert max_diff(r0["after"][1], r1["after"][1]) == 0.0
    assert max_diff(r0["after"][1], r0["after"][0]) > 0  # the second step moved


def test_run_experiment_with_fsdp_writes_only_from_rank_0(ranks) -> None:
    from transformers import AutoModelForCausalLM

    out = ranks[0]["dir"]
    run_dir = out / "run-rank0"
    assert not (out / "run-rank1").exists()
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2] and all(r["skipped"] == 0 for r in lines)
    assert all("probe/forget" in r for r in lines)  # probes run on every rank together
    saved = json.loads((run_dir / "summary.json").read_text())
    assert (saved["status"], saved["world_size"]) == ("completed", 2)
    assert ranks[1]["summary"]["status"] == "completed"
    assert ranks[0]["summary"]["final/loss/forget"] == ranks[1]["summary"]["final/loss/forget"]
    # the consolidated export: an ordinary safetensors model that evaluation reads
    assert list((run_dir / "model").glob("*.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    assert sum(p.numel() for p in model.parameters()) == saved["trainable_params"]


def test_a_slurm_task_finds_its_rank() -> None:
    from unlearn.training.distributed import slurm_environment

    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "3", "SLURM_NNODES": "1",
           "SLURM_JOB_ID": "12345"}
    assert slurm_environment(env) == {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3",
                                      "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "32345"}
    assert slurm_environment({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == {}  # one task
    assert slurm_environment({**env, "WORLD_SIZE": "8"}) == {}  # torchrun inside the job wins


def test_fsdp_refuses_what_it_cannot_do(make_config, tmp_path) -> None:
    from unlearn.config_check import ConfigError
    from unlearn.experiment import run_experiment

    cfg = make_config(*TINY, "trainer.strategy=fsdp")
    with pytest.raises(ConfigError, match="torchrun --nproc_per_node"):
        run_experiment(cfg, tmp_path / "run")  # one process


def test_a_sharded_run_resumes_exactly_from_its_checkpoint(ranks) -> None:
    run_dir = ranks[0]["dir"] / "ckpt-rank0"
    assert not (ranks[0]["dir"] / "ckpt-rank1").exists()
    kept = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert kept == ["step-000001", "step-000002"]  # the resumed run wrote step 2 again
    files = json.loads((run_dir / "checkpoints" / "step-000001" / "manifest.json").read_text())["files"]
    assert "dcp/.metadata" in files and sum(f.endswith(".distcp") for f in files) == WORLD
    before = [json.loads(x) for x in (run_dir / "uninterrupted.txt").read_text().splitlines()]
    after = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in after] == [1, 2]
    for key in ("loss/forget", "loss/kl", "loss/retain", "weight/forget", "descent/kl", "update_norm"):
        assert after[1][key] == pytest.approx(before[1][key], rel=1e-6, abs=1e-12), key


def test_a_stop_signal_on_one_rank_stops_every_rank_at_the_same_step(ranks) -> None:
    out = ranks[0]["dir"]
    seen = [torch.load(out / f"preempt-rank{r}.pt", weights_only=False) for r in range(WORLD)]
    assert [s["any_rank"] for s in seen] == [[True, False]] * WORLD
    assert [s["stopped_at"] for s in seen] == [1] * WORLD  # rank 0 got no signal and stopped too
    before = [json.loads(x) for x in (out / "ckpt-rank0" / "uninterrupted.txt").read_text().splitlines()]
    after = [json.loads(x) for x in (out / "preempt-rank0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in after] == [1, 2]
    for key in ("loss/forget", "loss/kl", "loss/retain", "update_norm"):
        assert after[1][key] == pytest.approx(before[1][key], rel=1e-6, abs=1e-12), key


def test_another_world_size_is_refused(tmp_path) -> None:
    from unlearn.checkpoint import CheckpointError
    from unlearn.training.sharded_checkpoint import check_world_size

    check_world_size({"world_size": 2}, 2, tmp_path)
    with pytest.raises(CheckpointError, match="written by 4 ranks .* this run has 2.*--nproc_per_node 4"):
        check_world_size({"world_size": 4}, 2, tmp_path)
