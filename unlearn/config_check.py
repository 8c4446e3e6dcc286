"""Type and range checks of the composed config, before anything is built.

Hydra parses ``trainer.max_steps=abc`` into the string ``"abc"`` without complaint; without this
check it would surface much later as an unrelated ``TypeError`` deep in the trainer (or, worse,
run with a silently wrong value). :func:`validate_config` names every bad key, the value it got,
what it expects and an override that fixes it.

Keys that a config does not define are skipped, so optional groups may leave them out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from unlearn.errors import UnlearnError


class ConfigError(UnlearnError):
    """A config value has the wrong type or is out of range."""


_ABSENT = object()


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _int_min(lo: int) -> Callable[[Any], bool]:
    return lambda v: _int(v) and v >= lo


def _num_range(lo: float, hi: float | None = None, lo_open: bool = False, hi_open: bool = True):
    def check(v: Any) -> bool:
        if not _num(v):
            return False
        if (v <= lo) if lo_open else (v < lo):
            return False
        return hi is None or ((v < hi) if hi_open else (v <= hi))

    return check


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _one_of(*choices: str) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and v in choices


def _str(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _str_list(v: Any) -> bool:
    return isinstance(v, list | ListConfig) and len(v) > 0 and all(_str(x) for x in v)


def _num_list(v: Any) -> bool:
    return isinstance(v, list | ListConfig) and len(v) > 0 and all(_num(x) for x in v)


# (key, check, what is expected, an example override value)
RULES: list[tuple[str, Callable[[Any], bool], str, str]] = [
    ("seed", _int_min(0), "an integer ≥ 0", "0"),
    ("threads", _optional(_int_min(1)), "null or an integer ≥ 1", "2"),
    ("resume", _bool, "true or false", "true"),
    ("data_dir", _optional(_str), "null or a folder path", "/path/to/data"),
    ("trainer.max_steps", _int_min(0), "an integer ≥ 0", "100"),
    ("trainer.forget_batch_size", _int_min(1), "an integer ≥ 1", "4"),
    ("trainer.normal_batch_size", _int_min(1), "an integer ≥ 1", "4"),
    ("trainer.grad_accum_steps", _int_min(1), "an integer ≥ 1", "1"),
    ("trainer.warmup_steps", _int_min(0), "an integer ≥ 0", "0"),
    ("trainer.lr_scheduler", _str, "a transformers scheduler name", "constant"),
    ("trainer.max_grad_norm", _optional(_num_range(0, lo_open=True)), "null or a number > 0", "1.0"),
    ("trainer.max_consecutive_skips", _int_min(1), "an integer ≥ 1", "5"),
    ("trainer.checkpoint_every", _int_min(0), "an integer ≥ 0 (0: no checkpoints)", "100"),
    ("trainer.keep_checkpoints", _int_min(1), "an integer ≥ 1", "2"),
    ("trainer.save_model", _bool, "true or false", "true"),
    ("trainer.progress_bar", _bool, "true or false", "false"),
    ("trainer.probe_every", _int_min(0), "an integer ≥ 0 (0: no probe)", "5"),
    ("trainer.probe_size", _int_min(0), "an integer ≥ 0 (0: no probe/*)", "16"),
    ("trainer.heldout_probe_size", _int_min(0), "an integer ≥ 0 (0: no heldout/*)", "32"),
    ("trainer.lora", _bool, "true or false", "true"),
    ("trainer.track_update", _bool, "true or false", "true"),
    ("trainer.update_chunk_mb", _num_range(0, lo_open=True), "a number of MiB > 0", "256"),
    ("trainer.strategy", _one_of("single", "ddp", "fsdp"), "one of single, ddp, fsdp", "single"),
    ("trainer.fsdp.mixed_precision", _one_of("none", "bf16", "fp16"), "one of none, bf16, fp16", "none"),
    ("trainer.fsdp.reshard_after_forward", _bool, "true or false", "true"),
    ("trainer.gradient_checkpointing", _bool, "true or false", "true"),
    ("trainer.compute_dtype", _one_of("float32", "bfloat16"), "float32 or bfloat16", "bfloat16"),
    ("trainer.memory_check", _bool, "true or false", "true"),
    ("trainer.aggregation_metric", _one_of("euclidean", "preconditioned"), "euclidean or preconditioned",
     "euclidean"),
    ("trainer.optimizer.lr", _num_range(0, lo_open=True), "a number > 0", "5e-5"),
    ("trainer.optimizer.weight_decay", _num_range(0), "a number ≥ 0", "0.0"),
    ("trainer.lora_config.r", _int_min(1), "an integer ≥ 1", "8"),
    ("trainer.lora_config.alpha", _num_range(0, lo_open=True), "a number > 0", "16"),
    ("trainer.lora_config.dropout", _num_range(0, 1), "a number in [0, 1)", "0.0"),
    ("trainer.lora_config.target_modules", _str_list, "a non-empty list of module names", "[q_proj,v_proj]"),
    ("dataset.max_length", _int_min(8), "an integer ≥ 8", "256"),
    ("dataset.template", _one_of("auto", "chat", "plain"), "one of auto, chat, plain", "auto"),
    ("dataset.forget.eval_fraction", _num_range(0, 1), "a number in [0, 1)", "0.25"),
    ("dataset.normal.eval_fraction", _num_range(0, 1), "a number in [0, 1)", "0.25"),
    ("dataset.forget.split_seed", _int_min(0), "an integer ≥ 0", "0"),
    ("dataset.normal.split_seed", _int_min(0), "an integer ≥ 0", "0"),
    ("model.trust_remote_code", _bool, "true or false", "false"),
    ("loss.bounded", _bool, "true or false", "false"),
    ("loss.beta", _num_range(0, lo_open=True), "a number > 0", "0.1"),
    ("loss.clamp_eps", _num_range(0, 1, lo_open=True), "a number in (0, 1)", "1e-6"),
    ("aggregator.weights", _num_list, "a list of numbers, one per objective", "[1.0,1.0,1.0]"),
    ("aggregator.zero_tol", _num_range(0), "a number ≥ 0", "1e-6"),
    ("aggregator.rank_tol", _num_range(0, 1, lo_open=True), "a number in (0, 1)", "1e-3"),
    ("eval.split", _one_of("eval", "train"), "eval or train", "eval"),
    ("eval.enabled", _bool, "true or false", "false"),
    ("eval.n_prompts", _int_min(1), "an integer ≥ 1", "200"),
    ("eval.max_new_tokens", _int_min(1), "an integer ≥ 1", "128"),
    ("eval.batch_size", _int_min(1), "an integer ≥ 1", "16"),
    ("eval.compute_dtype", _one_of("float32", "bfloat16"), "float32 or bfloat16", "bfloat16"),
    ("eval.every_n_steps", _int_min(0), "an integer ≥ 0 (0: only before and after)", "0"),
    ("logger.mode", _one_of("offline", "online", "disabled"), "one of offline, online, disabled", "offline"),
    ("logger.init_timeout", _num_range(0, lo_open=True), "a number of seconds > 0", "30"),
]


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, ListConfig):
        return "list"
    if isinstance(v, DictConfig):
        return "mapping"
    return type(v).__name__


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every key whose value has a wrong type or range."""
    problems = []
    for key, check, expected, example in RULES:
        try:
            value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True)
        except Exception as exc:  # noqa: BLE001 - a missing (???) value or a broken interpolation
            problems.append(f"{key}: {exc}. Fix: pass {key}={example}")
            continue
        if value is _ABSENT:
            continue
        if not check(value):
            problems.append(
                f"{key}={value!r} ({_type_name(value)}): expected {expected}. Fix: pass {key}={example}"
            )
    if problems:
        raise ConfigError("invalid config value" + ("s" if len(problems) > 1 else "") + ":\n  "
                          + "\n  ".join(problems))


def resume_flag(cfg: DictConfig) -> bool:
    """``cfg.resume`` as a bool; anything else (``resume=yes``, a path…) is a ConfigError."""
    value = cfg.get("resume", False)
    if not isinstance(value, bool):
        raise ConfigError(
            f"resume={value!r} ({_type_name(value)}): expected true or false. To resume a run, pass "
            "resume=true hydra.run.dir=<the interrupted run's folder>"
        )
    return value


__all__ = ["RULES", "ConfigError", "resume_flag", "validate_config"]
