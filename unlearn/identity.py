"""What a run *is*: its method's label and the settings that change its result, in one
torch-free place used by runs, resume, sweeps, the evaluation cache and the tables.

**Label**::

    <loss>+<aggregator>[<optimizer>,<aggregation metric>]
    <loss>,<objective>,…+<aggregator>[…]      (objectives other than MOLLM's forget, kl, retain)

* loss and aggregator: the ``_target_`` class names, lowercased, with the few short names below
  (``GradientAscent`` → ``ga``, ``DualSpace`` → ``dual``, ``WeightedSum`` → ``weighted_sum``);
  ``uce_bounded`` for ``loss.bounded=true``;
* objectives: when the ``objectives`` list is not MOLLM's (``forget``, ``kl``, ``retain``), its
  names in order, ``forget`` written as the loss: Yao et al.'s ``ga,mismatch,kl+weighted_sum``;
* the bracket appears only when the update rule differs from the default (AdamW, Euclidean
  aggregation): ``uce+dual[sgd]``, ``uce+dual[metricadam,preconditioned]``. Runs that differ only
  in the optimizer therefore never share a table row.

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
import sys
from collections.abc import Collection, Mapping
from fnmatch import fnmatchcase
from typing import Any

SHORT_NAMES = {"gradientascent": "ga", "dualspace": "dual", "weightedsum": "weighted_sum"}
DEFAULT_OPTIMIZER = "adamw"
DEFAULT_METRIC = "euclidean"
DEFAULT_OBJECTIVES = ("forget", "kl", "retain")  # MOLLM's: unlearn.training.objectives.OBJECTIVES


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
    objectives = config.get("objectives")
    names = tuple(objectives) if isinstance(objectives, Mapping) else DEFAULT_OBJECTIVES
    if names != DEFAULT_OBJECTIVES:
        loss = ",".join(loss if n == "forget" else n for n in names)
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
