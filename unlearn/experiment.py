"""Build every component from a composed config and run one unlearning job in ``run_dir``.

Kept apart from the Hydra entry point (:mod:`unlearn.run`) so tests can call
:func:`run_experiment` with a config from the compose API.

Data parallel (``accelerate launch --num_processes R -m unlearn.run …``, or ``torchrun``; see
:mod:`unlearn.training.distributed`): every rank builds the same model on its own device, draws
its shard of each data stream, and trains with a :class:`GradientSync`. Rank 0 alone writes
(run dir, metrics, W&B, checkpoints, the model, ``summary.json``) and evaluates; the run dir is
rank 0's, and the other ranks read only its checkpoints when resuming.
"""

from __future__ import annotations

import logging
import random
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from unlearn.checkpoint import (
    CheckpointManager,
    apply_checkpoint,
    restore_metrics,
    restore_rng_state,
    run_fingerprint,
    select_resume_checkpoint,
)
from unlearn.config_check import ConfigError, resume_flag, validate_config
from unlearn.data.layout import check_run_data
from unlearn.data.pku_saferlhf import forget_examples
from unlearn.data.sources import source
from unlearn.data.stream import BatchStream
from unlearn.errors import DiskFullError, UnlearnError
from unlearn.evaluation.metrics.preference import PreferenceMargin
from unlearn.evaluation.stage import EvaluationStage, preference_pairs
from unlearn.identity import hydra_label_context, method_label, settings_fingerprint
from unlearn.memory import preflight
from unlearn.models.export import save_model
from unlearn.tracking import (
    NullTracker,
    Tracker,
    WandbSink,
    redact,
    redact_hydra_files,
    write_json_atomic,
)
from unlearn.training import distributed, sharding
from unlearn.training.distributed import GradientSync, Ranks
from unlearn.training.objectives import Objective, Objectives, mollm_objectives
from unlearn.training.preemption import PREEMPTED, Preempted, StopRequest, was_preempted, watch_signals
from unlearn.training.probe import LossProbe, PairProbe, ProbeSet
from unlearn.training.recompute import enable_gradient_checkpointing
from unlearn.training.reference import adapter_disabled_reference, frozen_copy_reference
from unlearn.training.resources import peak_memory_bytes
from unlearn.training.sharded_checkpoint import ShardedCheckpoints
from unlearn.training.trainer import UPDATE_CHUNK_BYTES, UnlearningTrainer

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass


def build(node: DictConfig) -> Any:
    """``instantiate`` that lets the suite's own errors (DataError, ModelLoadError…) through
    unwrapped, so the message names the file and the fix instead of Hydra's call site."""
    try:
        return instantiate(node)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, UnlearnError):
            raise exc.__cause__ from None
        raise


def apply_lora(model: torch.nn.Module, lora_cfg: DictConfig) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=list(lora_cfg.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


PROBE_PREFIXES = ("probe/", "heldout/")


def build_probes(objectives: Objectives, forget_split, normal_split, tokenizer, cfg: DictConfig) -> ProbeSet:
    """``probe/*`` on fixed training examples (unless ``trainer.probe_size=0``) and, unless
    ``trainer.heldout_probe_size=0``, ``heldout/*`` on fixed eval-split examples (unsafe answers to held-out prompts, held-out
    normal answers, and the held-out (safe, unsafe) pairs' margin where the data has pairs); all at
    the training batch size and max length."""
    t = cfg.trainer
    shape = dict(batch_size=t.forget_batch_size, max_length=cfg.dataset.max_length,
                 template=cfg.dataset.template)
    probes = []
    if int(t.get("probe_size", 16)):
        probes.append(LossProbe(objectives, forget_examples(forget_split.train), normal_split.train, tokenizer,
                                size=int(t.get("probe_size", 16)), **shape))
    heldout_size = int(t.get("heldout_probe_size", 0))
    if heldout_size:
        probes.append(LossProbe(objectives, forget_examples(forget_split.eval), normal_split.eval, tokenizer,
                                size=heldout_size, prefix="heldout", **shape))
        metric = PreferenceMargin()
        pairs = metric.select(preference_pairs(forget_split.eval))[:heldout_size]
        if pairs:  # labelled (safe, unsafe) pairs: the judge-free margin at every probe point
            def score(model, pairs=pairs):
                return metric.score(model, tokenizer, pairs, next(model.parameters()).device, **shape)[0]

            probes.append(PairProbe(objectives, score, prefix="heldout"))
    return ProbeSet(probes)


def build_objectives(cfg: DictConfig) -> list[Objective]:
    """The ``objectives`` group's entries, in order (``name: {loss, data}``); MOLLM's three with
    ``cfg.loss`` when the config has no ``objectives`` (configs composed before the group existed)."""
    if cfg.get("objectives") is None:
        return mollm_objectives(build(cfg.loss))
    out = []
    for name, entry in cfg.objectives.items():
        if not isinstance(entry, DictConfig) or "loss" not in entry or "data" not in entry:
            raise ConfigError(f"objectives.{name} must be a mapping with `loss` (a _target_ node) and "
                              "`data` (a source of unlearn/data/sources.py); see conf/objectives/mollm.yaml")
        out.append(Objective(str(name), build(entry.loss), str(entry.data)))
    return out


def run_label(cfg: DictConfig) -> str:
    """The method name used in tables (:func:`unlearn.identity.method_label`, with Hydra's
    choices and config search path when Hydra composed ``cfg``)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_node = OmegaConf.to_container(HydraConfig.get(), resolve=False) if HydraConfig.initialized() else None
    return method_label(OmegaConf.to_container(cfg, resolve=False), *hydra_label_context(hydra_node))


def run_experiment(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train, save and summarise one run; ``summary.json`` records failures too.

    With ``resume=true`` the run continues from the newest complete checkpoint in ``run_dir``
    (see :mod:`unlearn.checkpoint`); the result equals that of an uninterrupted run.
    Launched with ``WORLD_SIZE > 1`` it joins the process group and trains data parallel; the
    run dir is then rank 0's ``run_dir`` whatever the other ranks pass.
    """
    with distributed.process_group() as ranks, watch_signals() as stop:
        return _run(cfg, Path(run_dir), ranks, stop)


def _use_rank_device(cfg: DictConfig, ranks: Ranks) -> None:
    """NCCL: build rank r's model on ``cuda:LOCAL_RANK`` (``model.device`` auto or cuda)."""
    device = str(cfg.model.get("device", "auto"))
    if ranks.backend == "nccl" and (device == "auto" or device.startswith("cuda")):
        with open_dict(cfg):
            cfg.model.device = f"cuda:{ranks.local_rank}"


def memory_preflight(cfg: DictConfig, world_size: int) -> dict[str, float]:
    """:func:`unlearn.memory.preflight` before any weight is loaded; ``memory/estimate_gb`` for
    the summary."""
    parts = preflight(cfg, world_size)
    return {"memory/estimate_gb": round(parts["total"] / 1e9, 3)} if parts else {}


def _strategy(cfg: DictConfig, ranks: Ranks) -> str:
    """``trainer.strategy``, checked against the launch: fsdp needs R > 1 processes, the per-
    objective gradients and no rank-0-only forward pass during training."""
    try:
        name = sharding.strategy_of(cfg.trainer)
    except ValueError as exc:
        raise ConfigError(f"{exc}. Fix: pass trainer.strategy=single") from None
    if name != "fsdp":
        return name
    problems = []
    if not ranks.distributed:
        problems.append("it needs several processes: launch with torchrun --nproc_per_node N "
                        "-m unlearn.run … (N ≥ 2), or pass trainer.strategy=single")
    if not cfg.trainer.get("track_gradients", True):
        problems.append("it needs the per-objective gradients: pass trainer.track_gradients=true")
    if int(cfg.get("eval", {}).get("every_n_steps") or 0) and cfg.eval.get("enabled", True):
        problems.append("evaluation during training runs on rank 0 alone: pass eval.every_n_steps=0")
    if problems:
        raise ConfigError("trainer.strategy=fsdp: " + "; ".join(problems))
    return name


def _checkpoint_manager(cfg: DictConfig, run_dir: Path) -> CheckpointManager:
    """The manager that lists and verifies this run's checkpoints (sharded ones under fsdp)."""
    keep = int(cfg.trainer.get("keep_checkpoints", 2))
    if str(cfg.trainer.get("strategy") or "single") == "fsdp":
        return ShardedCheckpoints(run_dir, keep)
    return CheckpointManager(run_dir, keep)


def _unsharded(cfg: DictConfig, state: dict[str, torch.Tensor], main: bool):
    """Rank 0: a fresh unsharded model holding the consolidated trained ``state`` and its
    reference (the original weights), to save as safetensors and evaluate; (None, None) elsewhere."""
    if not main:
        return None, None
    with torch.random.fork_rng():  # rebuilding draws no number the evaluation would see
        fresh = build(cfg.model).model
        if cfg.trainer.lora:
            fresh = apply_lora(fresh, cfg.trainer.lora_config)
            reference = adapter_disabled_reference(fresh)
        else:
            reference = frozen_copy_reference(fresh)
    fresh.load_state_dict(state)
    return fresh, reference


def _run(cfg: DictConfig, own_run_dir: Path, ranks: Ranks, stop: StopRequest | None = None) -> dict[str, Any]:
    main = ranks.is_main
    run_dir = Path(distributed.on_main(lambda: str(own_run_dir)))  # one run dir: rank 0's
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    # Hydra saved the overrides verbatim; mask any secret in them (rank > 0: at most a sweep's
    # multirun.yaml, in its scratch dir; see unlearn.run)
    redact_hydra_files(own_run_dir)
    summary: dict[str, Any] = {"status": "running", "method": run_label(cfg), "seed": cfg.seed,
                               **distributed.summary_fields(ranks)}
    t0 = time.perf_counter()
    tracker = None
    # Before the try: refusing to reuse a folder must not overwrite that folder's summary.json.
    # a run stopped by a signal (status: preempted) continues when its command is rerun
    resuming = resume_flag(cfg) or (main and was_preempted(run_dir))
    resume_from = distributed.on_main(
        lambda: select_resume_checkpoint(run_dir, _checkpoint_manager(cfg, run_dir), resuming))
    try:
        validate_config(cfg)
        check_run_data(cfg)  # the local files the config reads (data_dir, the judge's data), before any model
        summary.update(memory_preflight(cfg, ranks.world_size))  # refuses a config that cannot fit
        summary["settings_sha256"] = settings_fingerprint(cfg)  # unlearn.identity: seed included
        checkpoints = CheckpointManager(run_dir, keep=int(cfg.trainer.get("keep_checkpoints", 2)))
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        seed_everything(cfg.seed)  # the same on every rank: the same initial (LoRA) weights
        _use_rank_device(cfg, ranks)
        loaded = build(cfg.model)
        forget_split = build(cfg.dataset.forget)
        normal_split = build(cfg.dataset.normal)
        t = cfg.trainer
        model = loaded.model
        fsdp = _strategy(cfg, ranks) == "fsdp"
        if t.lora:
            model = apply_lora(model, t.lora_config)
            reference = adapter_disabled_reference(model)
        else:  # fsdp: a sharded copy, made below
            reference = None if fsdp else frozen_copy_reference(model)
        if t.get("gradient_checkpointing", False):  # the frozen copy above stays as it was
            enable_gradient_checkpointing(model, lora=bool(t.lora))
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = instantiate(t.optimizer)(params=params)
        from transformers import get_scheduler

        scheduler = get_scheduler(t.lr_scheduler, optimizer, t.warmup_steps, max(1, t.max_steps))
        shard = dict(rank=ranks.rank, num_shards=ranks.world_size)  # batch sizes are per rank
        objective_list = build_objectives(cfg)
        streams = {}
        for name in dict.fromkeys(o.data for o in objective_list):
            src = source(name)
            streams[name] = BatchStream(src.examples(forget_split, normal_split, cfg.seed), loaded.tokenizer,
                                        int(t[src.batch_size_key]), cfg.dataset.max_length,
                                        cfg.dataset.template, cfg.seed + src.seed_offset, **shard)
        summary.update(
            model=loaded.name,
            trainable_params=sum(p.numel() for p in params),
            objectives=[o.name for o in objective_list],
            data={"forget_train": len(forget_examples(forget_split.train)),
                  "forget_eval_prompts": len({e.prompt for e in forget_split.eval}),
                  "normal_train": len(normal_split.train), "normal_eval": len(normal_split.eval)},
        )
        evaluation = EvaluationStage(cfg, loaded, forget_split, normal_split, run_dir)
        if main:
            if resuming:  # the per-prompt files keep what the checkpoint's steps wrote, nothing later
                evaluation.resume_files(resume_from.step if resume_from is not None else 0)
            summary.update(evaluation.before(model))  # the original model; cached under cache_dir
        distributed.barrier()
        sharded = None
        if fsdp:  # after the original model's evaluation (rank 0, unsharded)
            sharded = sharding.prepare_fsdp(model, t, bool(t.lora))
            params, reference = sharded.params, sharded.reference
            optimizer = instantiate(t.optimizer)(params=params)  # on the shards
            scheduler = get_scheduler(t.lr_scheduler, optimizer, t.warmup_steps, max(1, t.max_steps))
            checkpoints = ShardedCheckpoints(run_dir, checkpoints.keep, sharded.names,
                                             sharded.sharded_params, sharded.params)
        container = OmegaConf.to_container(cfg, resolve=True)
        fingerprint = run_fingerprint(redact(container), streams)
        restored = None
        if resume_from is not None:  # the reference model above was built from the original weights
            restored = (checkpoints.load_into(resume_from, fingerprint, optimizer, scheduler) if fsdp
                        else apply_checkpoint(resume_from, fingerprint, model, optimizer, scheduler))
            if main:
                restore_metrics(resume_from, run_dir / "metrics.jsonl")
        if not fsdp:  # fsdp: every rank built the same weights and holds a different shard
            distributed.broadcast_(params)  # every rank starts from rank 0's weights, as DDP does
        if main:
            wandb_sink = WandbSink(run_dir, container, name=f"{summary['method']}-s{cfg.seed}", resume=resuming,
                                   **OmegaConf.to_container(cfg.logger, resolve=True))
            tracker = Tracker(run_dir, wandb_sink)
        else:
            tracker = NullTracker()
        compute_dtype = str(t.get("compute_dtype", "float32"))
        objectives = (Objectives(model, params, objective_list, reference, compute_dtype) if sharded is None else
                      sharding.ShardedObjectives(model, sharded.sharded_params, params, objective_list,
                                                 reference, compute_dtype))
        probe_every = int(t.get("probe_every", 0))
        probe = build_probes(objectives, forget_split, normal_split, loaded.tokenizer, cfg) \
            if probe_every else None
        probe = probe if probe is None or probe.probes else None
        trainer = UnlearningTrainer(
            model=model, params=params, objectives=objectives,
            aggregator=instantiate(cfg.aggregator), optimizer=optimizer,
            streams=streams, tracker=tracker,
            max_steps=t.max_steps, scheduler=scheduler, grad_accum_steps=t.grad_accum_steps,
            max_grad_norm=t.max_grad_norm, max_consecutive_skips=t.max_consecutive_skips,
            progress_bar=t.progress_bar and main, track_gradients=t.track_gradients,
            checkpoints=checkpoints if main or fsdp else None,  # fsdp: every rank writes its shards
            checkpoint_every=int(t.get("checkpoint_every", 0)), checkpoint_info=fingerprint,
            on_step_end=evaluation.periodic(tracker, model, reference) if main else None,
            sync=(sharding.ShardedSync() if fsdp else GradientSync() if ranks.distributed else None),
            probe=probe if main or fsdp else None, probe_every=probe_every,  # fsdp: a collective
            track_update=bool(t.get("track_update", True)),
            update_chunk_bytes=(int(float(t.update_chunk_mb) * 2**20) if "update_chunk_mb" in t
                                else UPDATE_CHUNK_BYTES),
            aggregation_metric=str(t.get("aggregation_metric", "euclidean")),
            stop_requested=stop,
        )
        if restored is not None:
            trainer.load_state_dict(restored.state["trainer"])
            summary["resumed_train_time_s"] = trainer.elapsed_before  # earlier sessions' training
            restore_rng_state(restored.rng)  # last, so nothing consumes random numbers after it
        result = trainer.train()
        trainer.stop_if_requested()  # a signal during the last step: stop before saving and evaluating
        if fsdp:  # every rank gathers; rank 0 gets an unsharded copy to save and evaluate
            model, reference = _unsharded(cfg, sharding.full_state_dict(model), main)
        if main and t.save_model:
            save_model(model, loaded.tokenizer, run_dir / "model")  # atomic
        if t.save_model:
            trainer.stop_if_requested()  # every rank (a collective): a signal during the save stops before evaluating
        if main:
            summary.update(evaluation.after(model, reference))  # the unlearned model
        distributed.barrier()
        summary.update(
            status="completed",
            steps=result.steps,
            skipped_steps=result.skipped_steps,
            train_time_s=result.wall_time_s,
            **{f"initial/{k}": v for k, v in result.first.items() if k.startswith("loss/")},
            **{f"final/{k}": v for k, v in result.last.items() if k.startswith("loss/")},
            **{f"initial/{k}": v for k, v in result.first.items() if k.startswith(PROBE_PREFIXES)},
            **{f"final/{k}": v for k, v in result.probe.items()},
        )
    except Preempted as exc:  # checkpointed at exc.step; the same command resumes it
        summary.update(status=PREEMPTED, preempted_at_step=exc.step, error=str(exc))
        raise
    except BaseException as exc:
        summary.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                       traceback=traceback.format_exc(limit=8))
        if isinstance(exc, DiskFullError):
            log.error("%s", exc)
        raise
    finally:
        # train_time_s counts the earlier sessions' training too, so the wall time does as well
        summary["wall_time_s"] = summary.get("resumed_train_time_s", 0.0) + time.perf_counter() - t0
        summary.update(peak_memory_bytes())
        try:
            if main:
                write_json_atomic(run_dir / "summary.json", redact(summary))
        except DiskFullError as exc:  # the previous summary.json stays as it was
            log.error("%s", exc)
            raise
        finally:
            if tracker is not None:
                tracker.close({k: v for k, v in summary.items() if isinstance(v, int | float | str)})
    return summary
