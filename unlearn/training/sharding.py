"""Fully sharded multi-objective training (``trainer.strategy=fsdp``, FSDP2 ``fully_shard``).

With R ranks, every parameter tensor θ_p is cut along its first dimension into R shards; rank r
holds θ_p^(r) and never the whole tensor outside a layer's forward or backward pass. One step:

1. the forward passes all-gather each decoder layer's parameters just in time;
2. m backward passes, one per objective (the graph retained between them); FSDP's reduce-scatter
   leaves rank r the shard g_i^(r) of the mean gradient ḡ_i = (1/R) Σ_r' ∇L_i^(r') — a DTensor
   shard, taken out of ``.grad`` after every pass;
3. the Gramian from shard-local products, summed over the ranks in float64::

       K_ij = Σ_r ⟨g_i^(r), g_j^(r)⟩          (ONE all-reduce of m×m numbers)

   every rank holds the same K, so the unchanged aggregators give the same w everywhere;
4. d^(r) = Σ_i w_i g_i^(r), shard by shard, and the optimizer steps on the shards (the trained
   parameters are local tensors aliasing the DTensor shards: AdamW, SGD and MetricAdam act
   coordinate-wise, so stepping each shard equals stepping the whole tensor);
5. ``descent_update/*`` = g_i·u and ‖d‖, ‖u‖ from the same shard-local products, all-reduced.

A non-finite loss on one rank must not leave the others waiting in a reduce-scatter: after each
data source's forward pass, the ranks agree (one all-reduce of a flag) before any backward pass,
and all skip the step together.

Mixed precision (``trainer.fsdp.mixed_precision=bf16``): bf16 compute and all-gathers, fp32
gradient reduce-scatter, and the sharded parameters the optimizer steps on stay in the model's
dtype — load the model in float32 (``model.dtype=float32``) for fp32 master weights.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from unlearn.training.distributed import GradientSync, rank, world_size
from unlearn.training.objectives import Batches, ObjectiveValues, Objectives, _batch

STRATEGIES = ("single", "ddp", "fsdp")
MIXED_PRECISION = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks to shard one by one: the classes HF names in ``_no_split_modules``
    (``LlamaDecoderLayer``), else every module whose class name ends in ``DecoderLayer``."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        layers = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
    return layers


def mixed_precision_policy(name: str | None) -> Any:
    """FSDP2 policy: compute in ``name`` (bf16/fp16), reduce gradients in fp32; None for none."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    key = str(name or "none").lower()
    if key not in MIXED_PRECISION:
        raise ValueError(f"trainer.fsdp.mixed_precision={name!r}: expected one of {sorted(MIXED_PRECISION)}")
    dtype = MIXED_PRECISION[key]
    if dtype is None:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)


def shard_module(model: torch.nn.Module, mixed_precision: str | None = None,
                 reshard_after_forward: bool = True) -> torch.nn.Module:
    """``fully_shard`` every decoder layer, then the root (embeddings, norm, head); in place."""
    from torch.distributed.fsdp import fully_shard

    policy = mixed_precision_policy(mixed_precision)
    for layer in decoder_layers(model):
        fully_shard(layer, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    return model


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (a view, no copy); a plain tensor as is."""
    return t.to_local() if hasattr(t, "to_local") else t


def local_leaves(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Leaf tensors that share storage with each parameter's local shard: an optimizer over them
    updates the sharded parameters in place (what FSDP all-gathers next)."""
    return [local(p).detach().requires_grad_(True) for p in params]


def sharded_reference(model: torch.nn.Module, mixed_precision: str | None = None,
                      ) -> Callable[[], AbstractContextManager]:
    """A frozen copy of the unsharded ``model``, sharded the same way (call before sharding
    ``model``); every rank runs its forward passes together (all-gathers)."""
    ref = shard_module(copy.deepcopy(model).eval().requires_grad_(False), mixed_precision)

    @contextmanager
    def use() -> Iterator[Callable[..., torch.Tensor]]:
        yield lambda **batch: ref(**batch).logits

    return use


@dataclass
class ShardedModel:
    model: torch.nn.Module
    sharded_params: list[torch.Tensor]  # DTensor parameters (trainable)
    params: list[torch.Tensor]          # their local shards, as leaves for the optimizer
    names: list[str] = field(default_factory=list)  # the parameters' names (checkpoints)
    reference: Callable[[], AbstractContextManager] | None = None


def shard_for_training(model: torch.nn.Module, mixed_precision: str | None = None,
                       reshard_after_forward: bool = True) -> ShardedModel:
    shard_module(model, mixed_precision, reshard_after_forward)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    sharded = [p for _, p in named]
    return ShardedModel(model, sharded, local_leaves(sharded), [n for n, _ in named])


def _agree_finite(losses: dict[str, torch.Tensor]) -> None:
    """Raise FloatingPointError on every rank when a loss is non-finite on any rank."""
    bad = [name for name, v in losses.items() if not torch.isfinite(v)]
    flags = torch.zeros(world_size(), dtype=torch.float64)
    flags[rank()] = float(bool(bad))
    if world_size() > 1:  # NCCL reduces tensors on this rank's GPU
        flags = flags.to(GradientSync().device)
        dist.all_reduce(flags, op=dist.ReduceOp.SUM)
    failed = [r for r, f in enumerate(flags.tolist()) if f]
    if failed:
        mine = f"loss/{bad[0]} is {losses[bad[0]].item()}; " if bad else ""
        ranks = ", ".join(map(str, failed))
        raise FloatingPointError(f"{mine}a non-finite loss on rank{'s' if len(failed) > 1 else ''} "
                                 f"{ranks}; every rank skips the step")


class ShardedObjectives(Objectives):
    """:class:`Objectives` over an FSDP-sharded model: ``params`` are the local shards (the
    optimizer's leaves), ``sharded_params`` the DTensor parameters autograd writes ``.grad`` to.
    Each objective's gradient is one ``backward()``; its local shard is taken out of ``.grad``."""

    def __init__(self, model, sharded_params: Sequence[torch.Tensor], params, objectives,
                 reference, compute_dtype: str = "float32") -> None:
        super().__init__(model, params, objectives, reference, compute_dtype)
        self.sharded_params = list(sharded_params)

    def _grad(self, loss: torch.Tensor, retain_graph: bool) -> list[torch.Tensor]:
        for p in self.sharded_params:
            p.grad = None
        loss.backward(retain_graph=retain_graph)
        out = []
        for p, leaf in zip(self.sharded_params, self.params, strict=True):
            out.append(torch.zeros_like(leaf) if p.grad is None else local(p.grad))
            p.grad = None
        return out

    def losses_and_grads(self, batches: Batches) -> ObjectiveValues:
        grads: list[list[torch.Tensor] | None] = [None] * len(self.objectives)
        losses: dict[str, float] = {}
        for data in self.sources:
            values, _ = self.source_losses(data, _batch(batches, data))
            _agree_finite(values)  # before any reduce-scatter: no rank is left waiting
            members = self._of(data)
            for k, (i, objective) in enumerate(members):
                grads[i] = self._grad(values[objective.name], retain_graph=k < len(members) - 1)
                losses[objective.name] = values[objective.name].item()
        return ObjectiveValues(losses={n: losses[n] for n in self.names}, grads=grads)


class ShardedSync(GradientSync):
    """The per-step collectives of the sharded path.

    ``__call__`` agrees on failures and averages the losses (one small all-reduce); the gradient
    shards are left alone — FSDP's reduce-scatter already averaged them. :meth:`reduce_products`
    sums the shard-local Gramian blocks over the ranks (one all-reduce of the stacked m×m
    matrices), and :meth:`reduce_sq_norm` a shard-local squared norm.
    """

    sharded = True

    def __call__(self, losses, tensors, failure):
        return super().__call__(losses, None, failure)

    def reduce_products(self, *mats: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        present = [m for m in mats if m is not None]
        if world_size() == 1 or not present:
            return mats
        stacked = torch.stack([m.to(torch.float64) for m in present]).to(self.device)
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        it = iter(stacked.cpu())
        return tuple(None if m is None else next(it) for m in mats)

    def reduce_sq_norm(self, value: torch.Tensor) -> torch.Tensor:
        if world_size() == 1:
            return value
        t = value.detach().to(torch.float64).reshape(1).to(self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t[0].cpu()


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The consolidated (unsharded) state dict, on the CPU of rank 0 (empty elsewhere); a
    collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


__all__ = [
    "MIXED_PRECISION", "STRATEGIES", "prepare_fsdp", "strategy_of", "ShardedModel", "ShardedObjectives", "ShardedSync",
    "decoder_layers", "full_state_dict", "local", "local_leaves", "mixed_precision_policy",
    "shard_for_training", "shard_module", "sharded_reference",
]


def strategy_of(trainer_cfg: Any) -> str:
    """``trainer.strategy`` (``single`` when absent)."""
    name = str(trainer_cfg.get("strategy", "single") or "single")
    if name not in STRATEGIES:
        raise ValueError(f"trainer.strategy={name!r}: expected one of {', '.join(STRATEGIES)}")
    return name


def prepare_fsdp(model: torch.nn.Module, trainer_cfg: Any, lora: bool) -> ShardedModel:
    """Shard the trained model and its reference (a sharded frozen copy; with LoRA the adapter-
    disabled model itself) as ``trainer.fsdp`` says; returns the model with ``.reference``."""
    from unlearn.training.reference import adapter_disabled_reference

    options = trainer_cfg.get("fsdp") or {}
    precision = options.get("mixed_precision", "none")
    reshard = bool(options.get("reshard_after_forward", True))
    reference = adapter_disabled_reference(model) if lora else sharded_reference(model, precision)
    out = shard_for_training(model, precision, reshard)
    out.reference = reference
    return out
