"""What a run *is*, as a label: one torch-free place that names a method from its config.

    <loss>+<aggregator>[<optimizer>,<aggregation metric>]

* loss and aggregator: the ``_target_`` class names, lowercased, with the few short names below
  (``GradientAscent`` → ``ga``, ``DualSpace`` → ``dual``, ``WeightedSum`` → ``weighted_sum``);
  ``uce_bounded`` for ``loss.bounded=true``;
* the bracket appears only when the update rule differs from the default (AdamW, Euclidean
  aggregation): ``uce+dual[sgd]``, ``uce+dual[metricadam,preconditioned]``. Runs that differ only
  in the optimizer therefore never share a table row.

Works on a plain mapping (a run dir's ``.hydra/config.yaml`` read without resolving, or
``OmegaConf.to_container`` of a composed config), so the results module needs neither torch nor
Hydra to label old runs. A new loss, aggregator or optimizer needs no entry here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SHORT_NAMES = {"gradientascent": "ga", "dualspace": "dual", "weightedsum": "weighted_sum"}
DEFAULT_OPTIMIZER = "adamw"
DEFAULT_METRIC = "euclidean"


def _class_name(node: Any) -> str:
    target = str(node.get("_target_", "?")) if isinstance(node, Mapping) else "?"
    name = target.rsplit(".", 1)[-1].lower()
    return SHORT_NAMES.get(name, name)


def method_label(config: Mapping[str, Any]) -> str:
    """The method's label, e.g. ``uce+dual`` or ``uce+mgda[sgd]`` (see the module docstring)."""
    loss_node = config.get("loss")
    loss = _class_name(loss_node)
    if isinstance(loss_node, Mapping) and loss_node.get("bounded"):
        loss += "_bounded"
    label = f"{loss}+{_class_name(config.get('aggregator'))}"
    trainer = config.get("trainer") if isinstance(config.get("trainer"), Mapping) else {}
    update = []
    optimizer = trainer.get("optimizer")
    if isinstance(optimizer, Mapping) and "_target_" in optimizer:
        name = _class_name(optimizer)
        if name != DEFAULT_OPTIMIZER:
            update.append(name)
    metric = str(trainer.get("aggregation_metric", DEFAULT_METRIC))
    if metric != DEFAULT_METRIC:
        update.append(metric)
    return label + (f"[{','.join(update)}]" if update else "")
