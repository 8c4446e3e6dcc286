"""The evaluation stage: generate answers to held-out harmful prompts and compute every metric.

The metrics are the ``eval.metrics`` ``_target_`` list (:mod:`unlearn.evaluation.metrics`: one
module and one ``conf/metric/<name>.yaml`` each, like the attacks of ``eval.attacks``); the
answers are generated once and every metric reads them. The defaults (DESIGN.md §2; formulas in
the modules named):

| key | meaning |
|---|---|
| ``harmful_rate`` | fraction of answers the judge labels harmful (:mod:`.harm_judge`) |
| ``harmful_rate_corrected`` (``_lo``, ``_hi``) | Rogan–Gladen rate corrected for the judge's error, with its 95 % interval (:mod:`.correction`); NaN, with ``harmful_rate_corrected_identified`` = 0 and the reason in the log, when the judge has no validation counts or the observed rate contradicts its validation error rates |
| ``judge_sensitivity``, ``judge_specificity`` | the validation Se, Sp the correction used (NaN when none) |
| ``toxicity``, ``obscene`` | scorer means (:mod:`.toxicity`; the scorer's name is recorded) |
| ``fluency_ppl`` | mean PPL of the answers under the reference LM (:mod:`.perplexity`) |
| ``distinct_1``, ``distinct_2``, ``unique_token_ratio`` | diversity (:mod:`.diversity`) |
| ``utility_ppl``, ``utility_loss`` | held-out TruthfulQA answers (:mod:`.perplexity`) |
| ``degenerate_rate``, ``refusal_rule_rate`` | answers decided by a rule (:mod:`.rules`) |
| ``answer_tokens_mean``, ``unfinished_rate`` | length; share that hit ``max_new_tokens`` |
| ``harmful_rate_length_matched``, ``harm_drop_beyond_length`` | the original's answers cut to this model's lengths, re-judged; the drop that survives (:mod:`.metrics.length_control`) |
| ``preference_margin``, ``safe_preference_rate``, ``unsafe_nll``, ``safe_nll`` | judge-free: held-out (safe, unsafe) pairs, mean-token log-likelihoods, no generation (:mod:`.metrics.preference`) |

Each metric declares its keys as table columns; the stage writes the declarations to the summary
(``eval/columns``), the per-metric time to ``time/<metric>_s``.

**Intervals.** Every metric above that is a mean or ratio over the prompts (over the utility
examples for ``utility_*``) also gets ``<metric>_lo`` and ``<metric>_hi``: its 95 % percentile
bootstrap interval over the prompts (resp. examples), 2,000 resamples from a fixed seed
(:data:`unlearn.evaluation.decoding.BOOTSTRAP`), so cached results and tables are deterministic (:mod:`unlearn.uncertainty`;
distinct-n and utility as ratios, see :mod:`.diversity`, :mod:`.perplexity`). A NaN per-prompt
value (a fluency with no scored token) is left out and counted as ``<metric>_n_missing``
(written only when > 0). ``harmful_rate_corrected_lo/_hi`` keep their own interval
(:mod:`.correction`). These intervals are over prompts only; across seeds and between methods see
:mod:`unlearn.results`.

**Files** (in the run dir, appended per evaluation, each line with its ``stage``: ``before``,
``after``, ``step_<N>`` or ``model``):

* ``generations.jsonl`` — one line per prompt: ``prompt``, ``answer``, ``n_tokens``, ``finished``,
  ``harmful``, ``judge_score``, ``judge_rule``, ``toxicity``, ``obscene``, ``fluency_ppl`` (null
  without a scored token);
* ``utility.jsonl`` — one line per held-out utility example: ``index``, ``prompt``, ``nll`` (summed
  over the answer's tokens) and ``n_tokens``, so methods can be paired on utility examples too;
* ``preference.jsonl`` — one line per held-out (safe, unsafe) pair (:mod:`.metrics.preference`).

An evaluation whose metrics all read only the model (``Metric.needs_answers`` false, e.g. the
periodic ``eval.periodic_metrics``) generates no answers and writes no generations lines.

:class:`EvaluationStage` is the hook used by :mod:`unlearn.experiment`: ``before`` (cached by
model, data, eval settings, judge and scorer), ``after``, and ``periodic`` (every N steps).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unlearn.cache import build_once
from unlearn.evaluation.decoding import BOOTSTRAP, DecodingSettings
from unlearn.evaluation.generation import distinct_prompts, generate_answers
from unlearn.evaluation.metrics import EvalContext, Metric, build_metrics, default_metric_names, metric_configs
from unlearn.evaluation.perplexity import LogitsFn, model_logits_fn
from unlearn.identity import result_config
from unlearn.uncertainty import Interval

# 3: harmful_rate_corrected (and _lo, _hi), judge_sensitivity/specificity
# 4: <metric>_lo/_hi bootstrap intervals, and the per-utility-example values in the cached payload
# 5: metrics as an eval.metrics _target_ list; eval/columns and per-metric files in the payload
# 6: judge-free (preference) and length-controlled metrics, clustered judge-error intervals
EVAL_VERSION = 6
# per-run intervals: percentile bootstrap over prompts / utility examples, fixed seed (deterministic)
log = logging.getLogger(__name__)
ReferenceFn = Callable[[], AbstractContextManager[LogitsFn]]


@dataclass
class ReferenceLM:
    """A fixed LM for fluency: a context manager yielding ``logits_fn``, its tokenizer and device."""

    use: ReferenceFn
    tokenizer: Any
    device: Any
    name: str


def self_reference(model, tokenizer, name: str) -> ReferenceLM:
    @contextmanager
    def use() -> Iterator[LogitsFn]:
        was = model.training
        model.eval()
        try:
            yield model_logits_fn(model)
        finally:
            model.train(was)

    return ReferenceLM(use, tokenizer, next(model.parameters()).device, name)


def evaluate_model(
    model,
    tokenizer,
    prompts: Sequence[str],
    normal_pairs: Sequence[tuple[str, str]],
    judge,
    scorer,
    reference: ReferenceLM,
    template: str = "auto",
    max_length: int = 256,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    progress_bar: bool = True,
    metrics: Sequence[Metric] | None = None,
    preference_pairs: Sequence[tuple[str, str, str]] = (),
) -> tuple[dict[str, float], list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Every metric (default: :func:`default_metric_names`) with intervals for one model, one record per
    generated answer (the lines of ``generations.jsonl``) and the metrics' per-example files
    (``utility`` → ``utility.jsonl``). ``judge`` and ``scorer`` are objects, or zero-argument
    callables that build them on first use; ``preference_pairs``: held-out (prompt, safe, unsafe)
    answers for the ``preference`` metric."""
    ctx = EvalContext(model, tokenizer, list(prompts), [], list(normal_pairs), reference,
                      _lazy(judge, "judge"), _lazy(scorer, "summarise"), template=template, max_length=max_length,
                      max_new_tokens=max_new_tokens, batch_size=batch_size, progress_bar=progress_bar,
                      bootstrap=dict(BOOTSTRAP), preference_pairs=list(preference_pairs))
    return evaluate_context(ctx, build_metrics(default_metric_names()) if metrics is None else metrics)


def evaluate_context(ctx: EvalContext, metrics: Sequence[Metric]
                     ) -> tuple[dict[str, float], list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Generate ``ctx.prompts``' answers, then run each metric on them (:func:`evaluate_model`).
    The summary gets each metric's intervals and values, ``n_prompts``, ``time_s`` and
    ``time/<metric>_s``."""
    t0 = time.perf_counter()
    out: dict[str, float] = {}
    if any(m.needs_answers for m in metrics):
        ctx.generations = generate_answers(ctx.model, ctx.tokenizer, ctx.prompts, ctx.max_new_tokens,
                                           ctx.batch_size, ctx.template, ctx.progress_bar,
                                           compute_dtype=ctx.compute_dtype)
        out["n_prompts"] = len(ctx.generations)
    records = [g.to_dict() for g in ctx.generations]
    files: dict[str, list[dict[str, Any]]] = {}
    for metric in metrics:
        t_metric = time.perf_counter()
        result = metric.compute(ctx)
        out.update(interval_metrics(result.intervals))
        out.update(result.values)
        ctx.labels.update(result.labels)
        for name, values in result.per_prompt.items():
            if len(values) != len(records):
                raise ValueError(f"metric {metric.name}: {len(values)} values of {name!r} for {len(records)} prompts")
            for record, value in zip(records, values, strict=True):
                record[name] = value
            ctx.per_prompt[name] = list(values)
        files.update(result.files)
        out[f"time/{metric.name}_s"] = time.perf_counter() - t_metric
    out["time_s"] = time.perf_counter() - t0
    return out, records, files


def preference_pairs(examples: Sequence[Any]) -> list[tuple[str, str, str]]:
    """``(prompt, safe answer, unsafe answer)`` of each labelled pair in ``examples`` (the forget
    data's split): PKU rows are parsed into consecutive (response_0, response_1) examples, so a
    pair is two neighbours with the same prompt and one safe, one unsafe label. Rows whose two
    responses share a label (both safe or both unsafe) give no pair."""
    out: list[tuple[str, str, str]] = []
    for a, b in zip(examples[0::2], examples[1::2], strict=False):
        if a.prompt == b.prompt and a.harmful != b.harmful:
            safe, unsafe = (b, a) if a.harmful else (a, b)
            out.append((a.prompt, safe.response, unsafe.response))
    return out


def baseline_for(records: Sequence[dict[str, Any]] | None, prompts: Sequence[str]) -> list[dict[str, Any]] | None:
    """The original model's records at ``prompts``, in that order (None without an original
    evaluation or when a prompt is missing from it)."""
    if records is None:
        return None
    by_prompt = {r.get("prompt"): r for r in records}
    if not all(p in by_prompt for p in prompts):
        return None
    return [by_prompt[p] for p in prompts]


def _lazy(part, method: str) -> Callable[[], Any]:
    """``part`` itself when it has ``method`` (a built judge or scorer), else ``part`` is its factory."""
    return (lambda: part) if hasattr(part, method) or not callable(part) else part


def metric_labels(metrics: Sequence[Metric], ctx_labels: dict[str, Any]) -> dict[str, Any]:
    """``eval/columns``: every metric's declared columns, for the results tables."""
    return {**ctx_labels, "eval/columns": [c.to_dict() for m in metrics for c in m.columns]}


def interval_metrics(intervals: dict[str, Interval]) -> dict[str, float]:
    """``<metric>``, ``<metric>_lo``, ``<metric>_hi`` per interval, and ``<metric>_n_missing`` for
    one that left NaN values out."""
    out: dict[str, float] = {}
    for name, interval in intervals.items():
        out.update(interval.to_dict(name))
        if interval.n_missing:
            log.warning("%s: %d values are NaN, left out of the metric and its interval", name, interval.n_missing)
            out[f"{name}_n_missing"] = interval.n_missing
    return out


# ---------------------------------------------------------------- cache of the original model's result
def cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps({"version": EVAL_VERSION, **parts}, sort_keys=True,
                                     default=str).encode()).hexdigest()


def cache_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir).expanduser() / "eval" / f"original-{key[:24]}.json"


def read_cache(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_cache(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def append_jsonl(path: Path, records: Sequence[dict[str, Any]], stage: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        for r in records:
            handle.write(json.dumps({"stage": stage, **r}, ensure_ascii=False) + "\n")


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore Python, NumPy and torch (CPU and CUDA) RNG states afterwards, so that turning the
    evaluation on or off cannot change the training run."""
    import random

    import numpy as np
    import torch

    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


# ---------------------------------------------------------------- the hook used by experiment.py
class EvaluationStage:
    """Evaluation inside a run. Disabled (every method returns ``{}``/``None``) when
    ``cfg.eval.enabled`` is false or the config has no ``eval`` section."""

    def __init__(self, cfg, loaded, forget_split, normal_split, run_dir: str | Path | None = None) -> None:
        self.cfg = cfg
        self.ecfg = cfg.get("eval")
        self.enabled = bool(self.ecfg is not None and self.ecfg.get("enabled", True))
        self.loaded = loaded
        self.forget_split = forget_split
        self.normal_split = normal_split
        self.run_dir = Path(run_dir) if run_dir else None
        self._judge = None
        self._scorer = None
        self._reference: ReferenceLM | None = None
        self.attacks: list = []
        self.metrics: list[Metric] = []
        self.periodic_metrics: list[Metric] = []
        self.last_labels: dict[str, Any] = {}
        self.baseline: list[dict[str, Any]] | None = None   # the original model's per-prompt records
        self._before_kept = False  # resume_files kept the original model's lines
        if not self.enabled:
            return
        # one decoding-settings object for the metrics and the attacks of every evaluation
        self.decoding = DecodingSettings.from_config(cfg)
        # a bad entry fails here, before training
        self.metrics = build_metrics(self.metric_entries())
        periodic = self.ecfg.get("periodic_metrics")
        self.periodic_metrics = self.metrics if periodic is None else build_metrics(list(periodic))
        if self.ecfg.get("attacks"):
            from unlearn.evaluation.attacks import build_attacks

            self.attacks = build_attacks(self.ecfg.attacks)  # a bad entry fails here, before training
        # "eval": the held-out, prompt-disjoint split (results); "train": the training split,
        # for tuning settings without looking at held-out prompts
        split = self.ecfg.get("split", "eval")
        forget = forget_split.eval if split == "eval" else forget_split.train
        self.prompts = distinct_prompts(forget, self.ecfg.n_prompts)
        normal = normal_split.eval if split == "eval" else normal_split.train
        if self.ecfg.get("utility_max_examples"):
            normal = normal[: int(self.ecfg.utility_max_examples)]
        self.normal_pairs = [(e.prompt, e.response) for e in normal]
        self.preference_pairs = preference_pairs(forget)

    # -- lazily built parts
    @property
    def judge(self):
        if self._judge is None:
            from unlearn.evaluation.judges.base import build_judge

            # validation: the held-out forget split (the judge never trains on it), for the
            # corrected harmful rate; judges that cannot use it ignore it
            self._judge = build_judge(self.cfg.judge, self.forget_split.train, self.forget_split.eval,
                                      normal_train=self.normal_split.train)
        return self._judge

    @property
    def scorer(self):
        if self._scorer is None:
            from hydra.utils import instantiate

            self._scorer = instantiate(self.cfg.scorer)
        return self._scorer

    def fixed_reference(self) -> ReferenceLM | None:
        """The configured ``eval.fluency_reference`` model, loaded once (None: the original)."""
        path = self.ecfg.get("fluency_reference")
        if not path:
            return None
        if self._reference is None:
            from unlearn.models.pretrained import load_pretrained

            ref = load_pretrained(str(path), dtype=self.ecfg.get("reference_dtype") or "float32",
                                  device=self.ecfg.get("device") or "auto")
            ref.model.eval().requires_grad_(False)
            self._reference = self_reference(ref.model, ref.tokenizer, ref.name)
        return self._reference

    @property
    def needs_baseline(self) -> bool:
        """Some metric compares with the original model's answers (:attr:`Metric.needs_baseline`)."""
        return any(m.needs_baseline for m in self.metrics)

    def metric_entries(self) -> list[Any]:
        """``eval.metrics`` (the default list of :func:`default_metric_names` when absent)."""
        entries = self.ecfg.get("metrics")
        return list(default_metric_names() if entries is None else entries)

    def labels(self) -> dict[str, Any]:
        """``eval/split``, what the metrics of the last evaluation said they used (judge, scorer,
        fluency reference, …) and ``eval/columns`` (:func:`metric_labels`)."""
        return metric_labels(self.metrics, {"eval/split": self.ecfg.get("split", "eval"), **self.last_labels})

    def run(self, model, reference: ReferenceLM, prompts: Sequence[str] | None = None,
            metrics: Sequence[Metric] | None = None):
        prompts = list(prompts if prompts is not None else self.prompts)
        ctx = EvalContext(model, self.loaded.tokenizer, prompts, [],
                          self.normal_pairs, reference, lambda: self.judge, lambda: self.scorer,
                          **self.decoding.decoding(), preference_pairs=list(self.preference_pairs),
                          baseline=baseline_for(self.baseline, prompts))
        with preserved_rng():
            result = evaluate_context(ctx, self.metrics if metrics is None else metrics)
        self.last_labels.update(ctx.labels)
        return result

    def key_parts(self) -> dict[str, Any]:
        """What the original model's evaluation depends on: the result settings of the model, data,
        eval, judge and scorer (:func:`unlearn.identity.result_config`) and the texts evaluated."""
        settings = result_config(self.cfg, groups=("model", "dataset", "eval", "judge", "scorer"))
        return {
            "model": settings.get("model"),
            "model_id": [self.loaded.name, self.loaded.source],
            "data": settings.get("dataset"),
            "prompts": hashlib.sha256("\x00".join(self.prompts).encode()).hexdigest(),
            "normal": hashlib.sha256(json.dumps(self.normal_pairs).encode()).hexdigest(),
            "eval": settings.get("eval"),
            "judge": settings.get("judge"),
            "scorer": settings.get("scorer"),
            **({"attacks": self.attack_settings()} if self.attacks else {}),
            "metrics": metric_configs(self.metric_entries()),
            "metric_settings": [m.settings() for m in self.metrics],
        }

    def attack_settings(self) -> list[dict[str, Any]]:
        """The resolved ``eval.attacks`` entries (option names replaced by their YAML)."""
        from unlearn.evaluation.attacks import attack_configs

        return attack_configs(self.ecfg.get("attacks"))

    def attack(self, model, records: Sequence[dict[str, Any]], stage: str) -> dict[str, Any]:
        """Run ``eval.attacks`` on ``model`` (left unchanged); ``records`` are its plain answers
        (for the rebound). Returns ``eval/labels/attack/<name>`` and ``eval/<stage>/attack/…``."""
        if not self.attacks:
            return {}
        from unlearn.evaluation.attacks import AttackContext, run_attacks

        ctx = AttackContext(self.loaded.tokenizer, list(self.prompts), self.judge, list(self.forget_split.train),
                            **self.decoding.decoding())  # the plain evaluation's settings
        plain = {r["prompt"]: float(r["harmful"]) for r in records if "harmful" in r}
        with preserved_rng():
            metrics, labels, answers = run_attacks(self.attacks, model, ctx, plain)
        for name, rows in answers.items():
            self._save(rows, f"{stage}/attack/{name}")
        return {**{f"eval/labels/{k}": v for k, v in labels.items()}, **self._prefixed(stage, metrics)}

    def resume_files(self, step: int) -> None:
        """A resumed run: cut the per-prompt files back to what was written up to its checkpoint's
        ``step`` (the original model's lines and ``step_<N>`` with N ≤ ``step``; from step 0:
        nothing), so the stages that run again append exactly what an uninterrupted run has."""
        self._before_kept = step > 0  # a checkpoint exists, so the original's lines were complete
        if self.run_dir is None:
            return
        for path in sorted(self.run_dir.glob("*.jsonl")):
            if path.name == "metrics.jsonl":
                continue
            kept = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    stage = str(json.loads(line).get("stage", ""))
                except (ValueError, AttributeError):  # a line cut short by a kill
                    continue
                periodic = re.match(r"step_(\d+)(/|$)", stage)
                if step > 0 and (stage.split("/")[0] == "before" or (periodic and int(periodic.group(1)) <= step)):
                    kept.append(line + "\n")
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            tmp.write_text("".join(kept), encoding="utf-8")
            os.replace(tmp, path)

    def _save(self, records, stage: str, files: dict[str, Sequence[dict[str, Any]]] | None = None) -> None:
        """Append the per-prompt records and each metric's per-example file (module docstring, "Files")."""
        if self._before_kept and stage.split("/")[0] == "before":
            return  # a resumed run whose files hold them already (resume_files)
        if self.run_dir is not None and self.ecfg.get("save_generations", True):
            append_jsonl(self.run_dir / "generations.jsonl", records, stage)
            for name, rows in (files or {}).items():
                if rows:
                    append_jsonl(self.run_dir / f"{name}.jsonl", rows, stage)

    def _prefixed(self, stage: str, metrics: dict[str, float]) -> dict[str, Any]:
        return {f"eval/{stage}/{k}": v for k, v in metrics.items()}

    # -- the three hooks
    def before(self, model, stage: str = "before") -> dict[str, Any]:
        """Evaluate the original model (the one about to be trained); cached under cache_dir, and
        computed once across processes that share it (the others wait and read it: :mod:`unlearn.cache`)."""
        if not self.enabled:
            return {}
        if not self.ecfg.get("cache", True):
            labels, metrics, records, files = self._evaluate_original(model, stage)
            self._save(records, stage, files)
            return {**labels, **self._prefixed(stage, metrics), f"eval/{stage}/cached": 0}
        computed: dict[str, Any] = {}

        def build(tmp: Path) -> None:
            labels, metrics, records, files = self._evaluate_original(model, stage)
            computed.update(labels=labels, metrics=metrics, records=records, files=files)
            write_cache(tmp, {"key": self.key_parts(), **computed})

        hit = build_once(cache_path(self.cfg.cache_dir, cache_key(self.key_parts())), build, read_cache)
        self.baseline = hit["records"]
        self._save(hit["records"], stage, hit.get("files"))
        return {**hit["labels"], **self._prefixed(stage, hit["metrics"]), f"eval/{stage}/cached": int(not computed)}

    def _evaluate_original(self, model, stage: str):
        """``(labels, metrics, records, files)`` of the original model, attacks included."""
        reference = self.fixed_reference() or self_reference(model, self.loaded.tokenizer,
                                                             f"original ({self.loaded.name})")
        metrics, records, files = self.run(model, reference)
        self.baseline = records
        labels = self.labels()
        attacked = self.attack(model, records, stage)
        labels.update({k: v for k, v in attacked.items() if k.startswith("eval/labels/")})
        metrics.update({k.removeprefix(f"eval/{stage}/"): v for k, v in attacked.items()
                        if k.startswith(f"eval/{stage}/")})
        return labels, metrics, records, files

    def after(self, model, reference_fn: ReferenceFn) -> dict[str, Any]:
        """Evaluate the unlearned model; fluency under the original (``reference_fn``) by default."""
        if not self.enabled:
            return {}
        reference = self.fixed_reference() or ReferenceLM(
            reference_fn, self.loaded.tokenizer, next(model.parameters()).device,
            f"original ({self.loaded.name})")
        metrics, records, files = self.run(model, reference)
        self._save(records, "after", files)
        return {**self.labels(), **self._prefixed("after", metrics), **self.attack(model, records, "after")}

    def periodic(self, tracker, model, reference_fn: ReferenceFn,
                 then: Callable[[int], None] | None = None) -> Callable[[int], None] | None:
        """``on_step_end`` callback: every ``eval.every_n_steps`` steps compute
        ``eval.periodic_metrics`` (the likelihood metrics by default, no generation; null: every
        metric, on the first ``eval.every_n_prompts`` prompts) and log ``eval/<metric>`` at that
        step; calls ``then``."""
        every = int(self.ecfg.get("every_n_steps") or 0) if self.enabled else 0
        if every <= 0:
            return then
        prompts = self.prompts[: int(self.ecfg.get("every_n_prompts") or len(self.prompts))]

        def on_step_end(step: int) -> None:
            if step % every == 0:
                reference = self.fixed_reference() or ReferenceLM(
                    reference_fn, self.loaded.tokenizer, next(model.parameters()).device, "original")
                metrics, records, files = self.run(model, reference, prompts, self.periodic_metrics)
                self._save(records, f"step_{step}", files)
                tracker.log({"step": step, **{f"eval/{k}": v for k, v in metrics.items()}})
            if then is not None:
                then(step)

        return on_step_end
