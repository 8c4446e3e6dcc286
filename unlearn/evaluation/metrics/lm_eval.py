"""General utility on standard benchmarks: lm-evaluation-harness tasks on the model under
evaluation (:mod:`unlearn.evaluation.lm_eval_backend`; the in-memory model, no copy).

    lm_eval/<task>/<metric> = mean_d m(d) over the task's documents d   (e.g. acc ∈ {0, 1})

with a bootstrap interval over documents, the task's document count ``lm_eval/<task>/n`` and
lm-eval's own ``_stderr``. Per document: ``lm_eval_<task>.jsonl`` (``doc_id``, ``value`` of the
declared ``metric``), so the tables give seeds × documents intervals and pair methods on them.

The default task, ``mmlu_dev_offline`` (conf/lm_eval_tasks/), needs no network: MMLU's 282 dev
questions as shipped in the lm-eval package (MIT). Hub tasks (``mmlu``, ``arc_easy``,
``hellaswag``…) need the Hugging Face hub or its cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from unlearn.evaluation.metrics.base import EvalContext, Metric, MetricOutput, require
from unlearn.evaluation.metrics.columns import Column


class LmEvalTasks(Metric):
    name = "lm_eval"

    def __init__(self, tasks: Sequence[str] = ("mmlu_dev_offline",), metric: str = "acc",
                 include_path: str | None = None, limit: int | None = None, num_fewshot: int | None = None,
                 batch_size: int = 8, include_defaults: bool = True) -> None:
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        require(bool(tasks), self.name, "tasks is empty; name at least one lm-eval task (e.g. mmlu_dev_offline)")
        require(limit is None or int(limit) >= 1, self.name, f"limit must be ≥ 1 or null, got {limit}")
        require(int(batch_size) >= 1, self.name, f"batch_size must be ≥ 1, got {batch_size}")
        self.tasks, self.metric = tasks, str(metric)
        self.include_path = include_path
        self.limit, self.num_fewshot, self.batch_size = limit, num_fewshot, int(batch_size)
        self.include_defaults = include_defaults
        self.columns = tuple(
            Column(f"lm_eval/{t}/{self.metric}", f"{t} {self.metric}", "higher", 3, examples=f"lm_eval_{t}")
            for t in self.tasks)

    def compute(self, ctx: EvalContext) -> MetricOutput:
        from unlearn.evaluation.lm_eval_backend import OFFLINE_TASKS_DIR, evaluate_tasks
        from unlearn.uncertainty import mean_interval

        result = evaluate_tasks(ctx.model, ctx.tokenizer, self.tasks,
                                include_path=str(self.include_path or OFFLINE_TASKS_DIR), limit=self.limit,
                                num_fewshot=self.num_fewshot, batch_size=self.batch_size,
                                include_defaults=self.include_defaults)
        out = MetricOutput(values={f"lm_eval/{k}": v for k, v in result.metrics.items()},
                           labels={"eval/lm_eval": f"lm-eval {result.lm_eval_version}: {', '.join(self.tasks)}"})
        for task in self.tasks:
            key = f"{task}/{self.metric}"
            values = result.samples.get(key)
            require(values is not None, self.name, f"task {task} reports no per-document {self.metric!r} "
                    f"(it has {sorted(k for k in result.samples if k.startswith(task + '/'))}); set metric=")
            out.intervals[f"lm_eval/{key}"] = mean_interval(values, **ctx.bootstrap)
            out.files[f"lm_eval_{task}"] = [{"doc_id": d, "value": v}
                                            for d, v in zip(result.doc_ids[task], values, strict=True)]
        return out

    def settings(self) -> dict[str, object]:
        """The installed lm-eval version and the task files of the include path (both change the result)."""
        from importlib.metadata import PackageNotFoundError, version

        from unlearn.evaluation.lm_eval_backend import OFFLINE_TASKS_DIR

        try:
            installed = version("lm-eval")
        except PackageNotFoundError:
            installed = None
        root = Path(self.include_path or OFFLINE_TASKS_DIR)
        return {"lm_eval": installed, "task_files": {str(p.relative_to(root)): p.read_text(encoding="utf-8")
                                                     for p in sorted(root.rglob("*")) if p.suffix in (".yaml", ".py")}}
