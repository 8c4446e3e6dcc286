"""Data-parallel training without DDP: average each objective's gradient, then aggregate.

The per-objective gradients come from ``torch.autograd.grad``, so DDP's backward hooks never
fire. With R ranks, rank r holding the local gradients g_i^(r) of its shard of the data:

    ḡ_i = (1/R) Σ_r g_i^(r)               one all-reduce per optimizer step (after accumulation)
    K = Ḡ Ḡᵀ,  w = A(K),  d = Σ_i w_i ḡ_i   on every rank, from identical ḡ_i

Every aggregator but the weighted sum is nonlinear in G, so the mean of per-rank directions
(1/R) Σ_r A(G^(r)) is not A(Ḡ): only aggregating after the all-reduce makes R processes with
batch b equal one process with batch R·b. Since every rank then holds bitwise identical ḡ_i
(the collective returns the same sum everywhere), each computes the same w and the same update,
and the parameters stay in sync without a DDP wrapper.

Everything here is a no-op when ``torch.distributed`` is not initialised or has one rank.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

BUCKET_NUMEL = 1 << 24  # entries per flattened all-reduce buffer (64 MiB in fp32)
# Rank 0 alone evaluates and writes checkpoints while the others wait in a collective: allow that.
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def world_size() -> int:
    """Ranks in the default process group (1 when there is none)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def launched_world_size() -> int:
    """``WORLD_SIZE`` as set by ``accelerate launch`` / ``torchrun`` (1 for a plain process), or
    by :func:`slurm_environment` for a SLURM job with several tasks."""
    slurm_environment()
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def slurm_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """A SLURM task of a multi-task job (``srun``/submitit with ``tasks_per_node > 1``) that no
    launcher gave ``WORLD_SIZE``: set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``
    and ``MASTER_PORT`` from ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``, the first
    node of the job and the job id; returns what it set. One-node jobs rendezvous on 127.0.0.1."""
    env = os.environ if environ is None else environ
    ntasks = int(env.get("SLURM_NTASKS", "1") or 1)
    if "WORLD_SIZE" in env or ntasks <= 1 or "SLURM_PROCID" not in env:
        return {}
    master = "127.0.0.1"
    if int(env.get("SLURM_NNODES", "1") or 1) > 1:
        try:
            import submitit

            master = submitit.JobEnvironment().hostnames[0]
        except Exception as exc:  # noqa: BLE001 - a clear message instead of a hang
            raise RuntimeError("a multi-node SLURM job needs MASTER_ADDR set (or submitit to "
                               f"find the first node): {exc}") from exc
    values = {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": str(ntasks),
              "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
              "MASTER_ADDR": env.get("MASTER_ADDR", master),
              "MASTER_PORT": env.get("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0") or 0) % 20000))}
    env.update(values)
    return values


def _current() -> Ranks:
    return Ranks(rank(), world_size(), int(os.environ.get("LOCAL_RANK", rank())),
                 dist.get_backend() if world_size() > 1 else None)


@contextmanager
def process_group(timeout: timedelta = TIMEOUT) -> Iterator[Ranks]:
    """Join the launcher's process group (``env://``) when ``WORLD_SIZE > 1``.

    NCCL with rank r on ``cuda:LOCAL_RANK`` (made the current device) when CUDA is available,
    gloo on CPU otherwise. A group that already exists is used as is; one created here is
    destroyed on exit. A plain process gets ``Ranks()`` (rank 0 of 1) and nothing happens.
    """
    if not dist.is_available() or dist.is_initialized() or launched_world_size() <= 1:
        yield _current()
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", timeout=timeout, device_id=torch.device("cuda", local_rank))
    else:
        dist.init_process_group("gloo", timeout=timeout)
    backend = dist.get_backend()
    try:
        yield Ranks(dist.get_rank(), dist.get_world_size(), local_rank, backend)
    finally:
        dist.destroy_process_group()


def _wire_dtype(dtype: torch.dtype) -> torch.dtype:
    """bf16/fp16 gradients are summed in fp32 (a sum of R half-precision values loses bits)."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


def _buckets(tensors: Sequence[torch.Tensor], limit: int) -> Iterator[list[torch.Tensor]]:
    """Consecutive tensors of one device and wire dtype, ≤ ``limit`` entries per bucket (a larger
    tensor gets a bucket of its own). The same list on every rank gives the same buckets."""
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, _wire_dtype(t.dtype)), []).append(t)
    for group in groups.values():
        bucket: list[torch.Tensor] = []
        size = 0
        for t in group:
            if bucket and size + t.numel() > limit:
                yield bucket
                bucket, size = [], 0
            bucket.append(t)
            size += t.numel()
        if bucket:
            yield bucket


def _bucketed(tensors: Sequence[torch.Tensor], collective: Callable[[torch.Tensor], None],
              limit: int) -> None:
    """Apply ``collective`` (in place) to flattened buckets and copy the results back."""
    for bucket in _buckets(tensors, limit):
        dtype = _wire_dtype(bucket[0].dtype)
        if len(bucket) == 1 and bucket[0].dtype == dtype and bucket[0].is_contiguous():
            collective(bucket[0])
            continue
        flat = torch.cat([t.reshape(-1).to(dtype) for t in bucket])
        collective(flat)
        offset = 0
        for t in bucket:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any (one all-reduce of one number): a stop
    signal seen by one rank stops all of them at the same step boundary, so none is left waiting
    in a collective. ``flag`` itself with one rank."""
    if world_size() == 1:
        return bool(flag)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def all_reduce_mean_(tensors: Sequence[torch.Tensor], bucket_numel: int = BUCKET_NUMEL) -> None:
    """In place ``t ← (1/R) Σ_r t^(r)`` for every tensor (SUM, then divide: gloo has no AVG).

    Every rank must pass tensors of the same shapes and dtypes in the same order.
    """
    world = world_size()
    if world == 1:
        return

    def mean(flat: torch.Tensor) -> None:
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world)

    _bucketed(tensors, mean, bucket_numel)


def broadcast_(tensors: Sequence[torch.Tensor], src: int = 0,
               bucket_numel: int = BUCKET_NUMEL) -> None:
    """Copy rank ``src``'s values into ``tensors`` on every rank (start all ranks in sync)."""
    if world_size() == 1:
        return
    with torch.no_grad():
        _bucketed(tensors, lambda flat: dist.broadcast(flat, src=src), bucket_numel)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def on_main(fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0 only; its result, or the exception it raised, reaches every rank."""
    if world_size() == 1:
        return fn()
    payload: list[Any] = [None]
    error: BaseException | None = None
    if rank() == 0:
        try:
            payload[0] = (fn(), None)
        except Exception as exc:  # noqa: BLE001 - re-raised on every rank below
            error = exc
            payload[0] = (None, exc)
    dist.broadcast_object_list(payload, src=0)
    value, remote = payload[0]
    if error is not None:
        raise error
    if remote is not None:
        raise remote
    return value


class GradientSync:
    """The trainer's per-step collective: agree on failures, then average losses and gradients.

    One small all-reduce carries the m losses and a failure flag per rank; if any rank failed
    (a non-finite loss raised before its backward pass), every rank skips the step together,
    so no rank is left waiting in the gradient all-reduce. Otherwise the losses and every
    tensor are replaced by their mean over the ranks.
    """

    def __init__(self, device: torch.device | None = None,
                 bucket_numel: int = BUCKET_NUMEL) -> None:
        if device is None:  # NCCL reduces tensors on this rank's GPU, gloo on the CPU
            nccl = dist.is_initialized() and dist.get_backend() == "nccl"
            device = torch.device(f"cuda:{torch.cuda.current_device()}" if nccl else "cpu")
        self.device = device
        self.bucket_numel = bucket_numel

    def __call__(self, losses: dict[str, float], tensors: Sequence[torch.Tensor] | None,
                 failure: str | None) -> str | None:
        """Mean of ``losses`` (in place) and ``tensors``; returns the skip reason, the same on
        every rank, or None. ``tensors`` may be None on a rank that failed."""
        world, me = world_size(), rank()
        if world == 1:
            return failure
        names = list(losses)
        header = torch.zeros(len(names) + world, dtype=torch.float64, device=self.device)
        if failure is None:
            header[: len(names)] = torch.tensor([losses[n] for n in names], dtype=torch.float64)
        else:
            header[len(names) + me] = 1.0
        dist.all_reduce(header, op=dist.ReduceOp.SUM)
        flags = header[len(names):].tolist()
        if any(flags):
            failed = [r for r, f in enumerate(flags) if f]
            return failure if failure is not None else (
                f"a non-finite loss on rank{'s' if len(failed) > 1 else ''} "
                f"{', '.join(map(str, failed))}; every rank skips the step")
        for name, value in zip(names, (header[: len(names)] / world).tolist()):
            losses[name] = value
        all_reduce_mean_(list(tensors or []), self.bucket_numel)
        return None

    # After __call__ every rank holds the whole mean gradients: products and norms are already
    # global. The sharded path (unlearn.training.sharding.ShardedSync) sums shard-local ones.
    sharded = False

    def reduce_products(self, *mats: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        """Gramian blocks summed over the ranks' shards; the identity here (whole gradients)."""
        return mats

    def reduce_sq_norm(self, value: torch.Tensor) -> torch.Tensor:
        """A squared norm summed over the ranks' shards; the identity here."""
        return value


def summary_fields(ranks: Ranks) -> Mapping[str, Any]:
    """What ``summary.json`` records about a data-parallel run (empty for one process)."""
    if not ranks.distributed:
        return {}
    return {"world_size": ranks.world_size, "backend": ranks.backend}


__all__ = [
    "BUCKET_NUMEL", "GradientSync", "Ranks", "TIMEOUT", "all_reduce_mean_", "any_rank",
    "barrier", "broadcast_", "launched_world_size", "on_main", "process_group", "rank",
    "slurm_environment", "summary_fields", "world_size",
]
