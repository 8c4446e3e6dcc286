"""Evaluation metrics as a ``_target_`` list (``eval.metrics``): one module and one
``conf/metric/<name>.yaml`` each (see :mod:`.base`). Defaults: ``harmful_rate``, ``toxicity``,
``fluency``, ``diversity``, ``utility``, ``answers``, ``behaviour``; optional: ``freshqa`` (utility on a benign
set the run never trains on) and ``lm_eval`` (lm-evaluation-harness tasks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unlearn.evaluation import registry
from unlearn.evaluation.metrics.base import EvalContext, Metric, MetricConfigError, MetricOutput
from unlearn.evaluation.metrics.columns import Column

METRIC_CONF = registry.CONF / "metric"


def default_metric_names() -> list[str]:
    """``eval.metrics`` of conf/eval/default.yaml: the one list of the default metrics."""
    from omegaconf import OmegaConf

    return list(OmegaConf.load(registry.CONF / "eval" / "default.yaml").metrics)


def metric_configs(entries: Sequence[Any] | None, conf_dir: Path = METRIC_CONF) -> list[dict[str, Any]]:
    """Each ``eval.metrics`` entry as a plain ``{_target_: …}`` dict."""
    return registry.entry_configs(entries, conf_dir, "metrics", MetricConfigError)


def build_metrics(entries: Sequence[Any] | None, conf_dir: Path = METRIC_CONF) -> list[Metric]:
    return registry.build_entries(entries, conf_dir, "metrics", Metric, MetricConfigError)


__all__ = ["METRIC_CONF", "Column", "default_metric_names", "EvalContext", "Metric", "MetricConfigError", "MetricOutput",
           "build_metrics", "metric_configs"]
