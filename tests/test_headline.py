"""experiments/headline.py on hand-made results files: signs, stars, readings and the fluency table."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
spec = importlib.util.spec_from_file_location("headline", EXPERIMENTS / "headline.py")
headline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(headline)


def _write(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _pair(reference: str, method: str, metric: str, d: float, lo: float, hi: float) -> dict:
    return {"reference": reference, "method": method, "metric": metric, "difference": d, "lo": lo, "hi": hi,
            "seeds_reference": 5}


def test_headline_reads_dual_minus_each_aggregator_per_update_rule(tmp_path: Path, capsys) -> None:
    paired = [  # stored as method − reference
        _pair("uce+dual", "uce+mgda", "preference_margin", -0.02, -0.03, -0.01),   # dual's margin higher
        _pair("uce+dual", "uce+mgda", "utility_loss", -0.5, -0.6, -0.4),           # dual's utility loss higher
        _pair("uce+dual", "uce+mgda[sgd]", "utility_loss", 9.0, 8.0, 10.0),        # another rule: not a row
        _pair("uce+dual[sgd]", "uce+weighted_sum[sgd]", "harmful_rate", 0.01, -0.02, 0.04),
        _pair("original", "uce+dual", "fluency_ppl", 3.0, 1.0, 5.0),
    ]
    _write(tmp_path / "paired_differences.csv", paired)
    hv = [{"method": m, "seed": s, "hypervolume": v} for m, vals in
          {"uce+dual": [1.0, 1.2, 1.1], "uce+mgda": [0.5, 0.6, 0.7]}.items() for s, v in enumerate(vals)]
    _write(tmp_path / "hypervolume.csv", hv)
    runs = [{"method": "uce+dual", "status": "completed", "after/fluency_ppl": v} for v in (4.0, 9.5)]
    _write(tmp_path / "runs.csv", [*runs, {"method": "uce+dual", "status": "failed", "after/fluency_ppl": 99.0}])
    assert headline.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    mgda = next(line for line in out.splitlines() if line.startswith("| adamw | mgda |"))
    assert "+0.020 [+0.010, +0.030]* dual better" in mgda       # margin: higher is better
    assert "+0.500 [+0.400, +0.600]* dual worse" in mgda         # utility loss: lower is better
    assert "+0.500 [" in mgda.split("|")[-3] and "dual better" in mgda.split("|")[-3]  # hypervolume, by seed
    sgd = next(line for line in out.splitlines() if line.startswith("| sgd | weighted_sum |"))
    assert "-0.010 [-0.040, +0.020] |" in sgd and "*" not in sgd  # not resolved: no reading
    assert "| uce+dual | +3.00 [+1.00, +5.00]* | 4.00–9.50 | 2 |" in out
    assert "+9.000" not in out and "-9.000" not in out


def test_headline_names_the_missing_file(tmp_path: Path, capsys) -> None:
    assert headline.main([str(tmp_path)]) == 2
    assert "paired_differences.csv" in capsys.readouterr().err
