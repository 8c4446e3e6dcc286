"""Matrix products in bfloat16 for likelihood metrics, where the hardware does them natively.

``compute_dtype`` of a metric: ``float32`` runs the model as loaded (float32 for the embedded model); ``bfloat16`` runs its
forward under ``torch.autocast`` (weights stay as loaded, matrix products and attention in
bfloat16, the log-softmax in float32); ``auto`` picks ``bfloat16`` on a device that multiplies
bfloat16 natively (a CUDA GPU that supports it, a CPU with AMX-BF16 or AVX512-BF16) and the
loaded precision elsewhere, where emulated bfloat16 would be slower than float32.
"""

from __future__ import annotations

import contextlib

import torch

COMPUTE_DTYPES = ("auto", "float32", "bfloat16")


def native_bfloat16(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        capabilities = torch.cpu.get_capabilities()
        return bool(capabilities.get("amx_bf16") or capabilities.get("avx512_bf16"))
    return False


def resolve_compute_dtype(option: str, device: torch.device | str) -> str:
    """``float32`` or ``bfloat16`` for a ``compute_dtype`` option on ``device``."""
    if option not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {option!r}")
    if option == "auto":
        return "bfloat16" if native_bfloat16(device) else "float32"
    return option


def compute_precision(dtype: str, device: torch.device | str):
    """A context in which the model's forward computes in ``dtype`` (``float32``: no change)."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=getattr(torch, dtype))
