"""OmegaConf resolvers the configs use, registered by the entry points before Hydra composes.

* ``${method_label:}`` — the run's method label (:func:`unlearn.identity.method_label`, from the
  composed config and Hydra's choices), e.g. ``uce+dual``: experiments name their run dirs
  ``${method_label:}/seed=${seed}``, so a run's folder says what it ran and is the same however
  it was launched (the sweep driver, a plain multirun, one run).
* ``${sweep_run_dir:<sweep dir>,<method label>,<seed>}`` — that run's dir,
  ``<sweep dir>/<label>/seed=<seed>``, or null for the label ``original`` (the configured model):
  how experiment=robustness finds the models of the sweep it attacks.
* ``${eq:<a>,<b>}`` — a == b: e.g. ``trainer.save_model: ${eq:${seed},0}`` keeps one seed's models.
"""

from __future__ import annotations

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


def register_resolvers() -> None:
    """Register the resolvers above (idempotent)."""
    if not OmegaConf.has_resolver("method_label"):
        OmegaConf.register_new_resolver("method_label", _method_label, use_cache=False)
    if not OmegaConf.has_resolver("sweep_run_dir"):
        OmegaConf.register_new_resolver("sweep_run_dir", _sweep_run_dir, use_cache=False)
    if not OmegaConf.has_resolver("eq"):
        OmegaConf.register_new_resolver("eq", _eq)
