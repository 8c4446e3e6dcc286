"""Atomic, verifiable training checkpoints, and exact resume from the newest complete one.

Layout inside a run dir::

    checkpoints/step-000010/
        model.safetensors     trainable parameters only (the LoRA adapter, or every weight)
        optimizer.pt          optimizer state_dict   (tensors + plain containers)
        scheduler.pt          LR-scheduler state_dict
        rng.pt                Python, NumPy, torch (and CUDA) RNG states
        state.json            step counters, data-stream positions, first/last metrics records,
                              the config and data fingerprints
        metrics.jsonl         a copy of the run's metrics.jsonl up to this step
        manifest.json         size and sha256 of every file above; written last

A checkpoint is written into ``checkpoints/.tmp-step-…`` and renamed into place only once the
manifest is on disk, so a run killed mid-write leaves a ``.tmp-*`` folder that is ignored, never
a half checkpoint under a real name. On resume every candidate is verified against its manifest
(newest first); a corrupt, truncated or incomplete one is skipped with a warning in favour of
the previous one.

Nothing here unpickles arbitrary objects: weights are safetensors and every ``.pt`` file is read
with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unlearn import identity
from unlearn.errors import UnlearnError, disk_full

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_NAME = re.compile(r"^step-(\d+)$")

# LR schedules that do not read trainer.max_steps: only with these may a resumed run be extended
# (transformers' linear, cosine, … schedules are built from max_steps, so a longer resumed run
# would follow a schedule no uninterrupted run follows).
LENGTH_FREE_SCHEDULES = frozenset({"constant", "constant_with_warmup"})


class CheckpointError(UnlearnError):
    """A checkpoint is missing, corrupt, or does not match the run being resumed."""


@dataclass
class Checkpoint:
    """A verified checkpoint folder."""

    path: Path
    step: int
    manifest: dict[str, Any]


@dataclass
class LoadedCheckpoint:
    """Everything read back from a checkpoint, ready to apply."""

    checkpoint: Checkpoint
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    rng: dict[str, Any]
    state: dict[str, Any]


# --------------------------------------------------------------------------- files


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def load_pt(path: Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers (never arbitrary pickles)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: refused or unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:300]}). "
            "Checkpoint files are loaded with torch.load(weights_only=True) and may hold only "
            "tensors and plain containers; delete this checkpoint folder to resume from an older one"
        ) from exc


# --------------------------------------------------------------------------- RNG


def capture_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = (kind, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss), float(cached))
    except ImportError:  # pragma: no cover
        pass
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- fingerprints


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters by name (tied weights appear once)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def examples_fingerprint(examples: Iterable[Any]) -> str:
    """sha256 over the (prompt, response) pairs in order: detects changed data on resume."""
    digest = hashlib.sha256()
    for e in examples:
        for text in (e.prompt, e.response):
            digest.update(text.encode("utf-8"))
            digest.update(b"\0")
    return digest.hexdigest()


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``key: checkpoint=…, now=…`` for each training setting that changes a result and differs
    (:func:`unlearn.identity.config_differences` over :func:`~unlearn.identity.training_groups`).
    ``trainer.max_steps`` may grow or shrink when the LR schedule does not depend on it."""
    groups = set(identity.training_groups(saved)) | set(identity.training_groups(current))
    a, b = identity.result_settings(saved, groups), identity.result_settings(current, groups)
    keys = identity.config_differences(saved, current, groups)
    schedule = b.get("trainer.lr_scheduler")
    if schedule in LENGTH_FREE_SCHEDULES and a.get("trainer.lr_scheduler") == schedule:
        keys = [k for k in keys if k != "trainer.max_steps"]
    return [f"{k}: checkpoint={a.get(k, '<absent>')!r}, now={b.get(k, '<absent>')!r}" for k in keys]


# --------------------------------------------------------------------------- manager


def verified_manifest(path: Path, required: Sequence[str],
                      check: Callable[[dict[str, Any]], str | None] = lambda manifest: None) -> Checkpoint:
    """The checkpoint at ``path`` once its manifest reads, ``check(manifest)`` says nothing is wrong
    (else its message), it lists every ``required`` file, and every listed file has the manifest's
    size and sha256; else :class:`CheckpointError` naming what failed."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{path}: no {MANIFEST} (the write did not finish)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files, step = manifest["files"], int(manifest["step"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{manifest_path}: unreadable manifest ({exc})") from exc
    problem = check(manifest)
    if problem:
        raise CheckpointError(f"{manifest_path}: {problem}")
    for name in required:
        if name not in files:
            raise CheckpointError(f"{manifest_path}: does not list {name}")
    for name, meta in files.items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{f}: missing")
        if f.stat().st_size != meta["bytes"]:
            raise CheckpointError(f"{f}: {f.stat().st_size} bytes, manifest says {meta['bytes']} (truncated?)")
        if sha256_file(f) != meta["sha256"]:
            raise CheckpointError(f"{f}: sha256 does not match the manifest (corrupt)")
    return Checkpoint(path, step, manifest)


class CheckpointManager:
    """Writes, lists, verifies and loads the checkpoints of one run dir."""

    def __init__(self, run_dir: Path, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"trainer.keep_checkpoints must be ≥ 1, got {keep}")
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / CHECKPOINT_DIR
        self.keep = keep

    # ---- writing

    def save(
        self,
        step: int,
        model_state: Mapping[str, torch.Tensor],
        optimizer: torch.optim.Optimizer,
        scheduler: Any | None,
        state: Mapping[str, Any],
        metrics_path: Path | None = None,
    ) -> Path:
        """Write ``step-<step>`` atomically; prune to the newest ``keep``; return its path."""
        from safetensors.torch import save_file

        self.root.mkdir(parents=True, exist_ok=True)
        name = f"step-{step:06d}"
        tmp = self.root / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()},
                      str(tmp / "model.safetensors"), metadata={"step": str(step)})
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            if scheduler is not None:
                torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            torch.save(capture_rng_state(), tmp / "rng.pt")
            (tmp / "state.json").write_text(json.dumps(dict(state), indent=1) + "\n", encoding="utf-8")
            if metrics_path is not None and metrics_path.is_file():
                shutil.copyfile(metrics_path, tmp / "metrics.jsonl")
            files = {}
            for path in sorted(tmp.iterdir()):
                _fsync_file(path)
                files[path.name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
            manifest = {"format": FORMAT_VERSION, "step": step, "created": time.time(), "files": files}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
            _fsync_file(tmp / MANIFEST)
            _fsync_dir(tmp)
        except Exception as exc:  # e.g. a full disk: the older checkpoints stay as they were
            shutil.rmtree(tmp, ignore_errors=True)
            full = disk_full(exc, self.root, f"checkpoint {name}")
            if full is not None:
                raise full from exc
            raise

        target = self.root / name
        old = None
        if target.exists():  # e.g. a corrupt one skipped on resume: replace it
            old = self.root / f".old-{name}-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_dir(self.root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.prune()
        log.info("checkpoint written: %s", target)
        return target

    def prune(self) -> None:
        """Delete all but the newest ``keep`` checkpoints."""
        for step, path in self.candidates()[self.keep:]:
            shutil.rmtree(path, ignore_errors=True)

    def remove_stale_temp(self) -> list[Path]:
        """Delete ``.tmp-*``/``.old-*`` folders left by a run killed while writing."""
        stale = [p for p in self.root.glob(".tmp-*")] + [p for p in self.root.glob(".old-*")]
        for p in stale:
            shutil.rmtree(p, ignore_errors=True)
        return stale

    # ---- reading

    def candidates(self) -> list[tuple[int, Path]]:
        """``(step, folder)`` of every ``step-N`` folder, newest first (unverified)."""
        if not self.root.is_dir():
            return []
        found = []
        for p in self.root.iterdir():
            m = _NAME.match(p.name)
            if m and p.is_dir():
                found.append((int(m.group(1)), p))
        return sorted(found, reverse=True)

    @staticmethod
    def verify(path: Path) -> Checkpoint:
        """Check the manifest and every file's size and sha256; raise CheckpointError if not."""
        return verified_manifest(path, ("model.safetensors", "optimizer.pt", "rng.pt", "state.json"),
                                 lambda manifest: None if manifest.get("format") == FORMAT_VERSION else
                                 f"format {manifest.get('format')!r}, expected {FORMAT_VERSION}")

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint that verifies; corrupt ones are skipped with a warning."""
        for _step, path in self.candidates():
            try:
                return self.verify(path)
            except CheckpointError as exc:
                msg = f"skipping checkpoint {path.name}: {exc}"
                log.warning(msg)
                warnings.warn(msg, stacklevel=2)
        return None

    @staticmethod
    def load(checkpoint: Checkpoint) -> LoadedCheckpoint:
        from safetensors.torch import load_file

        path = checkpoint.path
        try:
            model = load_file(str(path / "model.safetensors"), device="cpu")
        except Exception as exc:
            raise CheckpointError(f"{path / 'model.safetensors'}: unreadable ({exc})") from exc
        scheduler = load_pt(path / "scheduler.pt") if (path / "scheduler.pt").is_file() else None
        return LoadedCheckpoint(
            checkpoint=checkpoint,
            model=model,
            optimizer=load_pt(path / "optimizer.pt"),
            scheduler=scheduler,
            rng=load_pt(path / "rng.pt"),
            state=json.loads((path / "state.json").read_text(encoding="utf-8")),
        )


# --------------------------------------------------------------------------- applying


def load_trainable_state(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor], where: Path) -> None:
    """Copy checkpointed trainable parameters into ``model``; names must match exactly."""
    params = trainable_state(model)
    missing, extra = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or extra:
        raise CheckpointError(
            f"{where}: the checkpoint's trainable parameters do not match this model "
            f"(missing {missing[:3]}{'…' if len(missing) > 3 else ''}, unexpected "
            f"{extra[:3]}{'…' if len(extra) > 3 else ''}). Resume with the same model and "
            "trainer.lora settings as the interrupted run"
        )
    with torch.no_grad():
        for name, p in params.items():
            t = tensors[name]
            if t.shape != p.shape:
                raise CheckpointError(f"{where}: {name} has shape {tuple(t.shape)}, model has {tuple(p.shape)}")
            p.copy_(t.to(device=p.device, dtype=p.dtype))


def restore_metrics(checkpoint: Checkpoint, metrics_path: Path) -> int:
    """Replace ``metrics.jsonl`` by the checkpoint's copy (drops lines after its step).

    Returns the number of lines kept.
    """
    saved = checkpoint.path / "metrics.jsonl"
    tmp = metrics_path.with_name(f".{metrics_path.name}.tmp{os.getpid()}")
    if saved.is_file():
        shutil.copyfile(saved, tmp)
    else:
        tmp.write_text("", encoding="utf-8")
    os.replace(tmp, metrics_path)
    with open(metrics_path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def previous_run_markers(run_dir: Path, strict: bool = False) -> list[str]:
    """What shows that ``run_dir`` already holds (part of) a run.

    ``strict=False`` (evidence that a run started): a ``checkpoints/`` folder, a
    ``metrics.jsonl`` (even empty) or a ``summary.json``. ``strict=True`` (results a new run
    would clobber or mix with): checkpoints or a non-empty ``metrics.jsonl``.
    """
    run_dir = Path(run_dir)
    markers = []
    ckpt = run_dir / CHECKPOINT_DIR
    if (ckpt.is_dir() and any(ckpt.iterdir())) or (not strict and ckpt.is_dir()):
        markers.append(CHECKPOINT_DIR + "/")
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file() and (not strict or metrics.stat().st_size > 0):
        markers.append("metrics.jsonl")
    if not strict and (run_dir / "summary.json").is_file():
        markers.append("summary.json")
    return markers


# --------------------------------------------------------------------------- resume


def select_resume_checkpoint(run_dir: Path, manager: CheckpointManager, resume: bool) -> Checkpoint | None:
    """Decide where a run starts: the newest complete checkpoint, or step 0.

    * ``resume=false`` in a folder that already holds a run: error (appending to its
      ``metrics.jsonl`` or overwriting its checkpoints would mix two runs).
    * ``resume=true`` in a folder with no earlier run: error (most likely a wrong path).
    * ``resume=true`` with checkpoints: the newest that verifies (corrupt ones are skipped);
      none valid means starting over, with a warning, from an emptied ``metrics.jsonl``.
    """
    run_dir = Path(run_dir)
    if not resume:
        markers = previous_run_markers(run_dir, strict=True)
        if markers:
            raise CheckpointError(
                f"{run_dir} already holds an earlier run ({', '.join(markers)}). Pass resume=true "
                "to continue it from its newest checkpoint, or choose an empty run dir "
                "(hydra.run.dir=...), or delete that folder"
            )
        return None
    if not previous_run_markers(run_dir):
        raise CheckpointError(
            f"resume=true but {run_dir} holds no earlier run (no {CHECKPOINT_DIR}/, metrics.jsonl or "
            "summary.json). Pass the interrupted run's folder: python -m unlearn.run <same overrides> "
            "resume=true hydra.run.dir=<that folder>"
        )
    if manager.root.is_dir():
        for stale in manager.remove_stale_temp():
            log.warning("removed an incomplete checkpoint write: %s", stale)
    found = manager.latest()
    if found is None:
        msg = (f"resume=true: {run_dir} holds no complete checkpoint; starting again from step 0 "
               "(metrics.jsonl is emptied)")
        log.warning(msg)
        warnings.warn(msg, stacklevel=2)
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    return found


def run_fingerprint(config: Mapping[str, Any], streams: Mapping[str, Any]) -> dict[str, Any]:
    """What a checkpoint records about its run, compared on resume."""
    return {
        "config": config,
        "data": {name: {"examples": len(s.examples), "sha256": examples_fingerprint(s.examples)}
                 for name, s in streams.items()},
    }


def apply_checkpoint(
    checkpoint: Checkpoint,
    fingerprint: Mapping[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
) -> LoadedCheckpoint:
    """Load ``checkpoint`` into the freshly built model, optimizer and scheduler.

    Call it after the frozen reference model was made from the original weights. The trainer
    state (counters, stream positions) and RNG states are applied by the caller, last.
    """
    loaded = CheckpointManager.load(checkpoint)
    saved = loaded.state
    diffs = config_differences(saved.get("config", {}), fingerprint["config"])
    if diffs:
        raise CheckpointError(
            f"cannot resume from {checkpoint.path}: the config differs from the interrupted run's:\n  "
            + "\n  ".join(diffs)
            + "\nRerun with the same overrides as that run (see its .hydra/overrides.yaml or the "
            "checkpoint's state.json) plus resume=true, or start a new run dir"
        )
    trainer = fingerprint["config"].get("trainer")
    max_steps = trainer.get("max_steps") if isinstance(trainer, Mapping) else None
    if isinstance(max_steps, int) and checkpoint.step > max_steps:
        raise CheckpointError(
            f"cannot resume from {checkpoint.path}: it is at step {checkpoint.step}, past "
            f"trainer.max_steps={max_steps}; pass trainer.max_steps ≥ {checkpoint.step} or start a new run dir"
        )
    for name, now in fingerprint["data"].items():
        before = saved.get("data", {}).get(name)
        if before != now:
            raise CheckpointError(
                f"cannot resume from {checkpoint.path}: the {name} training data differ from the "
                f"interrupted run's ({before} vs {now}); point data_dir at the same data"
            )
    load_trainable_state(model, loaded.model, checkpoint.path)
    try:
        optimizer.load_state_dict(loaded.optimizer)
        if scheduler is not None and loaded.scheduler is not None:
            scheduler.load_state_dict(loaded.scheduler)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(
            f"{checkpoint.path}: optimizer/scheduler state does not fit ({exc}); resume with the "
            "same trainer.optimizer and trainer.lr_scheduler as the interrupted run"
        ) from exc
    log.warning("resuming from %s (step %d)", checkpoint.path, checkpoint.step)
    return loaded


__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointManager",
    "LoadedCheckpoint",
    "apply_checkpoint",
    "capture_rng_state",
    "config_differences",
    "examples_fingerprint",
    "load_trainable_state",
    "previous_run_markers",
    "restore_metrics",
    "restore_rng_state",
    "run_fingerprint",
    "select_resume_checkpoint",
    "trainable_state",
]
