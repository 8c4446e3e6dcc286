"""Gradient checkpointing (``trainer.gradient_checkpointing``): keep only each decoder layer's
input in the forward pass and recompute the layer's activations during backward.

Activation memory falls from ~L·b·s·(c·h) to ~L·b·s·h plus one layer's worth (L layers, batch b,
sequence s, hidden h, c ≈ 16–34 stored tensors per layer), for about one more forward pass of
compute per backward pass. The non-reentrant implementation is used: it supports
``torch.autograd.grad`` and the m backward passes over one retained graph that the
per-objective gradients need (the reentrant one supports neither). With LoRA the embedding output
is made to require grad (``enable_input_require_grads``): with frozen embeddings nothing entering
a checkpointed layer would need a gradient and the adapter would receive none.
"""

from __future__ import annotations

import torch


def enable_gradient_checkpointing(model: torch.nn.Module, lora: bool = False) -> torch.nn.Module:
    """HF activation (gradient) checkpointing, non-reentrant, in place; returns ``model``."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5.x's name for it
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        raise ValueError(f"trainer.gradient_checkpointing=true: {type(model).__name__} has no "
                         "gradient_checkpointing_enable (not a transformers model)")
    if lora and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    if getattr(model, "config", None) is not None:
        model.config.use_cache = False  # a KV cache is useless in training and HF warns about it
    return model
