"""OmegaConf resolvers the configs use, registered by the entry points before Hydra composes.

* ``${method_label:}`` — the run's method label (:func:`unlearn.identity.method_label`, from the
  composed config and Hydra's choices), e.g. ``uce+dual``: experiments name their run dirs
  ``${method_label:}/seed=${seed}``, so a run's folder says what it ran and is the same however
  it was launched (the sweep driver, a plain multirun, one run).
* ``${sweep_run_dir:<sweep dir>,<method label>,<seed>}`` — that run's dir,
  ``<sweep dir>/<label>/seed=<seed>``, or null for the label ``original`` (the configured model):
  how experiment=robustness finds the models of the sweep it attacks.
* ``${eq:<a>,<b>}`` — a == b: e.g. ``trainer.save_model: ${eq:${seed},0}`` keeps one seed's models.
* ``${dir_name:<text>}`` — ``text`` as one file name of at most :data:`MAX_DIR_NAME` characters:
  unchanged when it fits, else its head and an 8-hex sha256 of the whole, so distinct texts keep
  distinct names. A plain multirun names each job dir after its overrides, which pass the file
  systems' 255-byte limit ("File name too long") with a few long values.
"""

from __future__ import annotations

import hashlib
import os

from omegaconf import OmegaConf

from unlearn.identity import hydra_label_context, method_label


def _method_label(*, _root_) -> str:
    config = OmegaConf.to_container(_root_, resolve=False)
    hydra_node = config.pop("hydra", None)
    return method_label(config, *hydra_label_context(hydra_node)).replace(os.sep, "_")


def _sweep_run_dir(sweep_dir: str, method: str, seed: int) -> str | None:
    return None if method == "original" else f"{sweep_dir}/{method}/seed={seed}"


def _eq(a: object, b: object) -> bool:
    return a == b


MAX_DIR_NAME = 120  # characters; leaves room for the job number and a suffix under 255 bytes


def _dir_name(text: object) -> str:
    name = str(text)
    if len(name.encode()) <= MAX_DIR_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    head = name.encode()[: MAX_DIR_NAME - len(digest) - 1].decode(errors="ignore")
    return f"{head}-{digest}"


def register_resolvers() -> None:
    """Register the resolvers above (idempotent)."""
    if not OmegaConf.has_resolver("method_label"):
        OmegaConf.register_new_resolver("method_label", _method_label, use_cache=False)
    if not OmegaConf.has_resolver("sweep_run_dir"):
        OmegaConf.register_new_resolver("sweep_run_dir", _sweep_run_dir, use_cache=False)
    if not OmegaConf.has_resolver("eq"):
        OmegaConf.register_new_resolver("eq", _eq)
    if not OmegaConf.has_resolver("dir_name"):
        OmegaConf.register_new_resolver("dir_name", _dir_name)
