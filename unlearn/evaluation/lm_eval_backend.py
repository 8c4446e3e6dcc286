"""General utility on standard benchmarks through EleutherAI's lm-evaluation-harness.

:func:`evaluate_tasks` scores the in-memory model (no copy, no move, no request cache) on lm-eval
tasks: the harness's own (which download their data from the Hugging Face hub) or task YAMLs in
``include_path`` folders, e.g. :data:`OFFLINE_TASKS_DIR`, whose ``mmlu_dev_offline`` task needs
no network. Metrics come back flat::

    {"<task>/acc": 0.41, "<task>/acc_stderr": 0.03, "<task>/n": 282, ...}

lm-eval's default filter suffix ``,none`` is dropped; other filters keep lm-eval's notation
(``"gsm8k/exact_match,strict-match"``). Per-document values of scalar metrics are kept too,
ordered by document id, so that two models scored on the same task can be paired or bootstrapped.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unlearn.errors import HubUnavailableError, UnlearnError

LM_EVAL_VERSION = "0.4.13"  # the version pyproject.toml pins and the tests ran with
OFFLINE_TASKS_DIR = Path(__file__).resolve().parents[2] / "conf" / "lm_eval_tasks"


class LmEvalUnavailableError(UnlearnError):
    """The lm-eval package is not installed."""


class UnknownTaskError(UnlearnError):
    """A task name is neither an lm-eval task, group or tag, nor a task YAML file."""


@dataclass
class LmEvalResult:
    """Flat metrics, per-document values of scalar metrics, and their document ids.

    ``samples[key][i]`` is the value for document ``doc_ids[task][i]``, where ``key`` is
    ``"<task>/<metric>"`` (keys as in ``metrics``); ``metrics[key]`` is their mean for ``mean``
    metrics such as ``acc``. Groups have metrics (lm-eval's aggregate) but no samples.
    """

    metrics: dict[str, float]
    samples: dict[str, list[float]] = field(default_factory=dict)
    doc_ids: dict[str, list[int]] = field(default_factory=dict)
    lm_eval_version: str = ""


def _import_lm_eval():
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise LmEvalUnavailableError(
            f"lm-eval is not installed ({exc}); pip install lm-eval=={LM_EVAL_VERSION} "
            "(or pip install -e '.[test]')"
        ) from exc
    return lm_eval, HFLM, TaskManager


def _check_names(tasks: Sequence[str], known: Sequence[str], include_path: Any) -> None:
    import difflib

    known_set = set(known)
    unknown = [t for t in tasks if t not in known_set and not Path(t).is_file()]
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=3)
        hints.append(f"{name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    raise UnknownTaskError(
        f"unknown lm-eval task {', '.join(hints)} (include_path={include_path!r}). Check the "
        "name, or pass include_path= a folder holding a task YAML for it (e.g. "
        f"{OFFLINE_TASKS_DIR}); lm-eval's own tasks download their data sets from the Hugging "
        "Face hub, which needs network access or a copy in the HF datasets cache."
    )


def _number(value: Any) -> float:
    """A metric value as float; lm-eval writes 'N/A' for a stderr it could not compute."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _flatten(results: Mapping[str, Any]) -> dict[str, float]:
    """{"<task>/<metric>[,<filter>]": value} from lm-eval's ``results`` block."""
    flat: dict[str, float] = {}
    for task, row in results.items():
        for key, value in row.items():
            if "," not in key:  # alias, name, sample_len
                continue
            metric, filt = key.split(",", 1)
            flat[f"{task}/{metric}" + ("" if filt == "none" else f",{filt}")] = _number(value)
    return flat


def _counts(out: Mapping[str, Any]) -> dict[str, int]:
    """Documents scored per task in the results; a group counts those of its leaf tasks."""
    leaves = {t: int(c["effective"]) for t, c in out.get("n-samples", {}).items()}
    children = out.get("group_subtasks", {})

    def count(name: str) -> int:
        if name in leaves:
            return leaves[name]
        return sum(count(child) for child in children.get(name, []))

    return {name: count(name) for name in out.get("results", {})}


def _per_doc(samples: Mapping[str, list[dict[str, Any]]]):
    """Scalar per-document metric values, ordered by doc id, and the ids per task."""
    values: dict[str, list[float]] = {}
    ids: dict[str, list[int]] = {}
    for task, records in samples.items():
        records = sorted(records, key=lambda r: r["doc_id"])
        ids[task] = sorted({int(r["doc_id"]) for r in records})
        for record in records:
            filt = record.get("filter", "none")
            for metric in record.get("metrics", []):
                value = record.get(metric)
                if isinstance(value, (bool, int, float)):
                    key = f"{task}/{metric}" + ("" if filt == "none" else f",{filt}")
                    values.setdefault(key, []).append(float(value))
    return values, ids


def evaluate_tasks(
    model,
    tokenizer,
    tasks: Sequence[str],
    include_path: str | Path | Sequence[str | Path] | None = None,
    limit: int | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    include_defaults: bool = True,
    bootstrap_iters: int = 1000,
) -> LmEvalResult:
    """Score ``model`` (a transformers causal LM, on its own device) on lm-eval ``tasks``.

    ``include_path``: folder(s) of task YAMLs besides lm-eval's own (which ``include_defaults``
    adds; indexing them takes ~5 s). ``limit``: the first N documents of each task.
    ``num_fewshot``: overrides the tasks' default (not one that a task fixes at 0).
    ``seed`` seeds lm-eval's Python, NumPy, torch and few-shot RNGs; the caller's RNG states
    are restored afterwards, and so are the train/eval modes of the model's modules.
    ``bootstrap_iters`` is used for the stderr of non-mean metrics (0: no stderr at all).
    """
    import torch

    lm_eval, HFLM, TaskManager = _import_lm_eval()
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    if not tasks:
        raise ValueError("tasks is empty: name at least one lm-eval task")
    manager = TaskManager(include_path=include_path, include_defaults=include_defaults)
    _check_names(tasks, manager.all_tasks, include_path)

    modes = [(module, module.training) for module in model.modules()]
    pad_token = tokenizer.pad_token  # HFLM sets one when missing; it is put back below
    py_state, np_state = random.getstate(), np.random.get_state()
    device = next(model.parameters()).device
    cuda = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
            out = lm_eval.simple_evaluate(
                model=lm, tasks=tasks, task_manager=manager, limit=limit,
                num_fewshot=num_fewshot, use_cache=None, cache_requests=False, log_samples=True,
                bootstrap_iters=bootstrap_iters, random_seed=seed, numpy_random_seed=seed,
                torch_random_seed=seed, fewshot_random_seed=seed,
            )
    except ConnectionError as exc:  # datasets' error when a hub data set cannot be fetched
        raise HubUnavailableError(
            f"lm-eval could not fetch a data set for {tasks} from the Hugging Face hub: {exc}. "
            "Run where the hub is reachable (or with the data set in the HF cache), or pass "
            f"include_path= a folder of local task YAMLs such as {OFFLINE_TASKS_DIR}."
        ) from exc
    finally:
        for module, training in modes:
            module.train(training)
        if pad_token is None:
            tokenizer.pad_token = None
        random.setstate(py_state)
        np.random.set_state(np_state)

    if out is None:  # lm-eval returns None on non-zero ranks
        raise RuntimeError("lm-eval returned no results (not the rank-0 process?)")
    metrics = _flatten(out["results"])
    metrics.update({f"{t}/n": n for t, n in _counts(out).items()})
    samples, doc_ids = _per_doc(out.get("samples", {}))
    return LmEvalResult(dict(sorted(metrics.items())), samples, doc_ids, lm_eval.__version__)
