"""``python -m unlearn.evaluate``: evaluate one model outside a training run."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from unlearn.errors import ModelLoadError
from unlearn.models.loaded import LoadedModel


def run_config(path: Path) -> DictConfig | None:
    """The ``.hydra/config.yaml`` of a run dir, if there is one."""
    f = path / ".hydra" / "config.yaml"
    return OmegaConf.load(f) if f.is_file() else None


def load_target(cfg: DictConfig, model_path: str) -> tuple[LoadedModel, DictConfig]:
    """The model to evaluate and the config of its original (base) model."""
    from hydra.utils import instantiate

    from unlearn.models.pretrained import load_pretrained

    path = Path(model_path).expanduser()
    rcfg = run_config(path) if path.is_dir() else None
    original_cfg = rcfg.model if rcfg is not None else cfg.model
    if not path.is_dir():  # a hub id
        return load_pretrained(model_path, dtype=cfg.model.get("dtype") or "float32",
                               device=cfg.model.get("device") or "auto"), original_cfg
    folder = path / "model" if (path / "model").is_dir() else path
    if (folder / "adapter_config.json").is_file():
        from peft import PeftModel

        base = instantiate(original_cfg)
        model = PeftModel.from_pretrained(base.model, folder)
        return LoadedModel(model, base.tokenizer, f"{base.name}+adapter({path.name})", str(folder)), original_cfg
    if not any(folder.glob("*.safetensors")):
        raise ModelLoadError(f"{folder} holds no model: pass a run dir (with model/), a folder with "
                             "safetensors weights, or a hub id")
    loaded = load_pretrained(str(folder), name=path.name, dtype=original_cfg.get("dtype") or "float32",
                             device=original_cfg.get("device") or "auto")
    return loaded, original_cfg


def evaluate_standalone(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    from hydra.utils import instantiate

    from unlearn.data.layout import check_run_data
    from unlearn.evaluation.stage import EvaluationStage, self_reference
    from unlearn.tracking import WandbSink, redact, write_json_atomic

    check_run_data(cfg)  # the local files the config reads (data_dir, the judge's data), before any model
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if cfg.threads:
        import torch

        torch.set_num_threads(int(cfg.threads))
    forget_split = instantiate(cfg.dataset.forget)
    normal_split = instantiate(cfg.dataset.normal)
    model_path = cfg.get("model_path")
    if not model_path:
        loaded = instantiate(cfg.model)
        stage = EvaluationStage(cfg, loaded, forget_split, normal_split, out_dir)
        if not stage.enabled:
            raise ValueError("eval.enabled=false: nothing to evaluate")
        result = stage.before(loaded.model, stage="model")
        result = {k.replace("eval/model/", "eval/"): v for k, v in result.items()}
    else:
        loaded, original_cfg = load_target(cfg, str(model_path))
        stage = EvaluationStage(cfg, loaded, forget_split, normal_split, out_dir)
        if not stage.enabled:
            raise ValueError("eval.enabled=false: nothing to evaluate")
        reference = stage.fixed_reference()
        original_result: dict[str, Any] = {}
        if reference is None or stage.needs_baseline:
            original = instantiate(original_cfg)
            original.model.eval().requires_grad_(False)
            reference = reference or self_reference(original.model, original.tokenizer, f"original ({original.name})")
            if stage.needs_baseline:  # the original's answers, for the length-controlled metrics (cached)
                original_result = {k: v for k, v in stage.before(original.model, stage="original").items()
                                   if k.startswith("eval/original/")}
                del original
        metrics, records, files = stage.run(loaded.model, reference)
        stage._save(records, "model", files)
        attacked = stage.attack(loaded.model, records, "model")
        result = {**stage.labels(), "eval/fluency_reference": reference.name,
                  **{f"eval/{k}": v for k, v in metrics.items()},
                  **{k.replace("eval/model/", "eval/"): v for k, v in attacked.items()}, **original_result}
    summary = {"status": "completed", "model": loaded.name, "model_source": loaded.source,
               "model_path": str(model_path) if model_path else None, **result,
               "wall_time_s": time.perf_counter() - t0}
    write_json_atomic(out_dir / "summary.json", redact(summary))
    sink = WandbSink(out_dir, OmegaConf.to_container(cfg, resolve=True), name=f"eval-{loaded.name}",
                     **OmegaConf.to_container(cfg.logger, resolve=True))
    sink.summary({k: v for k, v in summary.items() if isinstance(v, int | float | str)})
    sink.finish()
    print(format_summary(summary))
    print(f"results: {out_dir / 'summary.json'}, answers: {out_dir / 'generations.jsonl'}")
    return summary


METRIC_ORDER = ("harmful_rate", "harmful_rate_corrected", "judge_sensitivity", "judge_specificity",
                "harmful_rate_length_matched", "harm_drop_beyond_length", "preference_margin",
                "safe_preference_rate", "refusal_rate", "off_topic_rate", "degenerate_loop_rate", "toxicity",
                "obscene", "fluency_ppl", "distinct_1", "distinct_2", "unique_token_ratio", "utility_ppl",
                "utility_loss", "degenerate_rate", "refusal_rule_rate", "answer_tokens_mean", "unfinished_rate",
                "n_prompts", "n_utility")
# What the end of ``python -m unlearn.run`` shows, before → after (the keys the summary holds)
HEADLINE = ("harmful_rate", "harmful_rate_corrected", "harmful_rate_length_matched", "harm_drop_beyond_length",
            "preference_margin", "safe_preference_rate", "refusal_rate", "off_topic_rate", "degenerate_loop_rate",
            "fluency_ppl", "utility_ppl", "answer_tokens_mean")


def _cell(summary: dict[str, Any], key: str) -> str:
    """``value (lo – hi)``; the interval only where ``<key>_lo`` and ``<key>_hi`` are numbers."""
    v = summary.get(key)
    if v is None:
        return "–"
    text = f"{v:.4g}" if isinstance(v, float) else str(v)
    lo, hi = summary.get(f"{key}_lo"), summary.get(f"{key}_hi")
    return text + (f" ({lo:.4g} – {hi:.4g})" if isinstance(lo, int | float) and isinstance(hi, int | float) else "")


def format_summary(summary: dict[str, Any], prefix: str = "eval/", stages: Sequence[str] = (),
                   keys: Sequence[str] = METRIC_ORDER) -> str:
    """Metric table with the 95 % interval (``_lo``, ``_hi``) and the judge/scorer labels beside the numbers.

    ``stages`` (e.g. ``("before", "after")``): one column per stage, from ``<prefix><stage>/<key>``;
    a metric is shown when some stage has it. Without stages: one column, ``<prefix><key>``, then
    the attacks' rows."""
    labels = {"harmful_rate": summary.get("eval/judge"), "toxicity": summary.get("eval/labels/toxicity"),
              "obscene": summary.get("eval/labels/obscene"), "fluency_ppl": summary.get("eval/fluency_reference")}
    if stages:
        rows = [(k, [_cell(summary, f"{prefix}{s}/{k}") for s in stages]) for k in keys]
        rows = [(k, cells) for k, cells in rows if any(c != "–" for c in cells)]
        widths = [max([len(s), *(len(cells[i]) for _, cells in rows)]) + 3 for i, s in enumerate(stages)]
        lines = [(f"  {'metric':<28}" + "".join(f"{s:<{w}}" for s, w in zip(stages, widths))).rstrip()]
        for k, cells in rows:
            lines.append((f"  {k:<28}" + "".join(f"{c:<{w}}" for c, w in zip(cells, widths))
                          + (f"[{labels[k]}]" if labels.get(k) else "")).rstrip())
        return "\n".join(lines)
    lines = [f"model: {summary.get('model')}"]
    for k in keys:
        if summary.get(prefix + k) is None:
            continue
        cell = _cell(summary, prefix + k)
        text, _, interval = cell.partition(" ")
        lines.append((f"  {k:<28} {text:>10} {interval:<22}" + (f"   [{labels[k]}]" if labels.get(k) else "")).rstrip())
    attacks = [k for k in summary if k.startswith(f"{prefix}attack/") and f"{k}_lo" in summary]
    for k in attacks:  # attack/<name>/harmful_rate, …/rebound (unlearn.evaluation.attacks)
        v, lo, hi = (summary.get(k + s, float("nan")) for s in ("", "_lo", "_hi"))
        lines.append(f"  {k.removeprefix(prefix):<40} {v:>8.4g} ({lo:.4g} – {hi:.4g})")
    return "\n".join(lines)


def format_run_report(summary: dict[str, Any], run_dir: Path) -> str:
    """What ``python -m unlearn.run`` prints at the end: the headline metrics before → after
    training (95 % intervals) and where the summary, the answers and the model are."""
    run_dir = Path(run_dir)
    head = (f"{summary.get('method')} (seed {summary.get('seed')}), model {summary.get('model')}, "
            f"{summary.get('steps')} steps")
    has_eval = any(k.startswith(("eval/before/", "eval/after/")) for k in summary)
    table = (format_summary(summary, stages=("before", "after"), keys=HEADLINE) if has_eval
             else "  (no evaluation: eval.enabled=false)")
    generations, model = run_dir / "generations.jsonl", run_dir / "model"
    return "\n".join([
        f"{head}: before → after (95 % intervals)", table,
        f"summary:     {run_dir / 'summary.json'}",
        f"generations: {generations if generations.is_file() else '(none written)'}",
        f"model:       {model if model.is_dir() else '(not saved: trainer.save_model=false)'}",
    ])
