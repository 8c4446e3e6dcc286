"""Load a causal LM from a local folder or a hub ID, safetensors only."""

from __future__ import annotations

from pathlib import Path

from unlearn.errors import HubUnavailableError, ModelLoadError
from unlearn.models.loaded import LoadedModel, prepare_tokenizer, resolve_device, resolve_dtype


def check_safetensors_folder(folder: Path) -> None:
    """Refuse folders whose weights are pickles (``*.bin``/``*.pt``) rather than safetensors."""
    if any(folder.glob("*.safetensors")) or any(folder.glob("adapter_model.safetensors")):
        return
    pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
    if pickles:
        raise ModelLoadError(
            f"{folder} holds only pickled weights ({', '.join(pickles)}); unlearn loads "
            "safetensors or GGUF only. Convert them with save_pretrained(safe_serialization=True)"
        )
    raise ModelLoadError(f"{folder} holds no *.safetensors weight file")


def load_pretrained(
    path: str,
    name: str | None = None,
    dtype: str = "bfloat16",
    device: str = "auto",
    trust_remote_code: bool = False,
    revision: str | None = None,
    architecture: dict | None = None,
) -> LoadedModel:
    """``from_pretrained`` with ``use_safetensors=True``; ``path`` is a local dir or a hub ID.
    ``architecture``: the shape declared for the memory preflight (:mod:`unlearn.memory`), unused here.

    When ``path`` is not a local folder and the hub is unreachable, fail at once with a hint.
    """
    from unlearn.models.noise import quiet_third_party

    quiet_third_party()  # torchao's CUDA-kernel and pytree notices (unlearn/models/noise.py)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unlearn.hub import hub_reachable, offline_mode

    local = Path(path).expanduser()
    if local.is_dir():
        check_safetensors_folder(local)
        source = str(local)
    else:
        if not offline_mode() and not hub_reachable():
            raise HubUnavailableError(
                f"cannot reach the Hugging Face hub to download {path}. Pass model.path=/local/dir "
                "holding its safetensors weights, or set HF_HUB_OFFLINE=1 to use the HF cache"
            )
        source = path
    kwargs = dict(trust_remote_code=trust_remote_code, revision=revision)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=resolve_dtype(dtype), use_safetensors=True, **kwargs
        )
    except OSError as exc:
        offline = (" (offline mode is set and the HF cache holds no copy of it)"
                   if offline_mode() and not local.is_dir() else "")
        raise ModelLoadError(
            f"could not load {path}{offline}: {exc}. Pass model.path=/local/dir with safetensors weights"
        ) from exc
    model.to(resolve_device(device))
    return LoadedModel(model, prepare_tokenizer(tokenizer), name or path, source)
