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

import numpy as np
import pytest
import yaml

from conftest import REPO
from unlearn.results import cli
from unlearn.results.collect import collect_runs, group_by_experiment, load_run
from unlearn.results.comparisons import comparisons
from unlearn.results.comparisons import to_csv as compare_csv
from unlearn.results.comparisons import to_markdown as compare_markdown
from unlearn.results.comparisons import write_comparisons
from unlearn.results.loss_space import loss_space, write_loss_space
from unlearn.results.loss_space import to_markdown as to_hv_markdown
from unlearn.results.plots import descent_violations, pareto_front, probe_series, write_plots
from unlearn.results.tables import (
    build_table, mean_std, runs_to_csv, to_csv, to_latex, to_markdown, write_table,
)
from unlearn.uncertainty.fronts import hypervolume

METRICS = ("harmful_rate", "toxicity", "obscene", "fluency_ppl", "distinct_2", "utility_ppl")
BEFORE = {"harmful_rate": 0.8, "toxicity": 0.05, "obscene": 0.02, "fluency_ppl": 4.0,
          "distinct_2": 0.6, "utility_ppl": 9.0}
TARGETS = {"ga+weighted_sum": "unlearn.losses.GradientAscent", "uce+dual": "unlearn.aggregators.DualSpace"}
# what the sweep driver writes beside the runs: the grid's row order, reference and names
GRID = {"methods": ["ga+weighted_sum", "uce+weighted_sum", "uce+mgda", "uce+dual", "npo+weighted_sum"],
        "reference": "uce+dual", "names": {"uce+dual": "MOLLM"}}


def make_run(root: Path, experiment: str | None, method: str, seed: int, status: str = "completed",
             after: dict | None = None, steps: int = 4, descent: list[dict] | None = None,
             logger_mode: str = "disabled", torn: bool = False) -> Path:
    loss, agg = method.split("+")
    agg, _, optimizer = agg.partition("[")  # "dual[sgd]": the sgd option file's optimizer
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "grid.json").exists() and not root.name.startswith("."):
        (root / "grid.json").write_text(json.dumps(GRID))
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
    if optimizer:
        config["trainer"]["optimizer"] = yaml.safe_load((REPO / "conf" / "optimizer" / f"{optimizer.rstrip(']')}.yaml")
                                                        .read_text())
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
    assert table.shown and all(f"{c.label} {c.arrow}" in header for c in table.shown)
    # runs without declared columns (older summaries) get the default metrics' columns
    paper = ["harmful_rate", "harmful_rate_corrected", "toxicity", "obscene", "fluency_ppl", "distinct_2", "utility_ppl"]
    assert [c.key for c in table.shown if c.key in paper] == paper
    assert {"preference_margin", "harm_drop_beyond_length"} <= {c.key for c in table.shown}
    assert "Harmful rate ↓" in header and "Diversity (distinct-2) ↑" in header
    # no per-prompt records: a t-interval over seeds (†), mean ± t_{0.975, n−1} · sd / √n
    half = 4.302653 * 0.2 / math.sqrt(3)  # t_{0.975, 2} = 4.302653
    assert 0.4 - half < 0  # clipped: a rate is never negative
    assert f"| uce+dual (MOLLM) | 3 | {0.4:.3f} [{0.0:.3f}, {0.4 + half:.3f}]† |" in md
    assert "| original (FakeLM) | 1 | 0.800 |" in md
    half = 12.706205 * math.sqrt(0.02) / math.sqrt(2)  # t_{0.975, 1} = 12.706205
    assert f"**0.200 [0.000, {0.2 + half:.3f}]†**" in md  # GA has the lowest harmful rate: bold (lo clipped)
    assert "3 of 8 runs are left out" in md and "RuntimeError: boom" in md
    assert "status=running" in md

    tex = to_latex(table)
    assert r"\begin{tabular}{l" + "r" * (len(table.shown) + 1) + "}" in tex and r"0.400 [0.000, 0.897]$^\dagger$" in tex
    assert r"uce+dual (MOLLM)" in tex and r"ga+weighted\_sum" in tex and r"$\downarrow$" in tex
    assert "_" not in tex.replace(r"\_", "").split(r"\begin{tabular}")[1]

    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert [r["method"] for r in rows] == ["original", "ga+weighted_sum", "uce+dual"]
    assert float(rows[2]["harmful_rate_mean"]) == pytest.approx(0.4)
    assert float(rows[2]["harmful_rate_std"]) == pytest.approx(0.2)
    assert float(rows[2]["harmful_rate_hi"]) == pytest.approx(0.4 + 4.302653 * 0.2 / math.sqrt(3), abs=1e-5)
    assert rows[2]["harmful_rate_interval"] == "t over seeds"
    assert rows[0]["harmful_rate_std"] == rows[0]["harmful_rate_lo"] == ""  # the original: one value


def patch_summary(run_dir: Path, **values) -> None:
    """Add or replace summary.json keys of a run dir."""
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, **values}))


# a judge's stored error rates (harm.py's values): Se 0.7, Sp 0.8 with cluster-bootstrap intervals
JUDGE = {"judge_sensitivity": 0.7, "judge_sensitivity_lo": 0.64, "judge_sensitivity_hi": 0.76,
         "judge_specificity": 0.8, "judge_specificity_lo": 0.75, "judge_specificity_hi": 0.85,
         "judge_validation_prompts": 232.0, "judge_se_sp_correlation": -0.4}


def stage_values(stage: str, values: dict) -> dict:
    return {f"eval/{stage}/{k}": v for k, v in values.items()}


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
    # both seeds identified; the runs stored no judge error rates, so no interval for the row can be
    # built: the mean alone, never the mean of the per-run bounds (0.100, 0.600 would be that)
    # the only method with a corrected rate is not bolded as "the best" of one
    assert "| uce+dual (MOLLM) | 2 | **0.400 [0.400, 0.400]†** | 0.400 |" in md
    assert "| ga+weighted_sum | 1 | 0.800 | n/a |" in md  # never measured: plain n/a
    assert "(HR + Sp − 1)/(Se + Sp − 1)" in md and "transfer" in md and "never a mean over a subset" in md
    assert "0.400 [0.100, 0.600]" not in md + to_latex(table)
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(to_csv(table)))}
    assert float(rows["uce+dual"]["harmful_rate_corrected_mean"]) == pytest.approx(0.4)
    assert rows["uce+dual"]["harmful_rate_corrected_identified"] == "2/2"
    assert rows["ga+weighted_sum"]["harmful_rate_corrected_mean"] == ""
    assert rows["ga+weighted_sum"]["harmful_rate_corrected_identified"] == ""


def test_corrected_rate_is_shown_only_when_every_seed_is_identified(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    ok = {"harmful_rate_corrected": 0.2, "harmful_rate_corrected_lo": 0.05, "harmful_rate_corrected_hi": 0.4}
    nan = {k: "nan" for k in ok}  # how the suite writes a rate that is not identified
    for seed, values in enumerate([ok, ok, nan]):
        make_run(root, "e", "uce+dual", seed, after=after(0.3, **values, **JUDGE))
    make_run(root, "e", "ga+weighted_sum", 0, after=after(0.3, **ok, **JUDGE))
    table = build_table("e", collect_runs([root]))
    dual, ga = table.row("uce+dual"), table.row("ga+weighted_sum")
    assert dual.identified["harmful_rate_corrected"] == (2, 3) and ga.identified["harmful_rate_corrected"] == (1, 1)
    # two of three seeds: no mean over the subset, not even of the hidden per-run bounds
    assert all(math.isnan(dual.mean[k]) for k in ok)
    md, tex = to_markdown(table), to_latex(table)
    assert "| n/a (2 of 3 identified) |" in md and "n/a (2 of 3 identified)" in tex
    assert "0.200" not in md.split("| uce+dual (MOLLM) | 3 |")[1].splitlines()[0]
    # one run: its own interval
    ga_line = next(x for x in md.splitlines() if x.startswith("| ga+weighted_sum | 1 |"))
    assert "| 0.200 [0.050, 0.400] |" in ga_line
    assert ga.how["harmful_rate_corrected"] == "the run's own interval"
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(to_csv(table)))}
    assert rows["uce+dual"]["harmful_rate_corrected_mean"] == rows["uce+dual"]["harmful_rate_corrected_lo"] == ""
    assert rows["uce+dual"]["harmful_rate_corrected_lo_mean"] == ""
    assert rows["uce+dual"]["harmful_rate_corrected_identified"] == "2/3"
    assert rows["ga+weighted_sum"]["harmful_rate_corrected_identified"] == "1/1"
    assert float(rows["ga+weighted_sum"]["harmful_rate_corrected_hi"]) == pytest.approx(0.4)


def test_corrected_rate_of_several_seeds_carries_the_shared_judge_error(tmp_path: Path) -> None:
    """Seeds share the judge, so its error does not average out: the row's interval is the
    Rogan–Gladen map of the harmful rate's seeds×prompts interval widened by the judge's Se, Sp
    draws, whatever the per-run bounds say."""
    from unlearn.results.intervals import CORRECTED

    rng = np.random.default_rng(3)

    def build(judge: dict) -> tuple:
        root = tmp_path / f"sweep{len(list(tmp_path.iterdir()))}"
        for seed in range(3):
            harmful = rng.random(N_PROMPTS) < 0.4
            run_dir = make_recorded_run(root, "uce+dual", seed, harmful, np.zeros(N_PROMPTS), np.full(N_PROMPTS, 4.0))
            rate = min(1.0, max(0.0, (harmful.mean() + 0.8 - 1) / 0.5))
            # absurd per-run bounds: a mean of them would show [0.000, 1.000]
            patch_summary(run_dir, **stage_values("after", {**judge, "harmful_rate_corrected": rate,
                                                            "harmful_rate_corrected_lo": 0.0,
                                                            "harmful_rate_corrected_hi": 1.0}))
        return build_table("e", collect_runs([root])).row("uce+dual")

    row = build(JUDGE)
    key = "harmful_rate_corrected"
    assert row.identified[key] == (3, 3) and row.how[key] == CORRECTED
    hr_lo, hr, hr_hi = row.lo["harmful_rate"], row.mean["harmful_rate"], row.hi["harmful_rate"]
    assert row.mean[key] == pytest.approx((hr + 0.8 - 1) / 0.5)
    mapped = ((hr_lo + 0.8 - 1) / 0.5, (hr_hi + 0.8 - 1) / 0.5)
    assert row.lo[key] < mapped[0] - 0.01 and row.hi[key] > mapped[1] + 0.01  # the judge's error widens it
    assert (row.lo[key], row.hi[key]) != (0.0, 1.0)
    # a judge known exactly (zero-width Se, Sp intervals): just the harmful rate's interval, mapped
    exact = build({**JUDGE, "judge_sensitivity_lo": 0.7, "judge_sensitivity_hi": 0.7,
                   "judge_specificity_lo": 0.8, "judge_specificity_hi": 0.8})
    e_lo, e_hi = ((exact.lo["harmful_rate"] + 0.8 - 1) / 0.5, (exact.hi["harmful_rate"] + 0.8 - 1) / 0.5)
    assert exact.lo[key] == pytest.approx(e_lo, abs=0.01) and exact.hi[key] == pytest.approx(e_hi, abs=0.01)


def test_footer_states_the_judge_error_and_the_smallest_resolvable_difference(tmp_path: Path) -> None:
    from scipy.stats import norm

    root = tmp_path / "sweep"
    for seed in range(2):
        run_dir = make_run(root, "e", "uce+dual", seed, after=after(0.4))
        patch_summary(run_dir, **stage_values("before", JUDGE), **stage_values("after", JUDGE))
    table = build_table("e", collect_runs([root]))
    md, tex = to_markdown(table), to_latex(table)
    # unpaired two-proportion test at the original's judged rate 0.8, 48 prompts (config eval.n_prompts)
    obs = (norm.ppf(0.975) + norm.ppf(0.8)) * math.sqrt(2 * 0.8 * 0.2 / 48)
    line = next(x for x in md.splitlines() if x.startswith("- judge error: "))
    assert md.index("- judge: fake judge") < md.index("- judge error: ")
    assert ("fake judge: sensitivity 0.700 [0.640, 0.760], specificity 0.800 [0.750, 0.850] (95% cluster "
            "bootstrap over 232 validation prompts), J = Se + Sp − 1 = 0.500") in line
    assert "at 48 prompts" in line and "80% power" in line and "two-sided 5%" in line and "unpaired" in line
    assert f"{obs:.3f} judged, {obs / 0.5:.3f} true (judged ÷ J)" in line
    assert r"Judge fake judge: sensitivity 0.700 [0.640, 0.760]" in tex and "J = Se + Sp - 1 = 0.500" in tex
    assert r"5\%" in tex and "÷" not in tex

    # a run from before the intervals were stored: Jeffreys from the counts in its label, flagged
    old = make_run(tmp_path / "old", "e", "uce+dual", 0)
    patch_summary(old, **stage_values("before", {"judge_sensitivity": 641 / 1189, "judge_specificity": 792 / 1189}),
                  **{"eval/labels/harmful_rate_corrected": "Rogan–Gladen ..., judge sensitivity 0.539 (641/1189), "
                                                           "specificity 0.666 (792/1189) on 2378 held-out PKU"})
    note = build_table("e", collect_runs([tmp_path / "old"])).notes["judge error"]
    from unlearn.evaluation.correction import jeffreys_interval

    lo, hi = jeffreys_interval(641, 1189)
    assert f"sensitivity 0.539 [{lo:.3f}, {hi:.3f}]" in note and "Jeffreys from the counts 641/1189" in note
    assert "too narrow when they share prompts" in note


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


def test_tradeoff_plots_follow_the_declared_roles(tmp_path: Path) -> None:
    """Every forgetting column × every cost column a run declares gets a plot, a higher-is-better
    axis included; a metric without a role gets none."""
    from unlearn.evaluation.metrics.columns import Column

    root = tmp_path / "sweeps" / "e"
    declared = [Column("harmful_rate", "Harmful rate", "lower", tradeoff="forgetting"),
                Column("preference_margin", "Margin", "higher", tradeoff="forgetting"),
                Column("fluency_ppl", "Fluency (PPL)", "lower", tradeoff="cost"),
                Column("distinct_2", "Diversity", "higher")]
    for seed, (hr, margin) in enumerate([(0.2, 0.1), (0.3, 0.05)]):
        run = make_run(root, "e", "uce+dual", seed, after=after(hr, preference_margin=margin))
        summary = json.loads((run / "summary.json").read_text())
        summary["eval/columns"] = [c.to_dict() for c in declared]
        summary["eval/before/preference_margin"] = 0.0
        (run / "summary.json").write_text(json.dumps(summary))
    files = write_plots(build_table("e", collect_runs([root])), tmp_path / "plots")
    assert {k for k in files if "_vs_" in k} == {"harmful_vs_fluency", "preference_vs_fluency"}


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


def test_runs_csv_writes_no_absolute_path(sweep: Path, tmp_path: Path, monkeypatch) -> None:
    """runs.csv names each run dir relative to the CSV's folder, never by an absolute path of the
    machine that ran the sweep, so a committed copy leaks nothing and still resolves."""
    runs = collect_runs([sweep.resolve()])  # absolute roots: the paths must still come out relative
    out = tmp_path / "results" / "paper_embedded"
    files = write_table(build_table("paper_embedded", runs), out)
    text = files["runs"].read_text(encoding="utf-8")
    assert str(tmp_path) not in text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 8
    for row in rows:
        assert not Path(row["path"]).is_absolute() and "\\" not in row["path"], row["path"]
        assert (files["runs"].parent / row["path"]).resolve() in {r.path.resolve() for r in runs}
    assert {row["path"] for row in rows} >= {"../../sweeps/paper_embedded/uce_dual/seed=0"}
    # without a folder: relative to the working directory
    monkeypatch.chdir(tmp_path)
    rows = list(csv.DictReader(io.StringIO(runs_to_csv(runs))))
    assert {row["path"] for row in rows} >= {"sweeps/paper_embedded/uce_dual/seed=0"}


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


# ----------------------------------------------------------------------------- intervals, paired differences,
# fronts and loss-space curves on runs with per-prompt records
N_PROMPTS = 200


def make_recorded_run(root: Path, method: str, seed: int, harmful: np.ndarray, toxicity: np.ndarray,
                      fluency: np.ndarray, prompts: list[str] | None = None, utility: np.ndarray | None = None,
                      curve: list[tuple[float, float, float]] | None = None, source: str = "heldout",
                      margins: list[float] | None = None) -> Path:
    """A completed run whose summary means are those of its per-prompt records (generations.jsonl,
    before and after), optionally with per-example utility NLLs and a loss-space curve."""
    prompts = prompts or [f"prompt {i}" for i in range(len(harmful))]
    extra = {"toxicity": float(np.mean(toxicity))}
    if utility is not None:
        extra["utility_ppl"] = float(np.exp(utility.sum() / (4 * len(utility))))
    steps = len(curve) if curve else 4
    probes = [{f"{source}/forget_nll": f, f"{source}/kl": k, f"{source}/retain": r} for f, k, r in curve or []]
    for probe, margin in zip(probes, margins or [], strict=False):
        probe[f"{source}/margin"] = margin
    run_dir = make_run(root, "e", method, seed, after=after(float(np.mean(harmful)), ppl=float(np.mean(fluency)),
                                                            **extra), steps=steps, descent=probes or None)
    n_before = round(BEFORE["harmful_rate"] * len(prompts))
    stages = {"before": ([True] * n_before + [False] * (len(prompts) - n_before), [BEFORE["toxicity"]] * len(prompts),
                         [BEFORE["fluency_ppl"]] * len(prompts)),
              "after": (harmful, toxicity, fluency)}
    with open(run_dir / "generations.jsonl", "w", encoding="utf-8") as handle:
        for stage, (flags, tox, flu) in stages.items():
            for i, prompt in enumerate(prompts):
                handle.write(json.dumps({"stage": stage, "prompt": prompt, "answer": "a", "n_tokens": 3,
                                         "finished": True, "harmful": bool(flags[i]), "judge_score": 0.5,
                                         "toxicity": float(tox[i]), "obscene": BEFORE["obscene"],
                                         "fluency_ppl": float(flu[i])}) + "\n")
    if utility is not None:
        (run_dir / "utility.jsonl").write_text("".join(
            json.dumps({"stage": "after", "nll": float(v), "n_tokens": 4}) + "\n" for v in utility))
    return run_dir


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """uce+dual (harmful rate ≈ 0.1), ga+weighted_sum (≈ 0.5: a large difference) and uce+mgda (the
    very same answers as uce+dual with the seeds permuted: a null difference, exactly 0)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "sweep"
    dual = [rng.random(N_PROMPTS) < 0.1 for _ in range(3)]
    tox = [rng.random(N_PROMPTS) * 0.1 for _ in range(3)]
    flu = [4.0 + rng.random(N_PROMPTS) for _ in range(3)]
    util = [2.0 + rng.random(30) for _ in range(3)]
    for seed in range(3):
        up = 1.0 + 0.1 * seed
        make_recorded_run(root, "uce+dual", seed, dual[seed], tox[seed], flu[seed], utility=util[seed],
                          curve=[(2.0, 0.0, 1.0), (4.0, 0.1, 1.1), (5.0 + up, 0.15, 1.2)])
        make_recorded_run(root, "uce+mgda", seed, dual[(seed + 1) % 3], tox[(seed + 1) % 3], flu[(seed + 1) % 3],
                          utility=util[(seed + 1) % 3], curve=[(2.0, 0.0, 1.0), (3.0, 0.2, 1.3), (4.0, 0.3, 1.4)])
        make_recorded_run(root, "ga+weighted_sum", seed, rng.random(N_PROMPTS) < 0.5, tox[seed] + 0.2,
                          flu[seed] * 3, utility=util[seed] + 1.0,
                          curve=[(2.0, 0.0, 1.0), (3.0, 0.4, 1.6), (3.5 + up, 0.8, 2.0)])
    return root


def test_per_prompt_intervals_in_the_tables(planted: Path) -> None:
    table = build_table("e", collect_runs([planted]))
    dual = table.row("uce+dual")
    assert dual.how["harmful_rate"] == "seeds×prompts" and dual.how["fluency_ppl"] == "seeds×prompts"
    assert dual.lo["harmful_rate"] < dual.mean["harmful_rate"] < dual.hi["harmful_rate"]
    assert dual.hi["harmful_rate"] - dual.lo["harmful_rate"] < 0.2  # 600 answers: a real interval, not a t over 3
    # utility from the per-example NLLs, mapped through exp: it brackets the corpus PPL
    assert dual.how["utility_ppl"] == "seeds×prompts"
    assert dual.lo["utility_ppl"] < dual.mean["utility_ppl"] < dual.hi["utility_ppl"]
    assert dual.how["distinct_2"] == "t over seeds"  # a corpus-level metric: no per-prompt values
    orig = table.rows[0]
    assert orig.lo["harmful_rate"] < orig.mean["harmful_rate"] < orig.hi["harmful_rate"]  # over its prompts
    md = to_markdown(table)
    cell = f"{dual.mean['harmful_rate']:.3f} [{dual.lo['harmful_rate']:.3f}, {dual.hi['harmful_rate']:.3f}]"
    assert f"| uce+dual (MOLLM) | 3 | **{cell}** |" in md  # best (tied with uce+mgda); no † here
    assert "0.600 [0.600, 0.600]†" in md  # distinct-2, identical over seeds
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(to_csv(table)))}
    assert float(rows["uce+dual"]["harmful_rate_lo"]) == pytest.approx(dual.lo["harmful_rate"])
    assert rows["uce+dual"]["harmful_rate_interval"] == "seeds×prompts"
    assert {"harmful_rate_mean", "harmful_rate_lo", "harmful_rate_hi", "harmful_rate_std"} <= set(rows["uce+dual"])
    # records that do not reproduce a run's summary value (another evaluation) are not used
    summary_path = planted / "uce_dual" / "seed=1" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps({**summary, "eval/after/harmful_rate": 0.7}))
    changed = build_table("e", collect_runs([planted])).row("uce+dual")
    assert changed.how["harmful_rate"].startswith("t over seeds (per-prompt records do not reproduce")
    assert changed.how["toxicity"] == "seeds×prompts"


def test_runs_on_another_prompt_set_are_excluded_not_pooled(planted: Path) -> None:
    rng = np.random.default_rng(5)
    make_recorded_run(planted, "uce+dual", 3, rng.random(50) < 0.9, rng.random(50), 4 + rng.random(50),
                      prompts=[f"other {i}" for i in range(50)])
    table = build_table("e", collect_runs([planted]))
    assert table.row("uce+dual").n == 3 and table.row("uce+dual").seeds == [0, 1, 2]
    (excluded,) = table.excluded
    assert excluded.seed == 3 and excluded.status == "excluded" and "another prompt set (50 prompts" in excluded.error
    assert "another prompt set" in to_markdown(table)


def test_paired_differences_resolve_the_planted_difference_only(planted: Path) -> None:
    table = build_table("e", collect_runs([planted]))
    found = {(c.method, c.metric): c for c in comparisons(table)}
    ga, null = found[("ga+weighted_sum", "harmful_rate")], found[("uce+mgda", "harmful_rate")]
    # the fake runs share seeds and data settings: seed s trained both on the same batches
    assert ga.how == null.how == "paired by (seed, prompt)" and ga.n_prompts == N_PROMPTS
    assert ga.resolved and ga.interval.lo > 0.25  # planted: 0.5 − 0.1
    assert not null.resolved and null.interval.estimate == pytest.approx(0.0)
    assert null.interval.lo < 0 < null.interval.hi
    assert ga.mcnemar[0] > ga.mcnemar[1] and ga.mcnemar[2] < 1e-6
    assert null.mcnemar == (0, 0, 1.0)  # the same majority flags
    assert found[("ga+weighted_sum", "fluency_ppl")].resolved
    assert found[("ga+weighted_sum", "utility_loss")].interval.estimate == pytest.approx(0.25)  # +1 nat / 4 tokens
    assert found[("ga+weighted_sum", "distinct_2")].how == "Welch t over seeds"
    md = compare_markdown(table, list(found.values()))
    ga_row = next(line for line in md.splitlines() if line.startswith("| ga+weighted_sum |"))
    null_row = next(line for line in md.splitlines() if line.startswith("| uce+mgda |"))
    assert ga_row.split(" | ")[1].endswith("]*") and not null_row.split(" | ")[1].endswith("*")
    reading_line = next(line for line in md.splitlines() if line.startswith("- harmful rate:"))
    assert "uce+dual has a lower harmful rate than ga+weighted_sum by 0.4" in reading_line
    assert "(better)" in reading_line and "indistinguishable from uce+mgda" in reading_line
    assert "uce+mgda" not in reading_line.split(";")[0]
    rows = list(csv.DictReader(io.StringIO(compare_csv(table, list(found.values())))))
    ga_csv = next(r for r in rows if r["method"] == "ga+weighted_sum" and r["metric"] == "harmful_rate")
    assert ga_csv["resolved"] == "1" and float(ga_csv["mcnemar_p"]) < 1e-6 and ga_csv["reference"] == "uce+dual"
    # another reference: the comparison turns around
    flipped = {(c.method, c.metric): c for c in comparisons(table, reference="ga+weighted_sum")}
    assert flipped[("uce+dual", "harmful_rate")].interval.estimate == pytest.approx(-ga.interval.estimate)


def test_hypervolume_of_a_dominating_curve_is_larger(planted: Path, tmp_path: Path) -> None:
    table = build_table("e", collect_runs([planted]))
    space = loss_space(table)
    assert space.source == "heldout"
    # reference: −(step-0 forget NLL), 1.1 × max KL, 1.1 × max retain over all curves
    assert space.reference.tolist() == pytest.approx([-2.0, 0.88, 2.2])
    hv = {m: [v for _, _, v in rows] for m, rows in space.per_seed.items()}
    assert min(hv["uce+dual"]) > max(hv["uce+mgda"]) > 0 and min(hv["uce+dual"]) > max(hv["ga+weighted_sum"])
    # one seed's volume by hand (2-D slices, the final point of each curve dominates)
    assert hv["uce+mgda"][0] == pytest.approx(hypervolume([[-3, 0.2, 1.3], [-4, 0.3, 1.4]], [-2, 0.88, 2.2]))
    interval = space.method_interval("uce+dual")
    assert interval.lo < np.mean(hv["uce+dual"]) < interval.hi
    files = write_loss_space(table, tmp_path / "out")
    rows = list(csv.DictReader(files["hypervolume_csv"].open()))
    assert len(rows) == 3 * 4 and {r["seed"] for r in rows} == {"0", "1", "2", "all"}
    md = files["hypervolume_md"].read_text()
    assert "reference point (−forget_nll, kl, retain) = (-2, 0.88, 2.2)" in md and "held-out" in md
    assert files["loss_space"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # paired by seed within one update rule: the dominating curve resolves against both others
    from unlearn.identity import parse_label
    from unlearn.results.loss_space import paired_hypervolumes

    pairs = {(p.a, p.b): p for p in paired_hypervolumes(space)}
    assert set(pairs) == {("ga+weighted_sum", "uce+mgda"), ("ga+weighted_sum", "uce+dual"), ("uce+mgda", "uce+dual")}
    dual_vs_mgda = pairs[("uce+mgda", "uce+dual")]
    assert dual_vs_mgda.seeds == (0, 1, 2) and dual_vs_mgda.resolved and dual_vs_mgda.interval.hi < 0
    diffs = [hv["uce+mgda"][k] - hv["uce+dual"][k] for k in range(3)]
    assert dual_vs_mgda.interval.estimate == pytest.approx(np.mean(diffs))
    assert "#### Paired by seed, within each update rule" in md and "| uce+mgda − uce+dual | adamw | 3 |" in md
    stored = {(r["a"], r["b"]): r for r in csv.DictReader(files["hypervolume_paired_csv"].open())}
    assert set(stored) == set(pairs) and stored[("uce+mgda", "uce+dual")]["resolved"] == "True"
    assert float(stored[("uce+mgda", "uce+dual")]["hi"]) == pytest.approx(dual_vs_mgda.interval.hi)
    assert float(stored[("uce+mgda", "uce+dual")]["half_width_unpaired"]) == pytest.approx(
        dual_vs_mgda.unpaired_half_width)
    assert parse_label("uce+dual[sgd]").update_rule == "[sgd]"
    assert parse_label("ga+weighted_sum(weights=0.5,1,1)").update_rule == ""


def test_loss_space_falls_back_to_probe_points(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for seed in range(2):
        make_recorded_run(tmp_path / "s", "uce+dual", seed, rng.random(20) < 0.2, rng.random(20), 4 + rng.random(20),
                          curve=[(1.0, 0.0, 1.0), (2.0, 0.1, 1.2)], source="probe")
    space = loss_space(build_table("e", collect_runs([tmp_path / "s"])))
    assert space.source == "probe" and len(space.curves) == 2
    assert "training examples" in to_hv_markdown(build_table("e", collect_runs([tmp_path / "s"])), space)


def test_loss_space_takes_the_heldout_margin_when_every_curve_has_it(tmp_path: Path) -> None:
    """The forgetting coordinate is heldout/margin when every curve logged it (the reference point
    and the volumes follow it), and forget NLL as soon as one curve lacks it."""
    rng = np.random.default_rng(2)
    curve = [(1.0, 0.0, 1.0), (2.0, 0.1, 1.2), (3.0, 0.2, 1.3)]
    for seed in range(2):
        make_recorded_run(tmp_path / "s", "uce+dual", seed, rng.random(20) < 0.2, rng.random(20), 4 + rng.random(20),
                          curve=curve, margins=[0.05, 0.10, 0.30])
    table = build_table("e", collect_runs([tmp_path / "s"]))
    space = loss_space(table)
    assert space.forgetting == "margin" and space.curves[0].points[:, 0].tolist() == pytest.approx([0.05, 0.1, 0.3])
    assert space.reference[0] == pytest.approx(-0.05)
    assert space.per_seed["uce+dual"][0][2] == pytest.approx(
        hypervolume([[-0.05, 0.0, 1.0], [-0.1, 0.1, 1.2], [-0.3, 0.2, 1.3]], space.reference))
    md = to_hv_markdown(table, space)
    assert "(−margin, kl, retain)" in md and "held-out margin" in md
    # asked for, the same curves in forget NLL; the files carry both, margin first
    by_nll = loss_space(table, "forget_nll")
    assert by_nll.forgetting == "forget_nll" and by_nll.curves[0].points[:, 0].tolist() == pytest.approx([1, 2, 3])
    files = write_loss_space(table, tmp_path / "out", plots=False)
    rows = list(csv.DictReader(files["hypervolume_csv"].open()))
    assert [r["forgetting"] for r in rows] == ["margin"] * 3 + ["forget_nll"] * 3
    text = files["hypervolume_md"].read_text()
    assert text.index("curves (margin)") < text.index("curves (forget NLL)")
    make_recorded_run(tmp_path / "s", "uce+mgda", 0, rng.random(20) < 0.2, rng.random(20), 4 + rng.random(20),
                      curve=curve)  # no margin logged
    space = loss_space(build_table("e", collect_runs([tmp_path / "s"])))
    assert space.forgetting == "forget_nll" and len(space.curves) == 3 and space.reference[0] == pytest.approx(-1.0)


def test_cli_writes_paired_and_hypervolume_files(planted: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "results"
    assert cli.main([str(planted), "--out", str(out), "--wandb", "disabled", "--reference", "uce+dual"]) == 0
    for name in ("paired_differences.md", "paired_differences.csv", "hypervolume.md", "hypervolume.csv",
                 "loss_space.png", "harmful_vs_fluency.png", "harmful_vs_utility.png"):
        assert (out / "e" / name).is_file(), name
    printed = capsys.readouterr().out
    assert "differences against uce+dual" in printed and "reference point" in printed


def flagged_table(root: Path, rates: dict[str, float], seed: int, seeds: int = 3):
    """The table of recorded runs of each method at ``seeds`` seeds, each prompt flagged harmful
    with the method's rate (toxicity and fluency random alike for all)."""
    rng = np.random.default_rng(seed)
    for s in range(seeds):
        for method, rate in rates.items():
            make_recorded_run(root, method, s, rng.random(N_PROMPTS) < rate, rng.random(N_PROMPTS) * 0.1,
                              4.0 + rng.random(N_PROMPTS))
    return build_table("e", collect_runs([root]))


def test_each_update_rule_is_compared_with_its_own_dual_row(tmp_path: Path) -> None:
    """Methods under SGD are compared with uce+dual[sgd] in their own section (beside the
    comparison of every method with the reference and with the original model)."""
    table = flagged_table(tmp_path / "s", {"uce+dual": 0.1, "uce+mgda": 0.1, "uce+dual[sgd]": 0.1,
                                           "uce+mgda[sgd]": 0.6}, seed=3)
    from unlearn.results.comparisons import within_update_rules

    local = within_update_rules(table, "uce+dual")
    assert list(local) == ["uce+dual[sgd]"]
    assert {c.method for c in local["uce+dual[sgd]"]} == {"uce+mgda[sgd]"}
    harm = next(c for c in local["uce+dual[sgd]"] if c.metric == "harmful_rate")
    assert harm.interval.lo > 0.3  # mgda[sgd] is flagged about 0.5 more often: resolved
    files = write_comparisons(table, tmp_path / "out", "uce+dual")
    md = files["paired_md"].read_text()
    assert md.index("differences against uce+dual\n") < md.index("differences against uce+dual[sgd]") \
        < md.index("differences against original")
    rows = list(csv.DictReader(files["paired_csv"].open()))
    assert {r["reference"] for r in rows} == {"uce+dual", "uce+dual[sgd]", "original"}
    assert {r["method"] for r in rows if r["reference"] == "uce+dual[sgd]"} == {"uce+mgda[sgd]"}


def test_other_objectives_are_compared_under_each_aggregator(tmp_path: Path) -> None:
    """X+agg is compared with uce+agg (the reference's losses) for every other aggregator agg,
    its settings ignored, in a section per local reference; under the reference's own
    aggregator the main section has it."""
    from unlearn.results.comparisons import aggregator_key, within_aggregators

    assert aggregator_key("uce,kl,retain,safe+weighted_sum(weights=1,1,1,1)") == "weighted_sum"
    assert aggregator_key("ga+mgda[sgd]") == "mgda[sgd]"
    table = flagged_table(tmp_path / "s", {"uce+dual": 0.1, "uce+weighted_sum": 0.1, "uce+mgda": 0.1,
                                           "ga+dual": 0.1, "ga+weighted_sum": 0.6, "ga+mgda": 0.1}, seed=4)
    local = within_aggregators(table, "uce+dual")
    assert set(local) == {"uce+weighted_sum", "uce+mgda"}
    assert {c.method for c in local["uce+weighted_sum"]} == {"ga+weighted_sum"}
    assert {c.method for c in local["uce+mgda"]} == {"ga+mgda"}
    harm = next(c for c in local["uce+weighted_sum"] if c.metric == "harmful_rate")
    assert harm.interval.lo > 0.3  # flagged about 0.5 more often: resolved
    mgda = next(c for c in local["uce+mgda"] if c.metric == "harmful_rate")
    assert mgda.interval.lo < 0 < mgda.interval.hi  # the same rate: not resolved
    md = write_comparisons(table, tmp_path / "out", "uce+dual")["paired_md"].read_text()
    assert md.index("differences against uce+dual\n") < md.index("differences against uce+weighted_sum") \
        < md.index("differences against original")


def test_intervals_never_leave_the_values_a_metric_can_take() -> None:
    """Two seeds far apart give t_{1} = 12.7 × se: the raw interval reaches below 0 (a rate) or
    below the smallest perplexity; the tables clip it to the range of the values."""
    import numpy as np

    from unlearn.results.intervals import Bootstrap, clipped, matrix_interval
    from unlearn.uncertainty import Interval, seed_prompt_interval

    rates = np.array([[0.0] * 19 + [1.0], [1.0] * 10 + [0.0] * 10])
    raw = seed_prompt_interval(rates)
    assert raw.lo < 0.0  # what would have been printed
    iv = matrix_interval(rates, "harmful_rate", Bootstrap())
    assert iv.lo == 0.0 and iv.hi <= 1.0 and iv.estimate == raw.estimate
    ppl = np.array([[2.0, 3.0, 2.5, 2.2], [40.0, 90.0, 60.0, 70.0]])
    assert matrix_interval(ppl, "fluency_ppl", Bootstrap()).lo >= 2.0
    assert clipped(Interval(0.5, -1.0, 2.0), 0.0, 1.0).to_dict("x") == {"x": 0.5, "x_lo": 0.0, "x_hi": 1.0}


def test_seed_paired_differences_when_seeds_share_their_data(tmp_path: Path) -> None:
    """Two methods, 3 seeds, the same data settings: seed s gave both the same batches, so a
    seed's effect is shared and the (seed, prompt) differences cancel it; the interval is
    narrower than the one treating the seeds as independent (here 0.20 vs 0.26, though the
    pivot it uses is the more conservative of the two). Other data settings: no pairing."""
    from unlearn.evaluation.metrics.columns import Column
    from unlearn.results.collect import Run
    from unlearn.results.comparisons import PAIRED, SEED_PAIRED, compare
    from unlearn.results.intervals import Bootstrap
    from unlearn.results.records import StageRecords
    from unlearn.results.tables import Table

    rng = np.random.default_rng(5)
    prompts = tuple(f"p{i}" for i in range(200))
    prompt_effect = rng.standard_normal(200)
    seed_effect = 1.2 * rng.standard_normal(3)  # the data order of seed s moves both methods alike

    def runs(method: str, shift: float, steps: int) -> tuple[list[Run], dict[str, StageRecords]]:
        out, records = [], {}
        for s in range(3):
            p = 1 / (1 + np.exp(-(-1.0 + shift + seed_effect[s] + prompt_effect)))
            flags = (rng.random(200) < p).astype(float)
            config = {"seed": s, "dataset": {"max_length": 128},
                      "trainer": {"forget_batch_size": 4, "normal_batch_size": 4, "max_steps": steps}}
            run = Run(tmp_path / method / str(s), "demo", method, s, "completed",
                      {"eval/after/harmful_rate": float(flags.mean())}, config)
            out.append(run)
            records[str(run.path)] = StageRecords(prompts, {"harmful_rate": flags})
        return out, records

    a, rec_a = runs("a", 0.5, 15)
    b, rec_b = runs("b", 0.0, 15)
    table = Table("demo", [], [*a, *b], records={**rec_a, **rec_b},
                  columns=(Column("harmful_rate", "Harmful rate", field="harmful"),))
    paired = compare(table, "a", "b", "harmful_rate", Bootstrap())
    assert paired.how == SEED_PAIRED and paired.interval.method.startswith(SEED_PAIRED)
    assert paired.interval.estimate == pytest.approx(np.mean([r.summary["eval/after/harmful_rate"] for r in a])
                                                     - np.mean([r.summary["eval/after/harmful_rate"] for r in b]))
    assert paired.interval.half_width < 0.85 * paired.unpaired_half_width
    c, rec_c = runs("c", 0.5, 30)  # another number of steps: seed s did not see the same batches
    other = Table("demo", [], [*c, *b], records={**rec_c, **rec_b}, columns=table.columns)
    unpaired = compare(other, "c", "b", "harmful_rate", Bootstrap())
    assert unpaired.how == PAIRED and math.isnan(unpaired.unpaired_half_width)


def test_budget_splits_each_run_into_its_timed_parts(tmp_path: Path) -> None:
    from unlearn.results.budget import budget_rows, elapsed_s, write_budget

    root = tmp_path / "sweeps" / "paper_embedded"
    for seed, (train, evaluation) in enumerate([(60.0, 30.0), (80.0, 50.0)]):
        run_dir = make_run(root, "paper_embedded", "uce+dual", seed, steps=4)
        summary = json.loads((run_dir / "summary.json").read_text())
        summary.update({"wall_time_s": train + evaluation + 10.0, "train_time_s": train,
                        "eval/after/time_s": evaluation, "eval/after/time/fluency_s": 5.0 + seed,
                        "eval/after/time/preference_s": 10.0})
        (run_dir / "summary.json").write_text(json.dumps(summary))
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps({**r, "time/step_s": 10.0}) + "\n" for r in records))
    make_run(root, "paper_embedded", "uce+mgda", 0, status="failed")  # not a completed run: not counted
    runs = collect_runs([root])
    rows = {r["part"]: r for r in budget_rows(runs)}
    assert rows["run"]["runs"] == 2 and rows["run"]["total_s"] == 100.0 + 140.0
    assert rows["training/steps"]["mean_s"] == 40.0                           # 4 steps × 10 s
    assert (rows["training/probes, other"]["min_s"], rows["training/probes, other"]["max_s"]) == (20.0, 40.0)
    assert rows["evaluation/fluency"]["mean_s"] == 5.5
    assert (rows["evaluation/decoding, other"]["min_s"], rows["evaluation/decoding, other"]["max_s"]) == (15.0, 34.0)
    assert rows["start-up, saving"]["total_s"] == 20.0
    assert math.isclose(rows["training"]["share"], 140.0 / 240.0)
    assert list(rows).index("evaluation/preference") < list(rows).index("evaluation/fluency")  # largest first
    assert elapsed_s(runs) >= 140.0 - 1e-6  # at least the longest run
    files = write_budget(runs, "paper_embedded", tmp_path / "out")
    text = files["budget_md"].read_text()
    assert "| part | mean s | median [min, max] s | sum over runs | share |" in text
    assert "| &nbsp;&nbsp;steps | 40 | 40 [40, 40] | 1.3 min | 33% |" in text
    assert rows["run"]["median_s"] == 120.0
    assert files["budget_csv"].read_text().splitlines()[0] == "part,runs,mean_s,median_s,min_s,max_s,total_s,share"
