"""Loading a judge's Hugging Face checkpoint: one place for the hub check, safetensors-only
loading and the error that names ``judge.path`` (beaver-dam, Llama Guard, HarmBench)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unlearn.errors import HubUnavailableError, ModelLoadError
from unlearn.models.loaded import resolve_dtype


def load_judge_checkpoint(model_class: Any, name: str, path: str, revision: str | None, dtype: str,
                          use_safetensors: bool, hint: str) -> tuple[Any, Any]:
    """``(tokenizer, model)`` from the local folder ``path`` or the hub id ``path``, with
    ``trust_remote_code`` off and a pad token (EOS if the tokenizer has none). Raises
    HubUnavailableError when the hub is needed and unreachable, ModelLoadError when loading fails;
    both end with ``hint``."""
    from transformers import AutoTokenizer

    from unlearn.hub import hub_reachable, offline_mode

    local = Path(path).expanduser()
    if not local.is_dir() and not offline_mode() and not hub_reachable():
        raise HubUnavailableError(f"cannot reach the Hugging Face hub to download {path}; {hint}")
    source = str(local) if local.is_dir() else path
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=False)
        model = model_class.from_pretrained(source, revision=revision, dtype=resolve_dtype(dtype),
                                            use_safetensors=use_safetensors, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"could not load the {name} judge from judge.path={path}: {str(exc).rstrip('. ')}. "
            f"{hint[0].upper()}{hint[1:]}; if the checkpoint has only pickled *.bin weights, convert it to "
            "safetensors or pass judge.use_safetensors=false for a source you trust") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model
