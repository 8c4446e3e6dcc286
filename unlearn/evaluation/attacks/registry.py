"""``eval.attacks`` entries → :class:`~.base.Attack` objects (:mod:`unlearn.evaluation.registry`),
and running them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unlearn.evaluation import registry
from unlearn.evaluation.attacks.base import Attack, AttackConfigError, AttackContext, outcome_metrics

ATTACK_CONF = registry.CONF / "attack"


def known_options(conf_dir: Path = ATTACK_CONF) -> list[str]:
    return registry.known_options(conf_dir)


def attack_configs(entries: Sequence[Any] | None, conf_dir: Path = ATTACK_CONF) -> list[dict[str, Any]]:
    """Each entry as a plain ``{_target_: …, …}`` dict (option names read from ``conf_dir``)."""
    return registry.entry_configs(entries, conf_dir, "attacks", AttackConfigError)


def build_attacks(entries: Sequence[Any] | None, conf_dir: Path = ATTACK_CONF) -> list[Attack]:
    """Instantiate every entry; duplicate names are refused (their keys would collide)."""
    return registry.build_entries(entries, conf_dir, "attacks", Attack, AttackConfigError)


def run_attacks(attacks: Sequence[Attack], model, ctx: AttackContext, plain: dict[str, float]
                ) -> tuple[dict[str, float], dict[str, str], dict[str, list[dict[str, Any]]]]:
    """Metrics (``attack/<name>/…``), labels (``attack/<name>`` → text) and records per outcome.
    ``plain`` maps each prompt to its plain-evaluation harmful verdict (for the rebound)."""
    metrics: dict[str, float] = {}
    labels: dict[str, str] = {}
    records: dict[str, list[dict[str, Any]]] = {}
    for attack in attacks:
        for outcome in attack.run(model, ctx):
            metrics.update(outcome_metrics(outcome, plain, ctx.bootstrap))
            labels[f"attack/{outcome.name}"] = outcome.label
            records[outcome.name] = outcome.records
    return metrics, labels, records
