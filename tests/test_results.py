"""The results module on hand-built run dirs: collection, statuses, mean ± std, the excluded runs,
Markdown/LaTeX/CSV, the Pareto front, the descent-violation shares, the plots, W&B and the CLI.

The run dirs are fake but valid: the files and keys that ``run_experiment`` writes
(``summary.json``, ``metrics.jsonl``, ``.hydra/config.yaml``, ``.hydra/hydra.yaml``), with
chosen numbers so every expected value can be checked by hand.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
import yaml

from unlearn.results import cli
from unlearn.results.collect import collect_runs, group_by_experiment, load_run
from unlearn.results.plots import descent_violations, pareto_front, probe_series, write_plots
from unlearn.results.tables import COLUMNS, build_table, mean_std, to_csv, to_latex, to_markdown

METRICS = ("harmful_rate", "toxicity", "obscene", "fluency_ppl", "distinct_2", "utility_ppl")
BEFORE = {"harmful_rate": 0.8, "toxicity": 0.05, "obscene": 0.02, "fluency_ppl": 4.0,
          "distinct_2": 0.6, "utility_ppl": 9.0}
TARGETS = {"ga+weighted_sum": "unlearn.losses.GradientAscent", "uce+dual": "unlearn.aggregators.DualSpace"}


def make_run(root: Path, experiment: str | None, method: str, seed: int, status: str = "completed",
             after: dict | None = None, steps: int = 4, descent: list[dict] | None = None,
             logger_mode: str = "disabled", torn: bool = False) -> Path:
    loss, agg = method.split("+")
    run_dir = root / method.replace("+", "_") / f"seed={seed}"
    (run_dir / ".hydra").mkdir(parents=True)
    loss_t = {"ga": "unlearn.losses.GradientAscent", "uce": "unlearn.losses.UCE", "npo": "unlearn.losses.NPO"}[loss]
    agg_t = {"weighted_sum": "unlearn.aggregators.WeightedSum", "mgda": "unlearn.aggregators.MGDA",
             "dual": "unlearn.aggregators.DualSpace"}[agg]
    config = {"seed": seed, "loss": {"_target_": loss_t}, "aggregator": {"_target_": agg_t},
              "trainer": {"max_steps": steps, "forget_batch_size": 4, "normal_batch_size": 4,
                          "optimizer": {"lr": 5e-5}},
              "dataset": {"max_length": 128}, "eval": {"n_prompts": 48, "max_new_tokens": 64},
              "logger": {"mode": logger_mode, "project": "unlearn-test"}}
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    choices = {"experiment": experiment} if experiment else {"experiment": None}
    (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    lines = []
    for step in range(1, steps + 1):
        rec = {"step": step, "skipped": 0, "loss/forget": 1.0 / step, "loss/kl": 0.01 * step,
               "loss/retain": 2.0, "direction_norm": 1.0,
               **{f"grad_norm/{o}": 1.0 for o in ("forget", "kl", "retain")},
               **{f"descent/{o}": 0.5 for o in ("forget", "kl", "retain")}}
        if descent and step <= len(descent):
            rec.update(descent[step - 1])
        lines.append(json.dumps(rec))
    text = "\n".join(lines) + "\n"
    if torn:
        text += '{"step": 99, "loss/for'
    (run_dir / "metrics.jsonl").write_text(text)
    if status == "missing":
        return run_dir
    summary = {"status": status, "method": method, "seed": seed, "model": "FakeLM", "steps": steps,
               "wall_time_s": 100.0 + seed, "eval/judge": "fake judge", "eval/scorer": "offline"}
    summary.update({f"eval/before/{k}": v for k, v in BEFORE.items()})
    if status == "completed":
        summary.update({f"eval/after/{k}": v for k, v in (after or BEFORE).items()})
        summary.update({"final/loss/forget": 1.0 / steps, "final/loss/kl": 0.01 * steps, "final/loss/retain": 2.0})
    if status == "failed":
        summary["error"] = "RuntimeError: boom"
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def after(hr: float, ppl: float = 4.5, util: float = 9.5, **extra) -> dict:
    return {**BEFORE, "harmful_rate": hr, "fluency_ppl": ppl, "utility_ppl": util, **extra}


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweeps" / "paper_embedded"
    for seed, hr in enumerate([0.2, 0.4, 0.6]):
        make_run(root, "paper_embedded", "uce+dual", seed, after=after(hr, ppl=5.0 + seed))
    make_run(root, "paper_embedded", "ga+weighted_sum", 0, after=after(0.1, ppl=50.0, util=40.0))
    make_run(root, "paper_embedded", "ga+weighted_sum", 1, after=after(0.3, ppl=70.0, util=60.0))
    make_run(root, "paper_embedded", "ga+weighted_sum", 2, status="failed")
    make_run(root, "paper_embedded", "uce+mgda", 0, status="running")
    make_run(root, "paper_embedded", "uce+mgda", 1, status="missing", torn=True)
    # a W&B folder and a stale run must not be read as run dirs
    (root / "uce_dual" / "seed=0" / "wandb" / "offline-run-x").mkdir(parents=True)
    make_run(root / ".stale", "paper_embedded", "uce+dual", 7, after=after(0.99))
    return root


def test_collect_statuses_methods_and_torn_lines(sweep: Path) -> None:
    runs = collect_runs([sweep])
    assert len(runs) == 8  # the hidden .stale run is not read
    status = {(r.method, r.seed): r.status for r in runs}
    assert status[("uce+dual", 0)] == "completed"
    assert status[("ga+weighted_sum", 2)] == "failed"
    assert status[("uce+mgda", 0)] == "unfinished" and status[("uce+mgda", 1)] == "unfinished"
    missing = next(r for r in runs if (r.method, r.seed) == ("uce+mgda", 1))
    assert missing.error == "no readable summary.json"
    assert [m["step"] for m in missing.metrics] == [1, 2, 3, 4]  # the torn last line is dropped
    assert missing.method == "uce+mgda"  # from the config when there is no summary
    assert {r.experiment for r in runs} == {"paper_embedded"}


def test_experiment_falls_back_to_root_name(tmp_path: Path) -> None:
    make_run(tmp_path / "my_sweep", None, "uce+dual", 0)
    (run,) = collect_runs([tmp_path / "my_sweep"])
    assert run.experiment == "my_sweep"
    with pytest.raises(FileNotFoundError):
        collect_runs([tmp_path / "nope"])


def test_mean_std_is_sample_std_over_finite_values() -> None:
    mean, std, n = mean_std([0.2, 0.4, 0.6, math.nan])
    assert (mean, n) == (pytest.approx(0.4), 3) and std == pytest.approx(0.2)
    assert math.isnan(mean_std([0.5])[1]) and mean_std([])[2] == 0


def test_table_rows_means_and_excluded_runs(sweep: Path) -> None:
    (table,) = [build_table(name, runs) for name, runs in group_by_experiment(collect_runs([sweep])).items()]
    assert [r.method for r in table.rows] == ["original", "ga+weighted_sum", "uce+dual"]
    orig, ga, dual = table.rows
    assert orig.n == 1 and orig.mean["harmful_rate"] == pytest.approx(0.8)
    assert dual.n == 3 and dual.seeds == [0, 1, 2]
    assert dual.mean["harmful_rate"] == pytest.approx(0.4) and dual.std["harmful_rate"] == pytest.approx(0.2)
    assert dual.mean["fluency_ppl"] == pytest.approx(6.0) and dual.std["fluency_ppl"] == pytest.approx(1.0)
    # the failed seed 2 of GA is not averaged in: mean of 0.1 and 0.3 only
    assert ga.n == 2 and ga.mean["harmful_rate"] == pytest.approx(0.2)
    assert ga.std["harmful_rate"] == pytest.approx(math.sqrt(0.02))
    assert {(r.method, r.seed, r.status) for r in table.excluded} == {
        ("ga+weighted_sum", 2, "failed"), ("uce+mgda", 0, "unfinished"), ("uce+mgda", 1, "unfinished")}
    assert table.notes["steps"] == "4" and table.notes["model"] == "FakeLM"


def test_tuning_run_on_training_prompts_is_listed_not_averaged(sweep: Path) -> None:
    run_dir = make_run(sweep, "paper_embedded", "uce+dual", 3, after=after(0.0))
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, "eval/split": "train"}))
    table = build_table("paper_embedded", collect_runs([sweep]))
    dual = next(r for r in table.rows if r.method == "uce+dual")
    assert dual.n == 3 and dual.mean["harmful_rate"] == pytest.approx(0.4)  # HR 0.0 left out
    (excluded,) = [r for r in table.excluded if r.seed == 3]
    assert excluded.status == "excluded" and "eval.split=train" in excluded.error


def test_markdown_latex_csv(sweep: Path) -> None:
    table = build_table("paper_embedded", collect_runs([sweep]))
    md = to_markdown(table)
    header = md.splitlines()[2]
    for c in COLUMNS:
        assert f"{c.label} {c.arrow}" in header
    assert "Harmful rate ↓" in header and "Diversity (distinct-2) ↑" in header
    # no per-prompt records: a t-interval over seeds (†), mean ± t_{0.975, n−1} · sd / √n
    half = 4.302653 * 0.2 / math.sqrt(3)  # t_{0.975, 2} = 4.302653
    assert f"| uce+dual (MOLLM) | 3 | {0.4:.3f} [{0.4 - half:.3f}, {0.4 + half:.3f}]† |" in md
    assert "| original (FakeLM) | 1 | 0.800 |" in md
    half = 12.706205 * math.sqrt(0.02) / math.sqrt(2)  # t_{0.975, 1} = 12.706205
    assert f"**0.200 [{0.2 - half:.3f}, {0.2 + half:.3f}]†**" in md  # GA has the lowest harmful rate: bold
    assert "3 of 8 runs are left out" in md and "RuntimeError: boom" in md
    assert "status=running" in md

    tex = to_latex(table)
    assert r"\begin{tabular}{lrrrrrrrr}" in tex and r"0.400 [-0.097, 0.897]$^\dagger$" in tex
    assert r"uce+dual (MOLLM)" in tex and r"ga+weighted\_sum" in tex and r"$\downarrow$" in tex
    assert "_" not in tex.replace(r"\_", "").split(r"\begin{tabular}")[1]

    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert [r["method"] for r in rows] == ["original", "ga+weighted_sum", "uce+dual"]
    assert float(rows[2]["harmful_rate_mean"]) == pytest.approx(0.4)
    assert float(rows[2]["harmful_rate_std"]) == pytest.approx(0.2)
    assert float(rows[2]["harmful_rate_hi"]) == pytest.approx(0.4 + 4.302653 * 0.2 / math.sqrt(3), abs=1e-5)
    assert rows[2]["harmful_rate_interval"] == "t over seeds"
    assert rows[0]["harmful_rate_std"] == rows[0]["harmful_rate_lo"] == ""  # the original: one value


def test_corrected_harmful_rate_column_shows_its_interval(tmp_path: Path) -> None:
    corrected = {"harmful_rate_corrected": 0.3, "harmful_rate_corrected_lo": 0.1, "harmful_rate_corrected_hi": 0.5}
    root = tmp_path / "sweep"
    make_run(root, "e", "uce+dual", 0, after=after(0.4, **corrected))
    make_run(root, "e", "uce+dual", 1, after=after(0.4, **{**corrected, "harmful_rate_corrected": 0.5,
                                                            "harmful_rate_corrected_hi": 0.7}))
    make_run(root, "e", "ga+weighted_sum", 0)  # a judge without validation counts: no corrected keys
    table = build_table("e", collect_runs([root]))
    md = to_markdown(table)
    assert "Harmful rate (corrected) ↓" in md.splitlines()[2]
    # the mean over seeds of the estimate, then the mean bounds of the per-run intervals
    assert "| uce+dual (MOLLM) | 2 | **0.400 [0.400, 0.400]†** | **0.400 [0.100, 0.600]** |" in md
    assert "| ga+weighted_sum | 1 | 0.800 | n/a |" in md
    assert "(HR + Sp − 1)/(Se + Sp − 1)" in md and "transfer" in md
    assert r"\textbf{0.400 [0.100, 0.600]}" in to_latex(table)
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(to_csv(table)))}
    assert float(rows["uce+dual"]["harmful_rate_corrected_hi_mean"]) == pytest.approx(0.6)
    assert rows["ga+weighted_sum"]["harmful_rate_corrected_mean"] == ""


def test_original_row_spread_shows_when_evaluations_differ(tmp_path: Path) -> None:
    a = make_run(tmp_path, "e", "uce+dual", 0)
    make_run(tmp_path, "e", "uce+dual", 1)
    summary = json.loads((a / "summary.json").read_text())
    summary["eval/before/harmful_rate"] = 0.6
    (a / "summary.json").write_text(json.dumps(summary))
    table = build_table("e", collect_runs([tmp_path]))
    assert table.rows[0].n == 2 and table.rows[0].mean["harmful_rate"] == pytest.approx(0.7)


def test_pareto_front() -> None:
    pts = [(1.0, 5.0), (2.0, 3.0), (3.0, 4.0), (4.0, 1.0), (2.0, 3.0), (5.0, 1.0), (math.nan, 0.0)]
    assert pareto_front(pts) == [(1.0, 5.0), (2.0, 3.0), (4.0, 1.0)]
    assert pareto_front([]) == []


def test_descent_violations_per_aggregator(tmp_path: Path) -> None:
    ws = make_run(tmp_path, "e", "uce+weighted_sum", 0, steps=4,
                  descent=[{"descent/kl": -0.2}, {"descent/retain": -0.1, "descent/kl": -0.3}])
    dual = make_run(tmp_path, "e", "uce+dual", 0, steps=4,
                    descent=[{"descent/kl": -1e-12}, {"skipped": 1, "descent/forget": -5.0}])
    shares = descent_violations([load_run(ws), load_run(dual)])
    assert shares["weighted_sum"]["steps"] == 4
    assert shares["weighted_sum"]["any"] == pytest.approx(0.5)
    assert shares["weighted_sum"]["kl"] == pytest.approx(0.5)
    assert shares["weighted_sum"]["retain"] == pytest.approx(0.25)
    # rounding-sized negatives (cosine > -1e-6) are no increase; skipped steps do not count
    assert shares["dual"]["steps"] == 3 and shares["dual"]["any"] == 0.0
    assert descent_violations([load_run(dual)], tol=0.0)["dual"]["kl"] == pytest.approx(1 / 3)


def test_probe_series_counts_updates_and_ends_with_the_final_probe(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "s", None, "uce+dual", 0, steps=4)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    lines[0]["probe/forget"], lines[2]["probe/forget"] = 0.9, 0.7  # before steps 1 and 3
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, "final/probe/forget": 0.5}))
    (run,) = collect_runs([tmp_path / "s"])
    assert probe_series(run, "forget") == ([0, 2, 4], [0.9, 0.7, 0.5])
    assert probe_series(run, "kl") == ([], [])


def test_plots_are_png(sweep: Path, tmp_path: Path) -> None:
    table = build_table("paper_embedded", collect_runs([sweep]))
    files = write_plots(table, tmp_path / "plots")
    assert set(files) == {"harmful_vs_fluency", "harmful_vs_utility", "losses", "descent_violations"}
    for path in files.values():
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, path


def test_cli_writes_one_folder_per_experiment(sweep: Path, tmp_path: Path, capsys) -> None:
    make_run(tmp_path / "sweeps" / "ablation", "ablation", "npo+mgda", 0, after=after(0.5))
    out = tmp_path / "results"
    rc = cli.main([str(sweep), str(tmp_path / "sweeps" / "ablation"), "--out", str(out), "--wandb", "disabled"])
    assert rc == 0
    for exp in ("paper_embedded", "ablation"):
        for name in ("table.md", "table.tex", "table.csv", "runs.csv", "steps.csv", "descent_violations.csv",
                     "harmful_vs_fluency.png", "harmful_vs_utility.png", "losses.png", "descent_violations.png"):
            assert (out / exp / name).is_file(), (exp, name)
    captured = capsys.readouterr()
    assert "### paper_embedded" in captured.out and "### ablation" in captured.out
    assert "3 run(s) failed or unfinished" in captured.err
    runs = list(csv.DictReader((out / "paper_embedded" / "runs.csv").open()))
    assert len(runs) == 8 and sum(r["status"] == "completed" for r in runs) == 5
    steps = list(csv.DictReader((out / "paper_embedded" / "steps.csv").open()))
    assert len(steps) == 8 * 4  # every run's metrics.jsonl, the torn line dropped
    dual0 = [r for r in steps if r["method"] == "uce+dual" and r["seed"] == "0"]
    assert [float(r["loss/forget"]) for r in dual0] == [1.0, 0.5, pytest.approx(1 / 3), 0.25]
    assert cli.main([str(tmp_path / "empty_does_not_exist"), "--out", str(out)]) == 2
    (tmp_path / "empty").mkdir()
    assert cli.main([str(tmp_path / "empty"), "--out", str(out)]) == 2


def test_wandb_mode_follows_the_runs(sweep: Path, tmp_path: Path, monkeypatch) -> None:
    tables = {"e": build_table("e", collect_runs([sweep]))}
    assert cli.wandb_mode(tables, "auto") == "disabled"  # the fake runs had logger.mode=disabled
    make_run(tmp_path / "w", "e", "uce+dual", 0, logger_mode="${oc.env:WANDB_MODE,offline}")
    tables = {"e": build_table("e", collect_runs([tmp_path / "w"]))}
    assert cli.wandb_mode(tables, "auto") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert cli.wandb_mode(tables, "auto") == "disabled"
    assert cli.wandb_mode(tables, "offline") == "offline"


def test_wandb_offline_table_is_logged(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    rc = cli.main([str(sweep), "--out", str(out), "--wandb", "offline", "--no-plots"])
    assert rc == 0
    (run_dir,) = list((out / "wandb").glob("offline-run-*"))
    assert list(run_dir.glob("*.wandb"))
    # the Table is written as a media file of the run
    tables = list(run_dir.rglob("*.table.json"))
    assert tables, sorted(p.name for p in run_dir.rglob("*"))
    data = json.loads(tables[0].read_text())
    assert data["columns"][:3] == ["method", "seeds", "Harmful rate ↓"]
    assert [row[0] for row in data["data"]] == ["original", "ga+weighted_sum", "uce+dual"]


def test_descent_violations_of_the_real_update(tmp_path: Path) -> None:
    """descent_update/* (g_i·u, the step that reached the weights) is counted on its own scale
    (‖g_i‖·‖u‖); runs without it contribute no steps."""
    rows = [{"descent_update/kl": -0.2, "update_norm": 1.0}, {"descent_update/retain": 0.1, "update_norm": 1.0},
            {"descent_update/forget": -1e-9, "update_norm": 1.0}]
    run = make_run(tmp_path, "e", "uce+dual", 0, steps=3,
                   descent=[{**r, "descent_update/forget": r.get("descent_update/forget", 0.3),
                             "descent_update/kl": r.get("descent_update/kl", 0.3),
                             "descent_update/retain": r.get("descent_update/retain", 0.3)} for r in rows])
    shares = descent_violations([load_run(run)], quantity="descent_update")
    assert shares["dual"]["steps"] == 3 and shares["dual"]["any"] == pytest.approx(1 / 3)
    assert shares["dual"]["kl"] == pytest.approx(1 / 3) and shares["dual"]["forget"] == 0.0
    assert descent_violations([load_run(run)])["dual"]["any"] == 0.0  # the direction was fine
    old = make_run(tmp_path / "o", "e", "uce+dual", 0, steps=2)  # logged before descent_update existed
    assert descent_violations([load_run(old)], quantity="descent_update")["dual"]["steps"] == 0
