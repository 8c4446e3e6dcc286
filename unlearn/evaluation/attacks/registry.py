"""``eval.attacks`` entries → :class:`~.base.Attack` objects, and running them.

An entry is an option name of ``conf/attack/`` or a mapping with ``_target_`` (see the package
docstring). Errors name the entry and the fix: an unknown option lists the known ones, a target
that cannot be imported or is no :class:`~.base.Attack` says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unlearn.evaluation.attacks.base import Attack, AttackConfigError, AttackContext, outcome_metrics

ATTACK_CONF = Path(__file__).resolve().parents[3] / "conf" / "attack"


def known_options(conf_dir: Path = ATTACK_CONF) -> list[str]:
    return sorted(p.stem for p in conf_dir.glob("*.yaml"))


def attack_configs(entries: Sequence[Any] | None, conf_dir: Path = ATTACK_CONF) -> list[dict[str, Any]]:
    """Each entry as a plain ``{_target_: …, …}`` dict (option names read from ``conf_dir``)."""
    from omegaconf import OmegaConf

    out = []
    for entry in entries or []:
        if OmegaConf.is_config(entry):
            entry = OmegaConf.to_container(entry, resolve=True)
        if isinstance(entry, str):
            path = conf_dir / f"{entry}.yaml"
            if not path.is_file():
                raise AttackConfigError(f"eval.attacks: unknown attack {entry!r}; choose from "
                                        f"{known_options(conf_dir)} (conf/attack/) or give a mapping with _target_")
            entry = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        if not isinstance(entry, dict) or "_target_" not in entry:
            raise AttackConfigError(f"eval.attacks: entry {entry!r} is neither an option of conf/attack/ "
                                    f"({known_options(conf_dir)}) nor a mapping with a _target_")
        out.append(entry)
    return out


def build_attacks(entries: Sequence[Any] | None, conf_dir: Path = ATTACK_CONF) -> list[Attack]:
    """Instantiate every entry; duplicate names are refused (their keys would collide)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    attacks: list[Attack] = []
    for config in attack_configs(entries, conf_dir):
        try:
            attack = instantiate(config)
        except InstantiationException as exc:
            cause = exc.__cause__
            if isinstance(cause, AttackConfigError):
                raise cause from None
            raise AttackConfigError(f"eval.attacks: cannot build {config['_target_']!r} ({cause or exc}); "
                                    "check the _target_ path and the settings of the entry") from None
        if not isinstance(attack, Attack):
            raise AttackConfigError(f"eval.attacks: {config['_target_']!r} is not an Attack subclass "
                                    "(unlearn.evaluation.attacks.base.Attack)")
        attacks.append(attack)
    names = [a.name for a in attacks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise AttackConfigError(f"eval.attacks: two attacks are named {duplicates}; give one of them name=…")
    return attacks


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
