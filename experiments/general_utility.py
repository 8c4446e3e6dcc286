"""Utility on sets the retain loss never trains on, for every model a paper_embedded sweep saved.

Why: TruthfulQA, the utility of the paper table, is also the retain loss's training
distribution, so a method can look useful by fitting the retain set's style. This scores the original model and every ``<sweep>/<method>/seed=<s>/model`` with
the configured metrics of conf/metric/ (default ``freshqa lm_eval``: FreshQA answer loss and
MMLU-dev accuracy through lm-eval's offline task), then prints per method the mean over seeds and
the difference from ``--reference`` paired over items with both methods' seeds
(:func:`unlearn.uncertainty.paired_difference`, as in the paper tables), beside the TruthfulQA
``eval/after/utility_loss`` of the same runs, and says whether the method order changes.

    python experiments/general_utility.py outputs/sweeps/paper_embedded
    python experiments/general_utility.py outputs/sweeps/paper_embedded --metrics freshqa
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def score(metrics, loaded, bootstrap: dict) -> dict[str, dict]:
    """{key: {"value", "lo", "hi", "items"}} of every declared column of ``metrics``."""
    from unlearn.evaluation.metrics import EvalContext

    ctx = EvalContext(loaded.model, loaded.tokenizer, [], [], [], None, lambda: None, lambda: None,
                      template="auto", max_length=128, batch_size=50, bootstrap=bootstrap)
    out = {}
    for metric in metrics:
        result = metric.compute(ctx)
        for column in metric.columns:
            iv = result.intervals[column.key]
            rows = result.files.get(column.examples or "", [])
            out[column.key] = {"value": iv.estimate, "lo": iv.lo, "hi": iv.hi, "items": [r["value"] for r in rows]}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="*", default=[str(REPO / "outputs" / "sweeps" / "paper_embedded")])
    parser.add_argument("--metrics", nargs="+", default=["freshqa", "lm_eval"], help="options of conf/metric/")
    parser.add_argument("--reference", default="uce+dual", help="the method label (= its run-dir name) others are compared with")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "general_utility.json")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from unlearn.evaluation.metrics import build_metrics
    from unlearn.models.pretrained import load_pretrained
    from unlearn.uncertainty import paired_difference

    torch.set_num_threads(args.threads)
    metrics = build_metrics(args.metrics)
    keys = [c.key for m in metrics for c in m.columns]
    better = {c.key: c.better for m in metrics for c in m.columns}
    models = [("original", None)] + [
        (f"{p.parent.parent.name}/{p.parent.name}", p)
        for sweep in args.sweeps for p in sorted(Path(sweep).glob("*/seed=*/model"))]
    if len(models) == 1:
        sys.exit(f"no saved models below {args.sweeps}: run `make paper-tables` (paper_embedded saves them)")
    results: dict[str, dict] = {}
    for name, path in models:
        t0 = time.perf_counter()
        if path is None:
            with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
                cfg = compose(config_name="config", overrides=["experiment=paper_embedded"])
            loaded = instantiate(cfg.model)
        else:
            loaded = load_pretrained(str(path), dtype="float32", device="cpu")
        loaded.model.eval()
        results[name] = score(metrics, loaded, {"n_boot": 2000, "level": 0.95, "seed": 0})
        summary = path.parent / "summary.json" if path is not None else None
        if summary is not None and summary.is_file():
            results[name]["truthfulqa_loss"] = {"value": json.loads(summary.read_text()).get("eval/after/utility_loss")}
        print(f"{name:28s} " + "  ".join(f"{k} {results[name][k]['value']:.3f} [{results[name][k]['lo']:.3f}, "
                                         f"{results[name][k]['hi']:.3f}]" for k in keys)
              + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)

    by_method: dict[str, list[str]] = defaultdict(list)
    for name in results:
        if name != "original":
            by_method[name.split("/")[0]].append(name)
    mean = {m: {k: statistics.fmean(results[r][k]["value"] for r in runs) for k in keys} for m, runs in by_method.items()}
    for m, runs in by_method.items():
        tqa = [results[r].get("truthfulqa_loss", {}).get("value") for r in runs]
        mean[m]["truthfulqa_loss"] = statistics.fmean(tqa) if all(v is not None for v in tqa) else float("nan")
    for key in keys:
        print(f"\n{key} (original {results['original'][key]['value']:.3f}); mean over seeds; "
              f"difference from {args.reference} paired over items with both methods' seeds (95 %)")
        order = sorted(by_method, key=lambda m: mean[m][key] * (1 if better[key] == "lower" else -1))
        for m in order:
            line = f"  {m:20s} {mean[m][key]:.3f}"
            if args.reference in by_method and m != args.reference:
                grid = lambda method: np.array([results[r][key]["items"] for r in by_method[method]])  # noqa: E731
                d = paired_difference(grid(m), grid(args.reference))
                line += f"  − {args.reference}: {d.estimate:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}]" + ("*" if d.excludes_zero() else "")
            print(line)
        by_tqa = sorted(by_method, key=lambda m: mean[m]["truthfulqa_loss"])
        print(f"  order by {key}: {' < '.join(order) if better[key] == 'lower' else ' > '.join(order)}")
        print(f"  order by TruthfulQA loss (lower first): {' < '.join(by_tqa)}"
              + ("  (same order)" if order == by_tqa else "  (order differs)"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
