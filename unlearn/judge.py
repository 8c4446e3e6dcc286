"""``python -m unlearn.judge [overrides]``: train (or load) the harm judge and print its report.

The report gives accuracy, sensitivity, specificity and AUROC on the held-out PKU pairs (the
forget set's eval split, never used for training), the same against the human labels of
../shared/data/pyrit-scorer-evals,
and the verdicts on degenerate answers (empty, whitespace, a repeated token, refusals), none of
which may be harmful. Overrides are Hydra overrides of conf/config.yaml, e.g.::

    python -m unlearn.judge
    python -m unlearn.judge judge.features=tfidf
    python -m unlearn.judge judge=beaver_dam            # GPU and hub access (or judge.path=DIR)
    python -m unlearn.judge judge=llama_guard           # meta-llama/Llama-Guard-3-8B (gated), GPU
    python -m unlearn.judge judge=harmbench             # cais/HarmBench-Llama-2-13b-cls, GPU

The report is also written as JSON to ``report_path`` (default
``<cache_dir>/judges/report-<judge>.json``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def main(argv: list[str] | None = None) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from unlearn.evaluation.harm_judge import build_judge
    from unlearn.evaluation.human_labels import load_pyrit_labels
    from unlearn.evaluation.judge_report import build_report, format_report

    args = list(sys.argv[1:] if argv is None else argv)
    report_path = next((a.split("=", 1)[1] for a in args if a.startswith("report_path=")), None)
    args = [a for a in args if not a.startswith("report_path=")]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=args)
    if cfg.threads:
        import torch

        torch.set_num_threads(int(cfg.threads))
    split = instantiate(cfg.dataset.forget)
    judge = build_judge(cfg.judge, split.train)
    pyrit = load_pyrit_labels(cfg.data_dir) if cfg.data_dir else None
    report = build_report(judge, split.eval, pyrit)
    text = format_report(report)
    print(text)
    if pyrit is None:
        print("(no data_dir: the PyRIT comparison was skipped; set UNLEARN_DATA_DIR)")
    path = Path(report_path or Path(cfg.cache_dir).expanduser() / "judges" / f"report-{judge.name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report written to {path}")
    return report


if __name__ == "__main__":
    main()
