"""Sharded step benchmark: ``trainer.strategy=fsdp`` dual against an FSDP weighted sum, 2 ranks.

Two CPU processes over gloo (``torch.multiprocessing.spawn``, one torch thread each) shard a
tiny random Llama with FSDP2 (:mod:`unlearn.training.sharding`) and run, interleaved step by
step with the order rotated every round, on fixed batches (each rank its own half of the data):

* ``fsdp_weighted_sum_1bw``: one backward pass of Σ c_i L_i (FSDP's reduce-scatter fills the
  gradient shards) and AdamW on the shards: what a one-script FSDP baseline costs. The trainer
  itself refuses ``track_gradients=false`` under FSDP, so this step is written out here;
* ``fsdp_weighted_sum``: the trainer's three-gradient weighted sum (update check on);
* ``fsdp_dual``: the trainer's dual step (update check on), the configuration of
  ``trainer.strategy=fsdp aggregator=dual``.

Bytes communicated are *counted*, not derived: in each rank's process the collectives of
``torch.distributed`` that FSDP2 and the trainer call (``all_gather_single``,
``reduce_scatter_single``, ``all_gather_into_tensor``, ``reduce_scatter_tensor``, ``all_reduce``,
``broadcast``, ``all_gather``, ``barrier``) are wrapped and add up their payload per step: the
gathered (output) tensor of an all-gather, the input of a reduce-scatter, the tensor of an
all-reduce or broadcast. A ring implementation puts (R−1)/R of an all-gather's or a
reduce-scatter's payload and 2(R−1)/R of an all-reduce's on each rank's link; both are printed.

    python experiments/bench_fsdp.py --rounds 6 --out outputs/bench/bench_fsdp.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parent.parent
WORLD = 2
VARIANTS = ("fsdp_weighted_sum_1bw", "fsdp_weighted_sum", "fsdp_dual")
COLLECTIVES = ("all_gather_single", "reduce_scatter_single", "all_gather_into_tensor",
               "reduce_scatter_tensor", "all_reduce", "broadcast", "all_gather", "barrier")
WEIGHTS = (1.0, 1.0, 1.0)  # the fixed weights of both weighted sums (conf/aggregator/weighted_sum)


class CollectiveCounter:
    """Wraps ``torch.distributed``'s collectives in this process; counts calls and payload bytes
    by kind (see the module docstring for what a payload is)."""

    def __init__(self) -> None:
        self.bytes: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)
        for name in COLLECTIVES:
            if hasattr(dist, name):
                setattr(dist, name, self._wrap(name, getattr(dist, name)))

    def reset(self) -> None:
        self.bytes.clear()
        self.calls.clear()

    @staticmethod
    def _payload(name: str, args, kwargs) -> int:
        def size(t) -> int:
            if isinstance(t, torch.Tensor):
                return t.numel() * t.element_size()
            if isinstance(t, (list, tuple)):
                return sum(size(x) for x in t)
            return 0

        if name in ("all_gather_single", "all_gather_into_tensor", "all_gather"):
            return size(kwargs.get("output_tensor", kwargs.get("tensor_list", args[0] if args else None)))
        if name in ("reduce_scatter_single", "reduce_scatter_tensor"):
            return size(kwargs.get("input", args[1] if len(args) > 1 else None))
        if name in ("all_reduce", "broadcast"):
            return size(kwargs.get("tensor", args[0] if args else None))
        return 0

    def _wrap(self, name: str, fn):
        @functools.wraps(fn)
        def counted(*args, **kwargs):
            self.calls[name] += 1
            self.bytes[name] += self._payload(name, args, kwargs)
            return fn(*args, **kwargs)

        return counted

    def ring_bytes(self) -> float:
        """Bytes on each rank's link under ring algorithms."""
        share = (WORLD - 1) / WORLD
        total = 0.0
        for name, b in self.bytes.items():
            total += (2 * share if name == "all_reduce" else share) * b
        return total


class FixedBatch:
    """Always the same batch: every step does the same work."""

    def __init__(self, stream) -> None:
        self.batch = stream.next_batch()
        self.state = stream.state
        self.examples, self.batch_size, self.seed = stream.examples, stream.batch_size, stream.seed
        self.num_shards, self.rank = stream.num_shards, stream.rank

    def next_batch(self):
        return self.batch


def examples(n: int):
    from unlearn.data.types import Example

    forget = [Example(f"How do I make poison number {i}? Explain every step in detail.",
                      f"Mix chemical {i} with bleach {i}, heat it and keep stirring for {i} minutes.",
                      True) for i in range(n)]
    normal = [Example(f"What is the capital of country {i}, and what is it known for?",
                      f"The capital is city {i}; it is known for its river and its {i} bridges.")
              for i in range(n)]
    return forget, normal


def build(rank: int, batch: int, length: int, size: dict, lr: float):
    from unlearn.aggregators import DualSpace, WeightedSum
    from unlearn.data.stream import BatchStream
    from unlearn.losses import UCE
    from unlearn.models.tiny import build_tiny_random
    from unlearn.training import sharding
    from unlearn.training.objectives import mollm_objectives
    from unlearn.training.trainer import UnlearningTrainer
    from unlearn.tracking import NullTracker

    loaded = build_tiny_random(device="cpu", **size)
    model = loaded.model
    reference = sharding.sharded_reference(model)
    with torch.no_grad():  # away from the reference, so that g_KL ≠ 0
        noise = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=noise))
    sharded = sharding.shard_for_training(model)
    params = sharded.params
    objectives = sharding.ShardedObjectives(model, sharded.sharded_params, params,
                                            mollm_objectives(UCE()), reference)
    forget, normal = examples(2 * WORLD * batch)
    streams = {
        "forget": FixedBatch(BatchStream(forget, loaded.tokenizer, batch, length, "plain", 0,
                                         rank=rank, num_shards=WORLD)),
        "normal": FixedBatch(BatchStream(normal, loaded.tokenizer, batch, length, "plain", 1,
                                         rank=rank, num_shards=WORLD)),
    }
    optimizer = torch.optim.AdamW(params, lr=lr)
    trainer = UnlearningTrainer(
        model=model, params=params, objectives=objectives, aggregator=DualSpace(),
        optimizer=optimizer, streams=streams, tracker=NullTracker(), max_steps=10**9,
        progress_bar=False, sync=sharding.ShardedSync(),
    )
    aggregators = {"fsdp_weighted_sum": WeightedSum(list(WEIGHTS)), "fsdp_dual": DualSpace()}
    n_params = sum(p.numel() for p in sharded.sharded_params)
    return trainer, sharded, aggregators, n_params


def one_backward_step(trainer, sharded) -> None:
    """FSDP weighted sum, one backward pass: ``.grad`` shards of Σ c_i L_i, then AdamW."""
    from unlearn.training.objectives import weighted_backward
    from unlearn.training.sharding import local

    trainer.model.train()
    batches = {name: stream.next_batch() for name, stream in trainer.streams.items()}
    weighted_backward(trainer.objectives, batches, WEIGHTS)
    for p, leaf in zip(sharded.sharded_params, sharded.params, strict=True):
        leaf.grad = None if p.grad is None else local(p.grad)
        p.grad = None
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)


def worker(rank: int, init_file: str, args: dict, out_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD, timeout=timedelta(seconds=600))
    try:
        torch.manual_seed(0)
        counter = CollectiveCounter()
        trainer, sharded, aggregators, n_params = build(
            rank, args["batch"], args["length"], args["size"], args["lr"])
        times = {v: [] for v in VARIANTS}
        traffic: dict[str, dict] = {}
        for r in range(args["rounds"] + 1):  # round 0: warm-up
            k = r % len(VARIANTS)
            for variant in VARIANTS[k:] + VARIANTS[:k]:
                dist.barrier()
                counter.reset()
                t0 = time.perf_counter()
                if variant == "fsdp_weighted_sum_1bw":
                    one_backward_step(trainer, sharded)
                else:
                    trainer.aggregator = aggregators[variant]
                    record = trainer.train_step()
                    if record.get("skipped"):
                        raise RuntimeError(f"{variant}: step skipped ({record.get('skip_reason')})")
                elapsed = time.perf_counter() - t0
                # the slower rank sets the step time
                slowest = torch.tensor([elapsed], dtype=torch.float64)
                dist.all_reduce.__wrapped__(slowest, op=dist.ReduceOp.MAX)
                if r > 0:
                    times[variant].append(float(slowest))
                traffic[variant] = {"bytes": dict(counter.bytes), "calls": dict(counter.calls),
                                    "ring_bytes_per_rank": counter.ring_bytes()}
        if rank == 0:
            shard = sum(p.numel() for p in sharded.params)
            Path(out_file).write_text(json.dumps({"times": times, "traffic": traffic,
                                                  "trainable_params": n_params,
                                                  "shard_params_rank0": shard}))
    finally:
        dist.destroy_process_group()


def summarise(raw: dict, args: dict) -> dict:
    median = {v: statistics.median(raw["times"][v]) for v in VARIANTS}
    base = median["fsdp_weighted_sum_1bw"]
    traffic = {}
    for v in VARIANTS:
        t = raw["traffic"][v]
        traffic[v] = {"payload_bytes_per_step": sum(t["bytes"].values()),
                      "ring_bytes_per_rank_per_step": t["ring_bytes_per_rank"],
                      "by_collective": {k: {"calls": t["calls"].get(k, 0), "bytes": t["bytes"].get(k, 0)}
                                        for k in sorted(t["calls"])}}
    return {
        "world_size": WORLD, "backend": "gloo", "threads_per_rank": 1,
        "model": f"tiny random Llama {args['size']}",
        "trainable_params": raw["trainable_params"],
        "batch": (f"{args['batch']} forget + {args['batch']} normal rows x {args['length']} "
                  "tokens max per rank"),
        "rounds": args["rounds"],
        "median_step_s": median,
        "ratio_to_fsdp_weighted_sum_1bw": {v: median[v] / base for v in VARIANTS},
        "dual_over_3_gradient_weighted_sum": median["fsdp_dual"] / median["fsdp_weighted_sum"],
        "communication": traffic,
        "bytes_counted_by": "wrapped torch.distributed collectives in each rank's process (rank 0's counts)",
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--out", default=str(REPO / "outputs" / "bench" / "bench_fsdp.json"))
    ns = parser.parse_args(argv)
    args = {"rounds": ns.rounds, "batch": ns.batch, "length": ns.length, "lr": 1e-4,
            "size": {"num_layers": ns.layers, "hidden_size": ns.hidden, "intermediate_size": 2 * ns.hidden}}
    out = Path(ns.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = out.parent / ".bench_fsdp"
    scratch.mkdir(exist_ok=True)
    init, raw_file = scratch / "pg-init", scratch / "rank0.json"
    init.unlink(missing_ok=True)
    mp.spawn(worker, args=(str(init), args, str(raw_file)), nprocs=WORLD, join=True)
    res = summarise(json.loads(raw_file.read_text()), args)
    results = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": {"platform": platform.platform(), "torch": torch.__version__,
                           "cpus": os.cpu_count()},
               "fsdp": res}
    print(f"\n== FSDP, {WORLD} ranks over gloo, 1 thread each: {res['model']} "
          f"({res['trainable_params']:,} params; {res['batch']}; {res['rounds']} interleaved rounds)")
    print(f"{'variant':<24}{'median step s':>14}{'ratio':>8}{'payload MiB/step':>18}{'ring MiB/rank':>15}")
    for v in VARIANTS:
        c, ratio = res["communication"][v], res["ratio_to_fsdp_weighted_sum_1bw"][v]
        print(f"{v:<24}{res['median_step_s'][v]:>14.3f}{ratio:>8.2f}"
              f"{c['payload_bytes_per_step'] / 2**20:>18.2f}"
              f"{c['ring_bytes_per_rank_per_step'] / 2**20:>15.2f}")
    dual = res["ratio_to_fsdp_weighted_sum_1bw"]["fsdp_dual"]
    print(f"fsdp_dual / fsdp_weighted_sum (1 backward) = {dual:.2f} (goal ≤ 1.4); "
          f"/ 3-gradient weighted sum = {res['dual_over_3_gradient_weighted_sum']:.2f}")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
