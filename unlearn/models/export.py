"""Saving the trained model into the run dir, atomically.

``<run dir>/model`` is written into a temporary folder beside it and renamed into place once
complete, so a run killed (or out of disk) while saving leaves the previous complete ``model/``
or none, never half of one; a resumed run saves it again.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from unlearn.cache import publish, temp_path
from unlearn.errors import disk_full


def save_model(model: Any, tokenizer: Any, target: Path) -> Path:
    """``model`` (safetensors) and ``tokenizer`` into ``target``, atomically; a full disk raises
    :class:`~unlearn.errors.DiskFullError` naming the folder to free."""
    target = Path(target)
    tmp = temp_path(target)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        publish(tmp, target)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        full = disk_full(exc, target.parent, f"the model ({target})")
        if full is not None:
            raise full from exc
        raise
    return target


__all__ = ["save_model"]
