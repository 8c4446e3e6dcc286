"""experiments/headline.py and training_split.py on hand-made results files."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


headline = _load("headline")
training_split = _load("training_split")


def _write(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _pair(reference: str, method: str, metric: str, d: float, lo: float, hi: float, unpaired: float = 0.0) -> dict:
    return {"reference": reference, "method": method, "metric": metric, "difference": d, "lo": lo, "hi": hi,
            "seeds_reference": 5, "unpaired_half_width": unpaired or ""}


def test_headline_reads_dual_minus_each_aggregator_per_update_rule(tmp_path: Path, capsys) -> None:
    paired = [  # stored as method − reference
        _pair("uce+dual", "uce+mgda", "preference_margin", -0.02, -0.03, -0.01),   # dual's margin higher
        _pair("uce+dual", "uce+mgda", "utility_loss", -0.5, -0.6, -0.4, 0.3),      # dual's utility loss higher
        _pair("uce+dual", "uce+mgda[sgd]", "utility_loss", 9.0, 8.0, 10.0),        # another rule: not a row
        _pair("uce+dual[sgd]", "uce+weighted_sum[sgd]", "harmful_rate", 0.01, -0.02, 0.04),
        _pair("original", "uce+dual", "fluency_ppl", 3.0, 1.0, 5.0),
    ]
    _write(tmp_path / "paired_differences.csv", paired)
    hv = [{"forgetting": f, "a": "uce+mgda", "b": "uce+dual", "difference": d, "lo": lo, "hi": hi}  # stored mgda − dual
          for f, d, lo, hi in (("margin", 0.0, 0.0, 0.0), ("forget_nll", -0.5, -0.9, -0.1))]
    hv += [{"forgetting": "forget_nll", "a": "uce+dual[sgd]", "b": "uce+weighted_sum[sgd]", "difference": 7.0,
            "lo": "", "hi": ""}]  # fewer than 2 common seeds: no interval
    _write(tmp_path / "hypervolume_paired.csv", hv)
    runs = [{"method": "uce+dual", "status": "completed", "after/fluency_ppl": v} for v in (4.0, 9.5)]
    _write(tmp_path / "runs.csv", [*runs, {"method": "uce+dual", "status": "failed", "after/fluency_ppl": 99.0}])
    assert headline.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    mgda = next(line for line in out.splitlines() if line.startswith("| adamw | mgda |"))
    assert "+0.020 [+0.010, +0.030]* dual better" in mgda       # margin: higher is better
    assert "+0.500 [+0.400, +0.600]* dual worse" in mgda         # utility loss: lower is better
    assert "hypervolume (margin) ↑ | hypervolume (forget_nll) ↑" in out
    assert "+0.000 [+0.000, +0.000] |" in mgda.split("|")[-4] + "|"                      # margin volumes
    assert "+0.500 [+0.100, +0.900]* dual better" in mgda.split("|")[-3]  # forget NLL, turned to dual − mgda
    sgd = next(line for line in out.splitlines() if line.startswith("| sgd | weighted_sum |"))
    assert "-0.010 [-0.040, +0.020] |" in sgd and "*" not in sgd  # not resolved: no reading
    assert sgd.split("|")[-3].strip() == "n/a" and "7.0" not in sgd
    assert "| uce+dual | +3.00 [+1.00, +5.00]* | 4.00–9.50 | 2 |" in out
    assert "+9.000" not in out and "-9.000" not in out
    assert "median 3.00 (range 3.00–3.00) over 1 comparisons" in out  # 0.3 unpaired over 0.1 paired
    assert headline.main([str(tmp_path), "--readme"]) == 0
    readme = capsys.readouterr().out.splitlines()
    assert readme[0] == "| update rule | dual − | margin, nats/token | harmful rate | utility loss | fluency PPL |"
    assert readme[2] == ("| AdamW | MGDA | **+0.020 [+0.010, +0.030]** | n/a | **+0.500 [+0.400, +0.600]** (worse) | n/a |")
    assert readme[3] == "| SGD | weighted sum | n/a | −0.010 [−0.040, +0.020] | n/a | n/a |"


def test_headline_names_the_missing_file(tmp_path: Path, capsys) -> None:
    assert headline.main([str(tmp_path)]) == 2
    assert "paired_differences.csv" in capsys.readouterr().err


def test_training_split_pairs_the_last_steps_by_seed(tmp_path: Path, capsys) -> None:
    rows = []
    for seed in range(3):
        for step in range(1, 7):
            for method, shift in (("uce+dual[sgd]", -0.1), ("uce+dual", 0.0)):
                rows.append({"method": method, "seed": seed, "status": "completed", "step": step, "skipped": 0,
                             "loss/forget": 1.0 + shift + 0.01 * seed + (5.0 if step == 1 else 0.0),
                             "loss/kl": 0.2 + seed * 0.1})
    rows.append({"method": "uce+dual", "seed": 9, "status": "failed", "step": 1, "skipped": 0,
                 "loss/forget": 99.0, "loss/kl": 99.0})
    _write(tmp_path / "steps.csv", rows)
    means = training_split.tail_means(training_split.read_rows(tmp_path / "steps.csv"), "uce+dual", 5)
    assert set(means["forget"]) == {0, 1, 2}                     # the failed run is not read
    assert abs(means["forget"][1] - 1.01) < 1e-12                 # step 1 (the outlier) is outside the last 5
    assert training_split.main([str(tmp_path), "--pair", "uce+dual[sgd]", "uce+dual"]) == 0
    out = capsys.readouterr().out
    assert "| forget | 0.910 | 1.010 | -0.100 [-0.100, -0.100]* a lower | 3 |" in out
    assert "| kl | 0.300 | 0.300 | +0.000 [+0.000, +0.000] | 3 |" in out
    assert training_split.main([str(tmp_path), "--pair", "uce+mgda", "uce+dual"]) == 2
    assert "no runs of uce+mgda" in capsys.readouterr().err
