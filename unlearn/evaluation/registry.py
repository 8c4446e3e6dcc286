"""``_target_`` lists of the ``eval`` config (``eval.metrics``, ``eval.attacks``) → objects.

An entry is an option name of the group's folder (``conf/metric/``, ``conf/attack/``) or a
mapping with ``_target_``. Errors name the entry and the fix: an unknown option lists the known
ones, a target that cannot be imported or is not of the expected base class says so, and two
entries with one ``name`` are refused (their summary keys would collide).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

CONF = Path(__file__).resolve().parents[2] / "conf"


def known_options(conf_dir: Path) -> list[str]:
    return sorted(p.stem for p in conf_dir.glob("*.yaml"))


def entry_configs(entries: Sequence[Any] | None, conf_dir: Path, key: str,
                  error: type[Exception]) -> list[dict[str, Any]]:
    noun = key.removesuffix("s")
    """Each entry of ``eval.<key>`` as a plain ``{_target_: …, …}`` dict (option names read from
    ``conf_dir``)."""
    from omegaconf import OmegaConf

    out = []
    for entry in entries or []:
        if OmegaConf.is_config(entry):
            entry = OmegaConf.to_container(entry, resolve=True)
        if isinstance(entry, str):
            path = conf_dir / f"{entry}.yaml"
            if not path.is_file():
                raise error(f"eval.{key}: unknown {noun} {entry!r}; choose from {known_options(conf_dir)} "
                            f"(conf/{conf_dir.name}/) or give a mapping with _target_")
            entry = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        if not isinstance(entry, dict) or "_target_" not in entry:
            raise error(f"eval.{key}: entry {entry!r} is neither an option of conf/{conf_dir.name}/ "
                        f"({known_options(conf_dir)}) nor a mapping with a _target_")
        out.append(entry)
    return out


def build_entries(entries: Sequence[Any] | None, conf_dir: Path, key: str, base: type,
                  error: type[Exception]) -> list[Any]:
    """Instantiate every entry of ``eval.<key>``; each must be a ``base`` with a distinct ``name``."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    built = []
    for config in entry_configs(entries, conf_dir, key, error):
        try:
            obj = instantiate(config)
        except InstantiationException as exc:
            cause = exc.__cause__
            if isinstance(cause, error):
                raise cause from None
            raise error(f"eval.{key}: cannot build {config['_target_']!r} ({cause or exc}); "
                        "check the _target_ path and the settings of the entry") from None
        if not isinstance(obj, base):
            raise error(f"eval.{key}: {config['_target_']!r} is not a subclass of {base.__module__}.{base.__name__}")
        built.append(obj)
    names = [o.name for o in built]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise error(f"eval.{key}: two {key} are named {duplicates}; give one of them name=…")
    return built
