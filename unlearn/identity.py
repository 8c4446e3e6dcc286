"""What a run *is*: its method's label and the settings that change its result, in one
torch-free place used by runs, resume, sweeps, the evaluation cache and the tables.

**Label**::

    <loss>+<aggregator>[<optimizer>,<aggregation metric>]
    <loss>,<objective>,…+<aggregator>[…]      (objectives other than MOLLM's forget, kl, retain)

* loss, aggregator, optimizer: the name of the option file of the config group (``conf/loss/``,
  …, and any folder on Hydra's search path) whose ``_target_`` matches and whose values differ
  least from the run's (ties: the option Hydra's ``hydra.runtime.choices`` records): ``uce``,
  ``dual``, ``weighted_sum``; so ``loss=uce loss.bounded=true`` is ``uce_bounded``, as
  ``loss=uce_bounded`` is. A component with no option file gets its class name, lowercased;
* each name carries, in parentheses, the hyperparameters that differ from that option file:
  ``ga+weighted_sum(weights=0.5,1,1)``, ``dual(rank_tol=0.01)``, so two runs with other
  settings of one component never share a row (the optimizer's ``lr``, which every row of a grid
  sets, is shown in the table notes instead, and a row mixing rates is flagged there);
* objectives: when the ``objectives`` list is not MOLLM's (``forget``, ``kl``, ``retain``), its
  names in order, ``forget`` written as the loss: Yao et al.'s ``ga,mismatch,kl+weighted_sum``;
* the bracket appears only when the update rule differs from the default (AdamW, Euclidean
  aggregation): ``uce+dual[sgd]``, ``uce+dual[metric_adam,preconditioned]``.

A new loss, aggregator or optimizer therefore needs no entry anywhere: its option file names it.
:func:`parse_label` splits a label back into these parts, for the tables that group rows by them.

**Result settings**: every config key changes a result unless it matches a pattern of
:data:`NON_RESULT_KEYS` (each with the reason it cannot change a number). So a new loss,
aggregator or optimizer, with whatever keys it brings, needs no entry anywhere: its keys count.

* :func:`result_config` — the config without the non-result keys (a plain dict);
* :func:`settings_fingerprint` — ``sha256(json.dumps(result_config(c), sort_keys=True))``;
* :func:`config_differences` — the dotted keys whose result-changing values differ.

Works on a plain mapping (a run dir's ``.hydra/config.yaml`` read without resolving, or
``OmegaConf.to_container`` of a composed config) or a ``DictConfig`` (resolved), so the results
module needs neither torch nor Hydra to label or compare old runs.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path
from typing import Any

_MISSING = object()

DEFAULT_OPTIMIZER = "adamw"
DEFAULT_METRIC = "euclidean"
DEFAULT_OBJECTIVES = ("forget", "kl", "retain")  # MOLLM's: unlearn.training.objectives.OBJECTIVES
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# The method's components: label position -> (config group, where the group's node sits in a run's config)
COMPONENTS = {"loss": ("loss", ("loss",)), "aggregator": ("aggregator", ("aggregator",)),
              "optimizer": ("optimizer", ("trainer", "optimizer"))}
UNLABELLED = {"optimizer": frozenset({"lr"})}  # set by every row of a grid; shown in the table notes


@lru_cache(maxsize=256)
def _option_file(path: str) -> dict[str, Any] | None:
    import yaml

    try:
        value = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(value, dict):
        return None
    value.pop("defaults", None)
    return value


def _options(group: str, search_path: Sequence[str | Path]) -> dict[str, dict[str, Any]]:
    """``{option name: values}`` of a config group's YAML files; as in Hydra, the first folder of
    the search path that has an option wins."""
    out: dict[str, dict[str, Any]] = {}
    for root in search_path:
        folder = Path(root) / group
        for file in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            values = _option_file(str(file))
            if values is not None:
                out.setdefault(file.stem, values)
    return out


def _differences(node: Mapping[str, Any], option: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The node's result-changing values that differ from the option file's (dotted keys)."""
    ours, theirs = _flatten(node), _flatten(option)
    return {k: v for k, v in ours.items()
            if k not in ("_target_", "_partial_") and theirs.get(k, _MISSING) != v and is_result_key(f"{prefix}.{k}")}


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(_format_value(v) for v in value)
    return str(value)


def component_label(role: str, config: Mapping[str, Any], choice: str | None = None,
                    search_path: Sequence[str | Path] = (CONF_DIR,)) -> str | None:
    """``name`` or ``name(key=value,…)`` of one component (module docstring); None when the config
    has no such node or it names no ``_target_``."""
    group, where = COMPONENTS[role]
    node: Any = config
    for key in where:
        node = node.get(key) if isinstance(node, Mapping) else None
    if not isinstance(node, Mapping) or "_target_" not in node:
        return None
    options = _options(group, search_path)
    target = node.get("_target_")
    same = {name: values for name, values in options.items() if values.get("_target_") == target}
    if not same:  # the same class through another import path (unlearn.losses.forget.UCE)
        cls = str(target).rsplit(".", 1)[-1]
        same = {name: values for name, values in options.items()
                if str(values.get("_target_", "")).rsplit(".", 1)[-1] == cls}
    # the option the node is closest to, so a label depends on what ran, not on how it was spelled
    # (loss=uce_bounded and loss=uce loss.bounded=true are one method); ties go to Hydra's choice
    choice = min(same, key=lambda n: (len(_differences(node, same[n], ".".join(where))), n != choice, n), default=None)
    if choice is None:
        return str(target or "?").rsplit(".", 1)[-1].lower()
    changed = {k: v for k, v in _differences(node, options[choice], ".".join(where)).items()
               if k not in UNLABELLED.get(role, ())}
    return choice + (f"({','.join(f'{k}={_format_value(v)}' for k, v in sorted(changed.items()))})" if changed else "")


def method_label(config: Mapping[str, Any], choices: Mapping[str, Any] | None = None,
                 search_path: Sequence[str | Path] | None = None) -> str:
    """The method's label, e.g. ``uce+dual`` or ``ga+weighted_sum(weights=0.5,1,1)[sgd]`` (module
    docstring). ``choices``: Hydra's ``hydra.runtime.choices`` of the run; ``search_path``: the
    folders holding the config groups, then the suite's ``conf/`` (a run records the absolute path
    of the checkout that ran it, which may be gone when its results are built)."""
    path = tuple(dict.fromkeys((*(search_path or ()), CONF_DIR)))
    chosen = dict(choices or {})
    labels = {role: component_label(role, config, chosen.get(COMPONENTS[role][0]), path) for role in COMPONENTS}
    loss = labels["loss"] or "?"
    objectives = config.get("objectives")
    names = tuple(objectives) if isinstance(objectives, Mapping) else DEFAULT_OBJECTIVES
    if names != DEFAULT_OBJECTIVES:
        loss = ",".join(loss if n == "forget" else n for n in names)
    label = f"{loss}+{labels['aggregator'] or '?'}"
    trainer = config.get("trainer") if isinstance(config.get("trainer"), Mapping) else {}
    update = []
    optimizer = labels["optimizer"]
    if optimizer is not None and optimizer != DEFAULT_OPTIMIZER:
        update.append(optimizer)
    metric = str(trainer.get("aggregation_metric", DEFAULT_METRIC))
    if metric != DEFAULT_METRIC:
        update.append(metric)
    return label + (f"[{','.join(update)}]" if update else "")


@dataclass(frozen=True)
class LabelParts:
    """A :func:`method_label` in parts: ``ga,mismatch,kl+weighted_sum(weights=0.5,1,1)[sgd]`` has
    losses ``ga,mismatch,kl``, aggregator ``weighted_sum(weights=0.5,1,1)`` and update rule ``[sgd]``
    (``""``: the default AdamW with the Euclidean metric)."""

    losses: str
    aggregator: str
    update_rule: str

    @property
    def aggregation(self) -> str:
        """The aggregator with its settings and the update rule: ``weighted_sum(weights=0.5,1,1)[sgd]``."""
        return self.aggregator + self.update_rule

    @property
    def aggregator_name(self) -> str:
        """The aggregator without its settings: ``weighted_sum``."""
        return re.sub(r"\([^)]*\)", "", self.aggregator)


def parse_label(label: str) -> LabelParts:
    """The parts of a method label (module docstring); a label without ``+`` is all losses."""
    losses, _, rest = label.partition("+")
    rule = rest[rest.rindex("["):] if rest.endswith("]") and "[" in rest else ""
    return LabelParts(losses, rest[: len(rest) - len(rule)], rule)


def hydra_label_context(hydra_node: Mapping[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """``(choices, search path)`` for :func:`method_label` from a run's ``hydra`` node (the
    ``hydra.runtime`` of ``.hydra/hydra.yaml`` or of a composed config): its file config sources."""
    runtime = (hydra_node or {}).get("runtime") or {}
    sources = [str(s.get("path")) for s in runtime.get("config_sources") or []
               if isinstance(s, Mapping) and s.get("schema") == "file" and s.get("path")]
    return dict(runtime.get("choices") or {}), sources


# ----------------------------------------------------------------------------- result settings

# Dotted-key patterns of the settings that cannot change a result. A pattern matches a key when
# its segments match the key's first segments (``fnmatch`` per segment: ``*`` is one segment), so
# ``logger`` covers ``logger.mode``. Everything not matched here changes a result.
NON_RESULT_KEYS: dict[str, str] = {
    # where things are read from or written to
    "output_root": "where run dirs go; the run itself is the same",
    "data_dir": "where the local data copies live; the data content is checked apart (resume: "
                "sha256 of the training examples; evaluation cache: sha256 of the prompts and answers)",
    "dataset.*.data_dir": "the same path, as each split's loader receives it",
    "*.data_dir": "the same path, as a judge that reads local data receives it (its training rows are hashed into the judge cache key)",
    "cache_dir": "where derived artefacts (model safetensors, judges, evaluations) are cached",
    "*.cache_dir": "the same cache, as a component receives it",
    "hydra": "Hydra's own settings: run and sweep dirs, launcher, job name",
    "grid": "an experiment's rows and seeds: which runs a sweep contains, not how one of them runs",
    # how a run is watched
    "logger": "W&B mode, project, entity, group, tags: where metrics are sent, not what they are",
    "*.progress_bar": "a tqdm bar on the terminal",
    # how a run is kept or resumed
    "resume": "continue from the newest checkpoint: resume is exact (tests/test_checkpoint_resume.py)",
    "trainer.checkpoint_every": "checkpoint cadence: saving reads state and draws no random numbers",
    "trainer.keep_checkpoints": "how many checkpoints stay on disk",
    "trainer.save_model": "whether the trained weights are written to the run dir",
    "trainer.max_consecutive_skips": "only decides when a run is abandoned; a run that completes made "
                                     "the same steps under any value it did not reach",
    "eval.cache": "reuse of the original model's evaluation, keyed on the result settings of "
                  "model, dataset, eval, judge and scorer and on the texts evaluated",
    "eval.save_generations": "whether the answers are written to generations.jsonl",
    "eval.every_n_steps": "extra evaluations during training, under a preserved RNG: training and "
                          "the before/after numbers are unchanged",
    "eval.every_n_prompts": "the size of those extra evaluations",
    "model.architecture": "the model's shape declared for the memory estimate; the loaded weights decide the run",
    "trainer.memory_check": "whether a config estimated not to fit is refused before loading",
    # how the arithmetic is laid out over devices: memory and speed, not what is computed
    "trainer.strategy": "single, ddp or fsdp: the same per-objective mean gradients, Gramian and "
                        "update, summed in another order (fsdp = a one-process replay within 1e-6, "
                        "tests/test_fsdp.py); declared non-result like threads (note below)",
    "trainer.fsdp.reshard_after_forward": "whether gathered weights are kept between forward and "
                                          "backward: memory only, the same numbers",
    "trainer.gradient_checkpointing": "activations recomputed in the backward pass instead of kept: "
                                      "the same losses and gradients (tests/test_memory.py)",
    # where the arithmetic runs: declared non-result (see the note below)
    "threads": "torch CPU threads: declared non-result (note below)",
    "*.device": "cpu / cuda / auto for a model, judge or scorer: declared non-result (note below)",
}
# Note on threads and device. Neither changes what is computed, only how: the thread count changes
# the order of floating-point reductions in a few kernels and the device changes the kernels, so a
# run may differ from another in the last bits, not bit for bit (tiny_random, 5 steps, threads=1
# vs 2: per-step losses within 1.1e-7 relative, final losses equal); such differences are far
# below seed-to-seed variation. They are declared non-result so that a sweep can be finished, or a run
# resumed, with another thread count (`make paper-tables` runs threads=1 jobs of an experiment
# that says threads=2) or on another machine. dtype is a result setting.

# Top-level groups used only to evaluate, never to train: a resumed run may change them.
EVALUATION_GROUPS: frozenset[str] = frozenset({"eval", "judge", "scorer"})


def non_result_pattern(dotted: str) -> str | None:
    """The :data:`NON_RESULT_KEYS` pattern that ``dotted`` (e.g. ``trainer.progress_bar``)
    matches, or None when the key changes a result."""
    parts = dotted.split(".")
    for pattern in NON_RESULT_KEYS:
        pat = pattern.split(".")
        if len(pat) <= len(parts) and all(fnmatchcase(k, p) for k, p in zip(parts, pat)):
            return pattern
    return None


def is_result_key(dotted: str) -> bool:
    """True when ``dotted`` changes a result (it matches no :data:`NON_RESULT_KEYS` pattern)."""
    return non_result_pattern(dotted) is None


def _plain(config: Any, groups: Collection[str] | None) -> dict[str, Any]:
    """The selected top-level result entries as plain containers (a DictConfig is resolved)."""
    keys = [k for k in config if (groups is None or k in groups) and is_result_key(str(k))]
    omegaconf = sys.modules.get("omegaconf")  # a DictConfig exists only once omegaconf is imported
    if omegaconf is not None and omegaconf.OmegaConf.is_config(config):
        to_plain = omegaconf.OmegaConf.to_container
        return {k: to_plain(config[k], resolve=True) if omegaconf.OmegaConf.is_config(config[k]) else config[k]
                for k in keys}
    return {k: config[k] for k in keys}


def _prune(node: Any, prefix: str) -> Any:
    if not isinstance(node, Mapping):
        return node
    out = {}
    for key, value in node.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if is_result_key(dotted):
            out[str(key)] = _prune(value, dotted)
    return out


def result_config(config: Mapping[str, Any], groups: Collection[str] | None = None) -> dict[str, Any]:
    """``config`` (only the top-level ``groups``, default all) without its non-result keys."""
    return _prune(_plain(config, groups), "")


def settings_fingerprint(config: Mapping[str, Any], groups: Collection[str] | None = None) -> str:
    """SHA-256 hex of ``json.dumps(result_config(config, groups), sort_keys=True)``."""
    text = json.dumps(result_config(config, groups), sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping) and (node or not prefix):  # an empty group stays a value
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def result_settings(config: Mapping[str, Any], groups: Collection[str] | None = None) -> dict[str, Any]:
    """The result settings flattened to ``{dotted key: value}`` (lists stay values)."""
    return _flatten(result_config(config, groups))


def config_differences(a: Mapping[str, Any], b: Mapping[str, Any],
                       groups: Collection[str] | None = None) -> list[str]:
    """Sorted dotted keys whose result-changing values differ (a key present in one only differs)."""
    fa, fb = result_settings(a, groups), result_settings(b, groups)
    missing = object()
    return [k for k in sorted(set(fa) | set(fb)) if fa.get(k, missing) != fb.get(k, missing)]


def training_groups(config: Mapping[str, Any]) -> list[str]:
    """The top-level keys that shape training: all but :data:`EVALUATION_GROUPS`."""
    return [str(k) for k in config if k not in EVALUATION_GROUPS]
