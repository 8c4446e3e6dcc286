"""A randomly initialised two-layer Llama with the embedded model's tokenizer, for fast tests."""

from __future__ import annotations

import torch

from unlearn.models.embedded import load_embedded_tokenizer
from unlearn.models.loaded import LoadedModel, resolve_device


def build_tiny_random(
    num_layers: int = 2,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_heads: int = 4,
    seed: int = 0,
    cache_dir: str | None = None,
    device: str = "auto",
    dtype: str = "float32",
) -> LoadedModel:
    from unlearn.models.noise import quiet_third_party

    quiet_third_party()  # torchao's CUDA-kernel and pytree notices (unlearn/models/noise.py)
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_embedded_tokenizer(cache_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.to(device=resolve_device(device), dtype=getattr(torch, dtype))
    return LoadedModel(model, tokenizer, f"tiny-random-llama-{num_layers}l", "random init")
