"""Attacks on an (unlearned) model, run by the evaluation after its plain metrics.

``eval.attacks`` is a list; each entry is either the name of an option in ``conf/attack/``
(``relearn``, ``jailbreak``, ``quant_int8``, ``quant_int4``, ``over_refusal``) or a mapping with a
``_target_`` (an :class:`~.base.Attack` subclass) and its settings. Adding an attack is one
module and one YAML; nothing else lists them. See :mod:`.base` for the reported keys.
"""

from unlearn.evaluation.attacks.base import Attack, AttackConfigError, AttackContext, Outcome, outcome_metrics
from unlearn.evaluation.attacks.registry import attack_configs, build_attacks, run_attacks

__all__ = ["Attack", "AttackConfigError", "AttackContext", "Outcome", "attack_configs", "build_attacks",
           "outcome_metrics", "run_attacks"]
