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
from unlearn.errors import UnlearnError
from unlearn.evaluation.stage import EvaluationStage
from unlearn.identity import method_label, settings_fingerprint
from unlearn.tracking import (
    NullTracker,
    Tracker,
    WandbSink,
    redact,
    redact_hydra_files,
    write_json_atomic,
)
from unlearn.training import distributed
from unlearn.training.distributed import GradientSync, Ranks
from unlearn.training.objectives import Objective, Objectives, mollm_objectives
from unlearn.training.probe import LossProbe, ProbeSet
from unlearn.training.reference import adapter_disabled_reference, frozen_copy_reference
from unlearn.training.resources import peak_memory_bytes
from unlearn.training.trainer import UnlearningTrainer


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
    normal answers); both at the training batch size and max length."""
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
    """The method name used in tables (:func:`unlearn.identity.method_label`)."""
    return method_label(OmegaConf.to_container(cfg, resolve=False))


def run_experiment(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train, save and summarise one run; ``summary.json`` records failures too.

    With ``resume=true`` the run continues from the newest complete checkpoint in ``run_dir``
    (see :mod:`unlearn.checkpoint`); the result equals that of an uninterrupted run.
    Launched with ``WORLD_SIZE > 1`` it joins the process group and trains data parallel; the
    run dir is then rank 0's ``run_dir`` whatever the other ranks pass.
    """
    with distributed.process_group() as ranks:
        return _run(cfg, Path(run_dir), ranks)


def _use_rank_device(cfg: DictConfig, ranks: Ranks) -> None:
    """NCCL: build rank r's model on ``cuda:LOCAL_RANK`` (``model.device`` auto or cuda)."""
    device = str(cfg.model.get("device", "auto"))
    if ranks.backend == "nccl" and (device == "auto" or device.startswith("cuda")):
        with open_dict(cfg):
            cfg.model.device = f"cuda:{ranks.local_rank}"


def _run(cfg: DictConfig, own_run_dir: Path, ranks: Ranks) -> dict[str, Any]:
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
    resume_from = distributed.on_main(
        lambda: select_resume_checkpoint(run_dir, CheckpointManager(run_dir), resume_flag(cfg)))
    try:
        validate_config(cfg)
        check_run_data(cfg)  # the local files the config reads (data_dir, the judge's data), before any model
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
        if t.lora:
            model = apply_lora(model, t.lora_config)
            reference = adapter_disabled_reference(model)
        else:
            reference = frozen_copy_reference(model)
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
            summary.update(evaluation.before(model))  # the original model; cached under cache_dir
        distributed.barrier()
        container = OmegaConf.to_container(cfg, resolve=True)
        fingerprint = run_fingerprint(redact(container), streams)
        restored = None
        if resume_from is not None:  # the reference model above was built from the original weights
            restored = apply_checkpoint(resume_from, fingerprint, model, optimizer, scheduler)
            if main:
                restore_metrics(resume_from, run_dir / "metrics.jsonl")
        distributed.broadcast_(params)  # every rank starts from rank 0's weights, as DDP does
        if main:
            wandb_sink = WandbSink(run_dir, container, name=f"{summary['method']}-s{cfg.seed}",
                                   **OmegaConf.to_container(cfg.logger, resolve=True))
            tracker = Tracker(run_dir, wandb_sink)
        else:
            tracker = NullTracker()
        objectives = Objectives(model, params, objective_list, reference)
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
            checkpoints=checkpoints if main else None,
            checkpoint_every=int(t.get("checkpoint_every", 0)), checkpoint_info=fingerprint,
            on_step_end=evaluation.periodic(tracker, model, reference) if main else None,
            sync=GradientSync() if ranks.distributed else None,
            probe=probe if main else None, probe_every=probe_every,
            track_update=bool(t.get("track_update", True)),
            aggregation_metric=str(t.get("aggregation_metric", "euclidean")),
        )
        if restored is not None:
            trainer.load_state_dict(restored.state["trainer"])
            restore_rng_state(restored.rng)  # last, so nothing consumes random numbers after it
        result = trainer.train()
        if main:
            if t.save_model:
                model.save_pretrained(run_dir / "model", safe_serialization=True)
                loaded.tokenizer.save_pretrained(run_dir / "model")
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
    except BaseException as exc:
        summary.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                       traceback=traceback.format_exc(limit=8))
        raise
    finally:
        summary["wall_time_s"] = time.perf_counter() - t0
        summary.update(peak_memory_bytes())
        if main:
            write_json_atomic(run_dir / "summary.json", redact(summary))
        if tracker is not None:
            tracker.close({k: v for k, v in summary.items() if isinstance(v, int | float | str)})
    return summary
