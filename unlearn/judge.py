"""``python -m unlearn.judge [--compare] [overrides]``: train (or load) the harm judge and print its report.

The report (:mod:`unlearn.evaluation.judges.report`) gives accuracy, sensitivity, specificity and
AUROC with 95 % intervals on the held-out PKU pairs (the forget set's eval split, never trained
on) and against the human labels of ../shared/data/pyrit-scorer-evals (only the untouched
objectives when the judge trained on PyRIT rows), the share of the normal set's eval-split
answers judged harmful, and the verdicts on degenerate answers (empty, whitespace, a repeated
token, refusals, "I have no comment."), none of which may be harmful. Overrides are Hydra
overrides of conf/config.yaml, e.g.::

    python -m unlearn.judge
    python -m unlearn.judge judge=embedded_uncut         # the previous default (no length augmentation)
    python -m unlearn.judge judge=embedded_answer        # the default before it (answer features only)
    python -m unlearn.judge --compare                    # every offline judge design, side by side
    python -m unlearn.judge judge=beaver_dam            # GPU and hub access (or judge.path=DIR)
    python -m unlearn.judge judge=llama_guard           # meta-llama/Llama-Guard-3-8B (gated), GPU
    python -m unlearn.judge judge=harmbench             # cais/HarmBench-Llama-2-13b-cls, GPU

The report is also written as JSON to ``report_path`` (default
``<cache_dir>/judges/report-<judge>.json``; with ``--compare``, ``compare.json``).
``--compare`` runs every ``conf/judge/*.yaml`` whose target is the offline embedded judge, so a
new offline design is one new YAML file.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from unlearn.cache import temp_path

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
OFFLINE_TARGET = "unlearn.evaluation.judges.embedded.build_embedded_judge"


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def offline_designs(overrides: list[str]) -> list[str]:
    """Names of the ``judge`` configs whose target is the offline embedded judge."""
    names = sorted(p.stem for p in (CONFIG_DIR / "judge").glob("*.yaml"))
    return [n for n in names if compose([*overrides, f"judge={n}"]).judge.get("_target_") == OFFLINE_TARGET]


def build_for(cfg):
    """The configured judge (trained on the forget and normal train splits) and its eval data."""
    from hydra.utils import instantiate

    from unlearn.evaluation.judges.base import build_judge

    forget, normal = instantiate(cfg.dataset.forget), instantiate(cfg.dataset.normal)
    return build_judge(cfg.judge, forget.train, normal_train=normal.train), forget.eval, normal.eval


def report_for(judge, pku_eval, normal_eval, pyrit, compared_with=()) -> dict[str, Any]:
    from unlearn.evaluation.judges.report import build_report

    report = build_report(judge, pku_eval, pyrit, normal_eval, compared_with)
    report["name"] = judge.name
    return report


def main(argv: list[str] | None = None) -> dict:
    from unlearn.evaluation.judges.report import format_comparison, format_report

    args = list(sys.argv[1:] if argv is None else argv)
    compare = "--compare" in args
    report_path = next((a.split("=", 1)[1] for a in args if a.startswith("report_path=")), None)
    args = [a for a in args if not a.startswith("report_path=") and a != "--compare"]
    cfg = compose(args)
    if cfg.threads:
        import torch

        torch.set_num_threads(int(cfg.threads))
    if not cfg.data_dir:
        print("(no data_dir: the PyRIT comparison is skipped; set UNLEARN_DATA_DIR)")
    from unlearn.data.pyrit_labels import load_pyrit_labels

    pyrit = load_pyrit_labels(cfg.data_dir) if cfg.data_dir else None
    if compare:
        if any(a.startswith("judge=") for a in args):
            raise SystemExit("--compare runs every offline judge design; drop the judge=… override")
        built = {name: build_for(compose([*args, f"judge={name}"])) for name in offline_designs(args)}
        judges = [b[0] for b in built.values()]
        reports = {}
        for name, (judge, pku_eval, normal_eval) in built.items():
            # every design on the same PyRIT rows: those no compared design trained on
            reports[name] = report_for(judge, pku_eval, normal_eval, pyrit, [j for j in judges if j is not judge])
            print(format_report(reports[name]) + "\n")
        print("PyRIT rows: those no design trained on, the same for every column")
        print(format_comparison(reports))
        result: dict = {"designs": reports, "pyrit_rows": "untouched by every design (the same rows for each)"}
        default_name = "compare.json"
    else:
        result = report_for(*build_for(cfg), pyrit)
        print(format_report(result))
        default_name = f"report-{result['name']}.json"
    path = Path(report_path or Path(cfg.cache_dir).expanduser() / "judges" / default_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)  # renamed into place: a reader never sees half a report
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)
    print(f"report written to {path}")
    return result


if __name__ == "__main__":
    main()
