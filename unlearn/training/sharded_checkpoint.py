"""Checkpoints of a sharded run (``trainer.strategy=fsdp``) with ``torch.distributed.checkpoint``.

``<run dir>/checkpoints/step-N/`` as in :mod:`unlearn.checkpoint`, with the tensors in DCP form::

    dcp/                 every rank's shards of the trainable parameters and of the optimizer
                         state (each state tensor as a DTensor shaped like its parameter), written
                         by all ranks together, plus DCP's .metadata
    optimizer_groups.pt  the optimizer's param_groups (lr, betas, …)
    scheduler.pt, rng.pt, state.json, metrics.jsonl, manifest.json   (rank 0, as unsharded)

``state.json`` records ``world_size``. A resume must use the same number of ranks: the data
shards, the per-rank streams and the checkpointed shard layout all depend on it, so another
world size is refused with the number to launch. Every rank writes into the same folder: a
multi-node run needs a shared file system. Rank 0 checks every file's sha256 (the manifest) and
renames the finished folder into place, as for unsharded checkpoints.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from unlearn.checkpoint import (
    FORMAT_VERSION,
    MANIFEST,
    Checkpoint,
    CheckpointError,
    CheckpointManager,
    LoadedCheckpoint,
    capture_rng_state,
    load_pt,
    config_differences,
    sha256_file,
    verified_manifest,
)
from unlearn.training import distributed

MODEL, OPTIM, SEP = "model", "optim", "::"
REQUIRED = ("dcp/.metadata", "optimizer_groups.pt", "rng.pt", "state.json")


def _dtensor_like(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(value, param.device_mesh, param.placements, run_check=False,
                              shape=param.shape, stride=param.stride())


class ShardedCheckpoints(CheckpointManager):
    """A :class:`CheckpointManager` whose :meth:`save` and :meth:`load` are collectives.

    ``names``, ``sharded_params`` and ``leaves``: the trainable parameters' names, their DTensors
    and the local-shard leaves the optimizer steps on (:class:`~unlearn.training.sharding.ShardedModel`).
    Listing, verifying and pruning work as for unsharded checkpoints (run on rank 0).
    """

    def __init__(self, run_dir: Path, keep: int = 2, names: Sequence[str] = (),
                 sharded_params: Sequence[torch.Tensor] = (), leaves: Sequence[torch.Tensor] = ()) -> None:
        super().__init__(run_dir, keep)
        self.names = list(names)
        self.sharded_params = list(sharded_params)
        self.leaves = list(leaves)

    # ---- the optimizer's state as DTensors, and back

    def _index_names(self, optimizer: torch.optim.Optimizer) -> list[str]:
        by_leaf = {id(leaf): name for name, leaf in zip(self.names, self.leaves, strict=True)}
        order = [p for group in optimizer.param_groups for p in group["params"]]
        return [by_leaf[id(p)] for p in order]

    def _optimizer_entries(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        params = dict(zip(self.names, self.sharded_params, strict=True))
        leaves = dict(zip(self.names, self.leaves, strict=True))
        names = self._index_names(optimizer)
        out: dict[str, Any] = {}
        for index, state in optimizer.state_dict()["state"].items():
            name = names[index]
            for key, value in state.items():
                full = f"{OPTIM}{SEP}{name}{SEP}{key}"
                if torch.is_tensor(value) and value.dim() > 0 and value.shape == leaves[name].shape:
                    out[full] = _dtensor_like(value, params[name])
                else:  # AdamW's step: a scalar, the same on every rank
                    out[full] = value
        return out

    # ---- writing

    def save(self, step: int, model_state: Mapping[str, torch.Tensor], optimizer: torch.optim.Optimizer,
             scheduler: Any | None, state: Mapping[str, Any], metrics_path: Path | None = None) -> Path:
        """Every rank calls it. Write ``step-<step>`` (module docstring); prune; return its path."""
        import torch.distributed.checkpoint as dcp

        name = f"step-{step:06d}"
        tmp, target = self.root / f".tmp-{name}", self.root / name
        main = distributed.rank() == 0
        if main:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            (tmp / "dcp").mkdir(parents=True)
        distributed.barrier()
        entries = {f"{MODEL}{SEP}{k}": v for k, v in model_state.items()}
        entries.update(self._optimizer_entries(optimizer))
        dcp.save(entries, checkpoint_id=str(tmp / "dcp"))
        if main:
            groups = optimizer.state_dict()["param_groups"]
            torch.save(groups, tmp / "optimizer_groups.pt")
            if scheduler is not None:
                torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            torch.save(capture_rng_state(), tmp / "rng.pt")
            full_state = {**dict(state), "world_size": distributed.world_size()}
            (tmp / "state.json").write_text(json.dumps(full_state, indent=1) + "\n", encoding="utf-8")
            if metrics_path is not None and Path(metrics_path).is_file():
                shutil.copyfile(metrics_path, tmp / "metrics.jsonl")
            files = {str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
                     for p in sorted(tmp.rglob("*")) if p.is_file()}
            manifest = {"format": FORMAT_VERSION, "step": step, "created": time.time(),
                        "sharded": True, "files": files}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
            self.prune()
        distributed.barrier()
        return target

    # ---- reading

    @staticmethod
    def verify(path: Path) -> Checkpoint:
        """The manifest lists every file with its size and sha256, and the DCP files are there."""
        return verified_manifest(path, REQUIRED, lambda manifest: None if manifest.get("sharded") else
                                 "not a sharded checkpoint (written by trainer.strategy=single or ddp); "
                                 "resume it with that strategy")

    def load_into(self, checkpoint: Checkpoint, fingerprint: Mapping[str, Any],
                  optimizer: torch.optim.Optimizer, scheduler: Any | None) -> LoadedCheckpoint:
        """Every rank calls it: checks the world size, config and data, then loads the shards in
        place (the optimizer's leaves alias them), the optimizer state and the scheduler."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        path = checkpoint.path
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        check_world_size(state, distributed.world_size(), path)
        diffs = config_differences(state.get("config", {}), fingerprint["config"])
        if diffs:
            raise CheckpointError(f"cannot resume from {path}: the config differs from the "
                                  "interrupted run's:\n  " + "\n  ".join(diffs))
        for name, now in fingerprint["data"].items():
            if state.get("data", {}).get(name) != now:
                raise CheckpointError(f"cannot resume from {path}: the {name} training data differ "
                                      "from the interrupted run's; point data_dir at the same data")
        params = dict(zip(self.names, self.sharded_params, strict=True))
        leaves = dict(zip(self.names, self.leaves, strict=True))
        metadata = dcp.FileSystemReader(str(path / "dcp")).read_metadata().state_dict_metadata
        entries: dict[str, Any] = {f"{MODEL}{SEP}{k}": v for k, v in params.items()}
        saved_models = {k for k in metadata if k.startswith(MODEL + SEP)}
        if saved_models != set(entries):
            raise CheckpointError(f"{path}: the checkpoint's trainable parameters do not match this "
                                  "model; resume with the same model and trainer.lora settings")
        for key, meta in metadata.items():
            if not key.startswith(OPTIM + SEP):
                continue
            name = key.split(SEP)[1]
            if isinstance(meta, TensorStorageMetadata) and tuple(meta.size) == tuple(params[name].shape):
                entries[key] = _dtensor_like(torch.zeros_like(leaves[name], dtype=meta.properties.dtype),
                                             params[name])
            elif isinstance(meta, TensorStorageMetadata):
                entries[key] = torch.zeros(tuple(meta.size), dtype=meta.properties.dtype)
            else:
                entries[key] = None  # a pickled value, filled in by dcp.load
        with torch.no_grad():
            dcp.load(entries, checkpoint_id=str(path / "dcp"))
        index = {name: i for i, name in enumerate(self._index_names(optimizer))}
        opt_state: dict[int, dict[str, Any]] = {}
        for key, value in entries.items():
            if key.startswith(OPTIM + SEP):
                _, name, field = key.split(SEP)
                opt_state.setdefault(index[name], {})[field] = (
                    value.to_local() if hasattr(value, "to_local") else value)
        try:
            optimizer.load_state_dict({"state": opt_state,
                                       "param_groups": load_pt(path / "optimizer_groups.pt")})
            if scheduler is not None and (path / "scheduler.pt").is_file():
                scheduler.load_state_dict(load_pt(path / "scheduler.pt"))
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: optimizer/scheduler state does not fit ({exc}); resume "
                                  "with the same trainer.optimizer and trainer.lr_scheduler") from exc
        return LoadedCheckpoint(checkpoint, {}, {}, None, load_pt(path / "rng.pt"), state)


def check_world_size(state: Mapping[str, Any], world: int, where: Path) -> None:
    """Refuse a resume with another number of ranks than the checkpoint was written by."""
    saved = int(state.get("world_size", 1))
    if saved != world:
        raise CheckpointError(
            f"cannot resume from {where}: it was written by {saved} ranks (trainer.strategy=fsdp) "
            f"and this run has {world}. Resume with the same number of processes: torchrun "
            f"--nproc_per_node {saved} -m unlearn.run <same overrides> resume=true "
            "hydra.run.dir=<run dir>"
        )


__all__ = ["ShardedCheckpoints", "check_world_size"]
