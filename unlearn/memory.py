"""Memory preflight: will the composed config fit on a device? Estimated before any weight loads.

Per device, in bytes (P parameters, P_t trainable, R = world size when the strategy shards,
else 1; b_w = bytes per weight in ``model.dtype``; m objectives)::

    weights         P · b_w / R
    reference       P · b_w / R           full fine-tuning (a frozen copy); 0 with LoRA (adapter off)
    gradients       m · P_t · b_g / R     one per objective (b_g = 4 under fsdp's fp32 reduce)
    direction       P_t · max(b_w, 4) / R d in fp32 (track_update keeps the g_i; else d reuses g_1) + p.grad
    update snapshot min(P_t·b_w/R, max(C, V·h·b_w/R))  θ_before of one chunk of parameters (track_update;
                                          C = trainer.update_chunk_mb in bytes, V·h the
                                          embedding, the largest parameter; LoRA: P_t at most)
    optimizer       k · P_t · b_w / R     k = 2 (AdamW, MetricAdam), 1 (SGD with momentum), 0 (SGD)
    gathered layers 2 · P_layer · b_c     fsdp: the layer being computed and the one prefetched
    activations     L · T · a_l · b_c     T = batch · max_length tokens of the larger source;
                                          a_l = 16h + 4i + 4·kv per token and layer (Llama block);
                                          gradient checkpointing: L · T · h · b_c + one layer's a_l
    logits          4 · T · V · 4         fp32 logits, log-softmax, the reference's, one temporary

times :data:`OVERHEAD` (allocator slack), plus :data:`RUNTIME_BYTES` on a GPU (CUDA context).
Calibration: Llama-3-8B with LoRA r = 16, batch 8 × 256, bf16 measured a 46 GB peak on an H200
(docs/scale.md); this estimate gives 43.8 GB for that setting. The default SmolLM2 run on CPU
(fp32, batch 4 × 256) peaked at 6.2 GB RSS against 9.4 GB estimated. A planning figure, not a bound.

Parameter counts come from the model config, never from weights: ``tiny_random`` from its own
keys, the embedded SmolLM2 from its known shape, a pretrained model from ``config.json`` when
``model.path`` is a local folder, else from the ``architecture`` figures its YAML declares.

Command line (what docs/scale.md's table is made with)::

    python -m unlearn.memory model=llama3_8b trainer.lora=true --gpus 1 --device-gb 80
    python -m unlearn.memory model=llama3_8b trainer.strategy=fsdp --gpus 8 --device-gb 80
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from unlearn.errors import UnlearnError

log = logging.getLogger(__name__)

GB = 1e9
OVERHEAD = 1.15         # allocator fragmentation and temporaries not counted above
RUNTIME_BYTES = 1 << 30  # CUDA context and kernels, per GPU
DTYPE_BYTES = {"float32": 4, "fp32": 4, "float": 4, "bfloat16": 2, "bf16": 2, "float16": 2,
               "fp16": 2, "half": 2, "float64": 8}
# SmolLM2-135M-Instruct (the embedded model): its config.json
SMOLLM2 = {"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
           "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
           "tie_word_embeddings": True}
TINY_VOCAB = 49152  # tiny_random uses the embedded tokenizer


class MemoryPreflightError(UnlearnError):
    """The composed config is estimated not to fit on the device."""


@dataclass(frozen=True)
class Architecture:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    tie_word_embeddings: bool = False
    params: int | None = None  # a declared total; else computed from the shape

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> Architecture:
        heads = int(d.get("num_attention_heads", 1))
        return cls(int(d["vocab_size"]), int(d["hidden_size"]), int(d["intermediate_size"]),
                   int(d["num_hidden_layers"]), heads, int(d.get("num_key_value_heads") or heads),
                   bool(d.get("tie_word_embeddings", False)),
                   int(d["params"]) if d.get("params") is not None else None)

    @property
    def kv_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads * self.num_key_value_heads

    @property
    def layer_params(self) -> int:
        """One Llama block: q, o (h×h), k, v (h×kv), gate, up, down (h×i), two norms."""
        h, i = self.hidden_size, self.intermediate_size
        return 2 * h * h + 2 * h * self.kv_dim + 3 * h * i + 2 * h

    @property
    def total_params(self) -> int:
        if self.params is not None:
            return self.params
        embed = self.vocab_size * self.hidden_size
        return (self.num_hidden_layers * self.layer_params + embed * (1 if self.tie_word_embeddings else 2)
                + self.hidden_size)

    def lora_params(self, r: int, targets: list[str]) -> int:
        h, i, kv = self.hidden_size, self.intermediate_size, self.kv_dim
        shapes = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                  "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
        per_layer = sum(r * (a + b) for name, (a, b) in shapes.items() if name in targets)
        return self.num_hidden_layers * per_layer


def architecture(model_cfg: Mapping[str, Any]) -> Architecture:
    """The model's shape from its config alone (module docstring); ValueError if unknown."""
    target = str(model_cfg.get("_target_", ""))
    if target.endswith("build_tiny_random"):
        heads = int(model_cfg.get("num_heads", 4))
        return Architecture(TINY_VOCAB, int(model_cfg.get("hidden_size", 64)),
                            int(model_cfg.get("intermediate_size", 128)),
                            int(model_cfg.get("num_layers", 2)), heads, heads, True)
    if target.endswith("load_smollm2"):
        return Architecture.from_mapping(SMOLLM2)
    path = model_cfg.get("path")
    if path is not None and (Path(str(path)).expanduser() / "config.json").is_file():
        config = json.loads((Path(str(path)).expanduser() / "config.json").read_text())
        return Architecture.from_mapping(config.get("text_config", config))
    declared = model_cfg.get("architecture")
    if declared:
        return Architecture.from_mapping(declared)
    raise ValueError(f"no parameter count for model {model_cfg.get('name', target)!r}: give "
                     "model.path a local folder with config.json, or declare model.architecture "
                     "(vocab_size, hidden_size, intermediate_size, num_hidden_layers, "
                     "num_attention_heads, num_key_value_heads, params) in its YAML")


@dataclass(frozen=True)
class Setting:
    """What the estimate depends on, read from a composed config."""

    arch: Architecture
    weight_bytes: int
    compute_bytes: int
    lora: bool
    lora_r: int
    lora_targets: tuple[str, ...]
    objectives: int
    optimizer_states: int
    track_update: bool
    update_chunk_bytes: float
    gradient_checkpointing: bool
    strategy: str
    world_size: int
    tokens: int  # per rank, the larger source's batch × max_length

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], world_size: int = 1) -> Setting:
        model, t = cfg["model"], cfg["trainer"]
        dtype = str(model.get("dtype", "float32")).replace("torch.", "")
        weight = DTYPE_BYTES.get(dtype, 4)
        precision = str((t.get("fsdp") or {}).get("mixed_precision", "none"))
        strategy = str(t.get("strategy", "single"))
        compute = 2 if strategy == "fsdp" and precision in ("bf16", "fp16") else weight
        objectives = cfg.get("objectives")
        m = len(objectives) if isinstance(objectives, Mapping) and objectives else 3
        opt = t.get("optimizer") or {}
        target = str(opt.get("_target_", "torch.optim.AdamW")).rsplit(".", 1)[-1].lower()
        states = (1 if float(opt.get("momentum", 0) or 0) else 0) if target == "sgd" else 2
        lora_cfg = t.get("lora_config") or {}
        batch = max(int(t.get("forget_batch_size", 1)), int(t.get("normal_batch_size", 1)))
        max_length = int((cfg.get("dataset") or {}).get("max_length", 256))
        return cls(architecture(model), weight, compute, bool(t.get("lora", False)),
                   int(lora_cfg.get("r", 8)), tuple(lora_cfg.get("target_modules", ["q_proj", "v_proj"])),
                   m, states, bool(t.get("track_update", True)),
                   float(t.get("update_chunk_mb", 256)) * 2**20,
                   bool(t.get("gradient_checkpointing", False)), strategy, max(1, world_size),
                   batch * max_length)


def update_snapshot_bytes(s: Setting, trainable: float, shards: int) -> float:
    """θ_before of the largest chunk a rank steps at once (module docstring): chunks count the
    rank's own bytes, so the cap C is not divided by the shards."""
    largest = trainable if s.lora else s.arch.vocab_size * s.arch.hidden_size
    return min(trainable * s.weight_bytes / shards, max(s.update_chunk_bytes, largest * s.weight_bytes / shards))


def estimate(s: Setting, gpu: bool = True) -> dict[str, float]:
    """Bytes per device, by part, and their ``total`` (formulas: module docstring)."""
    a = s.arch
    P = a.total_params
    Pt = a.lora_params(s.lora_r, list(s.lora_targets)) if s.lora else P
    R = s.world_size if s.strategy == "fsdp" else 1
    grad_bytes = 4 if s.strategy == "fsdp" and s.compute_bytes != s.weight_bytes else s.weight_bytes
    per_token_layer = 16 * a.hidden_size + 4 * a.intermediate_size + 4 * a.kv_dim
    if s.gradient_checkpointing:
        acts = (a.num_hidden_layers * s.tokens * a.hidden_size + s.tokens * per_token_layer) * s.compute_bytes
    else:
        acts = a.num_hidden_layers * s.tokens * per_token_layer * s.compute_bytes
    wide = max(s.weight_bytes, 4)
    parts = {
        "weights": P * s.weight_bytes / R,
        "reference": 0.0 if s.lora else P * s.weight_bytes / R,
        "gradients": s.objectives * Pt * grad_bytes / R,
        "direction": Pt * ((wide + s.weight_bytes) if s.track_update else s.weight_bytes) / R,
        "update_snapshot": update_snapshot_bytes(s, Pt, R) if s.track_update else 0.0,
        "optimizer": s.optimizer_states * Pt * s.weight_bytes / R,
        "gathered_layers": 2.0 * a.layer_params * s.compute_bytes if R > 1 else 0.0,
        "activations": float(acts),
        "logits": 4.0 * s.tokens * a.vocab_size * 4,
    }
    total = sum(parts.values()) * OVERHEAD + (RUNTIME_BYTES if gpu else 0)
    return {**parts, "total": total, "params": float(P), "trainable_params": float(Pt)}


def capacity_bytes() -> tuple[float, str, bool]:
    """(bytes, what, is_gpu): the smallest visible GPU's memory, else the host's total memory
    shared by this host's ranks (``LOCAL_WORLD_SIZE``)."""
    try:
        import torch

        if torch.cuda.is_available():
            sizes = [torch.cuda.get_device_properties(i).total_memory
                     for i in range(torch.cuda.device_count())]
            return float(min(sizes)), f"GPU memory ({min(sizes) / GB:.0f} GB)", True
    except ImportError:  # pragma: no cover
        pass
    total = _host_memory()
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    what = f"host memory ({total / GB:.0f} GB" + (f" / {local} local ranks" if local > 1 else "") + ")"
    return total / local, what, False


def _host_memory() -> float:
    try:
        import psutil

        return float(psutil.virtual_memory().total)
    except ImportError:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return float(line.split()[1]) * 1024
    raise RuntimeError("cannot read the host memory size")


def fixes(s: Setting, capacity: float, gpu: bool) -> list[str]:
    """The overrides that help, each with its estimate (and whether it then fits)."""
    out = []

    def line(label: str, other: Setting) -> None:
        total = estimate(other, gpu)["total"]
        out.append(f"{label}: {total / GB:.1f} GB per device" + (" (fits)" if total <= capacity else ""))

    if not s.lora:
        line("trainer.lora=true", replace(s, lora=True))
    for n in (2, 4, 8, 16, 32, 64):
        if n > s.world_size or s.strategy != "fsdp":
            other = replace(s, strategy="fsdp", world_size=n)
            if estimate(other, gpu)["total"] <= capacity or n == 64:
                line(f"trainer.strategy=fsdp on {n} GPUs (torchrun --nproc_per_node {n})", other)
                break
    if not s.gradient_checkpointing:
        line("trainer.gradient_checkpointing=true", replace(s, gradient_checkpointing=True))
    if s.track_update:
        line("trainer.track_update=false", replace(s, track_update=False))
    return out


def _count(n: float) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def report(parts: Mapping[str, float], s: Setting) -> str:
    shown = ", ".join(f"{k} {v / GB:.2f}" for k, v in parts.items()
                      if k not in ("total", "params", "trainable_params") and v)
    where = f"{s.strategy}" + (f" over {s.world_size} ranks" if s.strategy == "fsdp" else "")
    return (f"memory estimate: {parts['total'] / GB:.1f} GB per device ({where}; "
            f"{_count(parts['params'])} parameters, {_count(parts['trainable_params'])} trainable; "
            f"GB: {shown}; ×{OVERHEAD} slack)")


def preflight(cfg: Mapping[str, Any], world_size: int = 1) -> dict[str, float]:
    """Log the estimate; raise :class:`MemoryPreflightError` naming the fixes when it exceeds
    the device (``trainer.memory_check=false`` skips the refusal). Loads nothing."""
    try:
        s = Setting.from_config(cfg, world_size)
    except ValueError as exc:
        log.warning("memory estimate skipped: %s", exc)
        return {}
    capacity, what, gpu = capacity_bytes()
    parts = estimate(s, gpu)
    message = report(parts, s) + f"; available: {what}"
    log.info(message)
    if parts["total"] > capacity and (cfg["trainer"].get("memory_check", True)):
        raise MemoryPreflightError(
            f"this config does not fit: {message}, before loading any weight. Fixes, each "
            "alone:\n  " + "\n  ".join(fixes(s, capacity, gpu))
            + "\n(trainer.memory_check=false runs it anyway: the estimate is a planning figure)"
        )
    return parts


def main(argv: list[str] | None = None) -> None:
    """``python -m unlearn.memory [--gpus N] [--device-gb G] overrides…``: the table of parts."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=1, help="ranks (the fsdp world size)")
    parser.add_argument("--device-gb", type=float, default=None,
                        help="device memory in GB (default: this machine's GPU or host)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("config", overrides=args.overrides), resolve=False)
    s = Setting.from_config(cfg, args.gpus)
    gpu = args.device_gb is not None or capacity_bytes()[2]
    capacity = args.device_gb * GB if args.device_gb is not None else capacity_bytes()[0]
    parts = estimate(s, gpu)
    print(" ".join(args.overrides) + f"  [{args.gpus} device(s)]")
    for k, v in parts.items():
        print(f"  {k:16s} {v / 1e6:14.1f} M" if "params" in k else f"  {k:16s} {v / GB:10.2f} GB")
    fits = parts["total"] <= capacity
    print(f"  {'capacity':16s} {capacity / GB:10.2f} GB  -> {'fits' if fits else 'does not fit'}")
    if not fits:
        print("  fixes:\n    " + "\n    ".join(fixes(s, capacity, gpu)))
    print(json.dumps({"setting": {k: v for k, v in asdict(s).items() if k != "arch"},
                      "total_gb": round(parts["total"] / GB, 2)}))


if __name__ == "__main__":
    main()
