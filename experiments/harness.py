"""What the experiment scripts share: the composed config, the loaded model, an evaluation context.

Scripts in this folder run as ``python experiments/<name>.py`` (this folder is then on
``sys.path``) and import these helpers as ``from harness import ...``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = os.environ.get("UNLEARN_DATA_DIR", str(REPO.parent / "shared" / "data"))


def compose_config(*overrides: str):
    """``conf/config.yaml`` composed with ``overrides``, as ``python -m unlearn.run`` would."""
    from hydra import compose, initialize_config_dir

    from unlearn.config_resolvers import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def load_model(cfg):
    """The config's model (weights and tokenizer), built from ``cfg.model``."""
    from hydra.utils import instantiate

    return instantiate(cfg.model)


def eval_context(loaded, cfg, **fields: Any):
    """An :class:`~unlearn.evaluation.metrics.EvalContext` for metrics that need no answers: the
    model, the dataset's template and length, and ``fields`` (batch_size, preference_pairs, …)."""
    from unlearn.evaluation.metrics import EvalContext

    normal = fields.pop("normal", [])
    fields = {"template": cfg.dataset.template, "max_length": cfg.dataset.max_length, "progress_bar": False, **fields}
    return EvalContext(loaded.model, loaded.tokenizer, [], [], normal, None, lambda: None, lambda: None, **fields)
