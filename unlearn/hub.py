"""Fail fast, with a useful message, when a hub download cannot happen.

``datasets.load_dataset`` retries for ~23 s and ``from_pretrained`` can hang when the hub is
unreachable; we probe the endpoint once (3 s timeout) before trying.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline_mode() -> bool:
    """True when the user asked the Hugging Face libraries to stay offline."""
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"} for v in OFFLINE_VARS)


def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connection to the hub endpoint (``HF_ENDPOINT`` or huggingface.co:443)."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def load_hub_dataset(hub_id: str, split: str, name: str | None = None, revision: str | None = None):
    """``datasets.load_dataset(hub_id, name, split=split, revision=revision)`` that fails within
    seconds offline. ``revision``: a commit hash, branch or tag (the pinned ones live in
    :mod:`unlearn.data.layout`); None: the main branch."""
    from unlearn.errors import HubUnavailableError

    where = f"{hub_id}@{revision}" if revision else hub_id
    hint = (
        "Pass data_dir=/path/to/data (or set UNLEARN_DATA_DIR) pointing at local copies (`make data` "
        "writes them on a machine with network; docs/data.md), or set HF_DATASETS_OFFLINE=1 to use a "
        "copy in the HF cache."
    )
    if not offline_mode() and not hub_reachable():
        raise HubUnavailableError(f"cannot reach the Hugging Face hub to download {where}. {hint}")
    import datasets

    try:
        return datasets.load_dataset(hub_id, name, split=split, revision=revision)
    except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFoundError...)
        if offline_mode():
            set_vars = ", ".join(v for v in OFFLINE_VARS if os.environ.get(v))
            hint = (
                f"{set_vars} is set and the HF cache holds no copy of {where}. Pass data_dir="
                "/path/to/data (or set UNLEARN_DATA_DIR) pointing at local copies (`make data` writes "
                "them; docs/data.md), or unset the offline variables on a machine that can reach the hub."
            )
        raise HubUnavailableError(
            f"could not load {where} (split={split}) from the hub or the HF cache: {exc}. {hint}"
        ) from exc
