"""experiments/lr_rule.py without training: the ladder search and a stopped search continuing."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
sys.path.insert(0, str(EXPERIMENTS))  # lr_rule imports the shared harness
spec = importlib.util.spec_from_file_location("lr_rule", EXPERIMENTS / "lr_rule.py")
lr_rule = importlib.util.module_from_spec(spec)
sys.modules["lr_rule"] = lr_rule
spec.loader.exec_module(lr_rule)


def test_run_dir_names_have_no_comma() -> None:
    assert "," not in lr_rule.slug("loss=ga aggregator.weights=[0.5,1.0,1.0]")


def test_ladder_search_finds_the_largest_passing_rung() -> None:
    tried = []

    def below(limit):
        def ok(rate):
            tried.append(rate)
            return rate <= limit
        return ok

    assert lr_rule.ladder_search(1e-2, below(3e-2)) == 2e-2 and tried == [1e-2, 2e-2, 4e-2]
    tried.clear()
    assert lr_rule.ladder_search(1e-2, below(3e-3)) == 2.5e-3 and tried == [1e-2, 5e-3, 2.5e-3]
    assert lr_rule.ladder_search(1e-2, below(0.0), max_tries=3) is None


def test_a_row_where_no_rung_passes_gets_the_smallest_probe_kl_and_says_so() -> None:
    assert lr_rule.choose(5e-5, 2.5e-5, {}) == (2.5e-5, "largest passing rung")
    kls = {5e-5: 0.33, 2.5e-5: 0.28, 1.25e-5: 0.24, 6.25e-6: 0.29, 3e-6: float("nan")}
    rate, how = lr_rule.choose(5e-5, None, kls)
    assert rate == 1.25e-5 and how.startswith("smallest probe KL")
    assert lr_rule.choose(5e-5, None, {5e-5: None}) == (5e-5, "r0: no rung finished")


def test_a_stopped_search_keeps_its_bound_and_rows(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "rates.json"
    out.write_text(json.dumps({"experiment": "paper_embedded", "bound": 0.2, "overrides": [],
                               "reference": {"row": "loss=uce aggregator=dual", "lr": 5e-5},
                               "rows": {"loss=uce aggregator=mgda": {"start": 5e-5, "chosen_lr": 1e-4, "tried": {
                                   "0.0001": {"status": "completed"}}},
                                        "loss=ga aggregator=weighted_sum": {"start": 5e-5, "chosen_lr": None, "tried": {
                                            "5e-05": {"status": "missing"}}}}}))
    runs = []

    def fake_run(row, lr, args):
        runs.append((row, lr))
        return {"status": "completed", "final/probe/kl": 0.1 if lr <= 1e-2 else 0.5}

    monkeypatch.setattr(lr_rule, "run", fake_run)
    monkeypatch.setattr(lr_rule, "optimizer_default_lr", lambda row: 1e-2)
    lr_rule.main(["--rows", "loss=uce aggregator=mgda", "loss=uce aggregator=dual optimizer=sgd",
                  "loss=ga aggregator=weighted_sum", "--out", str(out), "--runs", str(tmp_path / "runs")])
    # the done row is kept; the row whose runs failed to start is searched again
    assert [row for row, _ in runs] == ["loss=uce aggregator=dual optimizer=sgd"] * 2 + ["loss=ga aggregator=weighted_sum"] * 2
    saved = json.loads(out.read_text())
    assert saved["bound"] == 0.2 and saved["rows"]["loss=uce aggregator=mgda"]["chosen_lr"] == 1e-4
    assert saved["rows"]["loss=uce aggregator=dual optimizer=sgd"]["chosen_lr"] == 1e-2
