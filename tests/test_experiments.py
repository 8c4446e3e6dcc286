"""Experiment configs, method configs, launchers and the resumable sweep driver.

* every ``conf/experiment`` option composes, resolves, and its grid has the methods the issue asks for;
* every ``conf/method`` option selects the loss and aggregator its name says;
* the joblib and SLURM launcher configs compose, and the SLURM one renders a valid sbatch script
  (SLURM is absent: submission is intercepted);
* the driver plans completed / stale / conflicting / missing jobs and covers the missing set exactly;
* one real tiny sweep through the CLI: two jobs, a table, then a rerun that launches nothing.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CONF, REPO, compose_config
from hydra.utils import instantiate
from omegaconf import OmegaConf

from unlearn.experiment import run_label
from unlearn.results import sweep

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
YAO = "ga,mismatch,kl+weighted_sum"  # Yao et al. 2023's baseline (method=yao)
PAPER_METHODS = {"ga+weighted_sum", YAO, "uce+weighted_sum", "uce+mgda", "uce+dual", "npo+weighted_sum"}
AGGREGATORS = ("weighted_sum", "mgda", "dual", "upgrad", "dualproj", "pcgrad", "cagrad", "imtlg", "alignedmtl")


def compose_hydra(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_experiment_options_exist() -> None:
    assert {"paper_embedded", "paper_llama3", "ablation"} <= set(EXPERIMENTS)


# robustness sweeps evaluations of saved models, not methods (tests/test_attacks.py covers it)
@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e != "robustness"])
def test_experiment_grid_composes(experiment: str, data_dir: Path) -> None:
    plain, grid = sweep.grid(experiment, [f"data_dir={data_dir}"])
    assert list(grid) == ["seed", "+method"] and grid["seed"] == ["0", "1", "2"]  # seed-major order
    labels = set()
    for method in grid["+method"]:
        cfg = compose_config([f"experiment={experiment}", f"+method={method}"], data_dir)
        OmegaConf.resolve(cfg)  # every interpolation resolves
        labels.add(run_label(cfg))
        instantiate(cfg.loss), instantiate(cfg.aggregator)
    if experiment == "ablation":
        assert labels == ({f"{loss}+{a}" for loss in ("ga", "uce", "npo") for a in AGGREGATORS[:3]}
                          | {f"uce+{a}" for a in AGGREGATORS[3:]} | {YAO})
    else:
        assert labels == PAPER_METHODS
    hydra_cfg = compose_hydra([f"experiment={experiment}", f"+method={grid['+method'][0]}", "seed=2",
                               "output_root=/x"])
    assert hydra_cfg.hydra.sweep.dir == f"/x/sweeps/{experiment}"
    assert hydra_cfg.hydra.sweep.subdir == f"{grid['+method'][0]}/seed=2"  # no job number: stable


def test_paper_embedded_settings_fit_the_cpu_budget(data_dir: Path) -> None:
    cfg = compose_config(["experiment=paper_embedded", "+method=uce_dual"], data_dir)
    assert cfg.model._target_.endswith("load_smollm2") and cfg.trainer.lora is False
    assert cfg.judge._target_.endswith("build_embedded_judge") and cfg.scorer._target_.endswith("OfflineScorer")
    assert cfg.trainer.save_model is True and cfg.trainer.checkpoint_every == 0  # models for make robustness
    assert cfg.dataset.max_length <= 128 and cfg.eval.enabled
    assert cfg.eval.n_prompts >= 200 and cfg.eval.max_new_tokens <= 64  # resolves 0.10 in harmful rate
    assert cfg.trainer.heldout_probe_size > 0 and cfg.trainer.probe_every > 0  # the loss-space curves
    ga = compose_config(["experiment=paper_embedded", "+method=ga_weighted_sum"], data_dir)
    assert list(ga.aggregator.weights)[0] < 1 and list(ga.aggregator.weights)[1:] == [1.0, 1.0]
    llama = compose_config(["experiment=paper_llama3", "+method=uce_dual"], data_dir)
    assert llama.model._target_.endswith("load_pretrained") and llama.trainer.lora is True
    assert llama.judge._target_.endswith("BeaverDamJudge")


@pytest.mark.parametrize("method", [m for m in METHODS if m != "yao"])  # yao: tests/test_objectives.py
def test_method_selects_its_loss_and_aggregator(method: str, data_dir: Path) -> None:
    cfg = compose_config([f"+method={method}"], data_dir)
    assert list(cfg.objectives) == ["forget", "kl", "retain"]  # <loss>_<aggregator> keeps MOLLM's objectives
    loss, aggregator = next((method[: -len(a) - 1], a) for a in AGGREGATORS if method.endswith(f"_{a}"))
    assert run_label(cfg) == f"{loss}+{aggregator}"


@pytest.mark.parametrize("launcher", ["local_parallel", "joblib", "slurm", "submitit_slurm"])
def test_launcher_configs_compose(launcher: str) -> None:
    cfg = compose_hydra(["experiment=paper_embedded", f"hydra/launcher={launcher}"])
    target = cfg.hydra.launcher._target_
    assert target.endswith("JoblibLauncher" if "parallel" in launcher or launcher == "joblib" else "SlurmLauncher")
    if launcher == "local_parallel":
        assert cfg.hydra.launcher.n_jobs == 2


def test_slurm_launcher_renders_an_sbatch_array(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher as Hydra builds it, with sbatch replaced: the parameters must pass submitit's
    validation and appear in the rendered script."""
    from submitit.slurm import slurm as submitit_slurm

    cfg = compose_hydra(["experiment=paper_llama3", "hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}",
                         "hydra.launcher.partition=gpu"])
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    launcher.setup(hydra_context=None, task_function=lambda c: None, config=cfg)
    rendered = {}

    class Intercepted(Exception):
        pass

    def fake_submit(self, delayed_submissions):
        rendered["n"] = len(delayed_submissions)
        rendered["text"] = self._make_submission_file_text("python -m unlearn.run", "uid")
        raise Intercepted

    monkeypatch.setattr(submitit_slurm.SlurmExecutor, "affinity", staticmethod(lambda: 1))
    monkeypatch.setattr(submitit_slurm.SlurmExecutor, "_internal_process_submissions", fake_submit)
    with pytest.raises(Intercepted):
        launcher.launch([["+method=uce_dual", "seed=0"], ["+method=uce_dual", "seed=1"]], initial_job_idx=0)
    text = rendered["text"]
    assert rendered["n"] == 2
    for line in ("#SBATCH --gpus-per-node=1", "#SBATCH --time=240", "#SBATCH --partition=gpu",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=96GB", "#SBATCH --signal=USR2@120"):
        assert line in text, text


@pytest.mark.parametrize("rows", [
    [("a", "0"), ("b", "0"), ("a", "1")],
    [(m, s) for m in "abcde" for s in "012"],
    [(m, s) for m in "abcde" for s in "012" if (m, s) not in {("a", "0"), ("d", "0"), ("e", "2")}],
    [(x, a, s) for x in "xyz" for a in "pq" for s in "01" if (x, s) != ("y", "1")],
])
def test_product_cover_is_exact(rows: list[tuple[str, ...]]) -> None:
    blocks = sweep.product_cover(rows)
    covered = [p for b in blocks for p in itertools.product(*b)]
    assert sorted(covered) == sorted(rows)  # exactly the rows, each once
    if len(rows) == 15:
        assert len(blocks) == 1  # the full grid is one multirun


def _write_run(run_dir: Path, config: dict, status: str | None) -> None:
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if status:
        (run_dir / "summary.json").write_text(json.dumps({"status": status, "method": "x", "seed": 0}))


def test_plan_skips_completed_and_moves_unfinished(tmp_path: Path, data_dir: Path) -> None:
    overrides = [f"output_root={tmp_path}", f"data_dir={data_dir}", "+method=uce_dual,ga_weighted_sum",
                 "seed=0,1"]
    plain, jobs = sweep.plan("paper_embedded", overrides)
    assert [j.state for j in jobs] == ["missing"] * 4
    by = {(j.params["+method"], j.params["seed"]): j for j in jobs}
    assert by[("uce_dual", "1")].run_dir == tmp_path / "sweeps" / "paper_embedded" / "uce_dual" / "seed=1"
    _write_run(by[("uce_dual", "0")].run_dir, by[("uce_dual", "0")].config, "completed")
    _write_run(by[("uce_dual", "1")].run_dir, by[("uce_dual", "1")].config, "failed")
    _write_run(by[("ga_weighted_sum", "0")].run_dir, by[("ga_weighted_sum", "0")].config, None)
    # a finished run with other settings must not be taken for this job
    other = json.loads(json.dumps(by[("ga_weighted_sum", "1")].config))
    other["trainer"]["max_steps"] = 999
    other["threads"] = 7  # ignored: does not change the result
    _write_run(by[("ga_weighted_sum", "1")].run_dir, other, "completed")
    _, jobs = sweep.plan("paper_embedded", overrides)
    state = {(j.params["+method"], j.params["seed"]): j.state for j in jobs}
    assert state == {("uce_dual", "0"): "completed", ("uce_dual", "1"): "stale",
                     ("ga_weighted_sum", "0"): "stale", ("ga_weighted_sum", "1"): "conflict"}
    assert "trainer.max_steps" in next(j for j in jobs if j.state == "conflict").note
    assert "threads" not in next(j for j in jobs if j.state == "conflict").note
    stale = next(j for j in jobs if j.params == {"+method": "uce_dual", "seed": "1"})
    moved = sweep.move_aside(stale, tmp_path / "sweeps" / "paper_embedded")
    assert not stale.run_dir.exists() and (moved / "summary.json").is_file()
    assert moved.parent.name == ".stale"
    cmds = sweep.launch_commands("paper_embedded", plain, [j for j in jobs if j.state == "stale"], "joblib")
    assert len(cmds) == 2 and all("hydra/launcher=joblib" in c for c in cmds)
    assert {tuple(c[5:7]) for c in cmds} == {("seed=1", "+method=uce_dual"), ("seed=0", "+method=ga_weighted_sum")}
    warm = sweep.warm_command("paper_embedded", ["threads=1", "eval.n_prompts=3"])
    assert warm[1:4] == ["-m", "unlearn.evaluation.warm", "experiment=paper_embedded"]
    assert "threads=1" not in warm and warm[-1] == f"threads={os.cpu_count()}" and "eval.n_prompts=3" in warm


# A tiny end-to-end sweep: tiny_random, two steps, a small real evaluation (TF-IDF judge).
TINY_SWEEP = [
    "model=tiny_random", "trainer.max_steps=2", "trainer.forget_batch_size=2", "trainer.normal_batch_size=2",
    "dataset.max_length=64", "logger.mode=disabled", "threads=1",
    "eval.n_prompts=3", "eval.max_new_tokens=4", "eval.utility_max_examples=4", "eval.batch_size=4",
    "judge.features=tfidf", "judge.C=[1.0]", "judge.progress_bar=false", "scorer.progress_bar=false",
    "+method=uce_dual,ga_weighted_sum", "seed=0",
]


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    root = tmp_path / "cache"
    root.mkdir()
    real = Path(os.environ.get("UNLEARN_CACHE_DIR", "~/.cache/unlearn")).expanduser() / "models"
    if real.is_dir():
        (root / "models").symlink_to(real, target_is_directory=True)
    return root


def test_cli_sweep_runs_missing_jobs_then_nothing(tmp_path: Path, data_dir: Path, cache_dir: Path) -> None:
    env = {**os.environ, "UNLEARN_DATA_DIR": str(data_dir), "UNLEARN_CACHE_DIR": str(cache_dir),
           "UNLEARN_OUTPUT_DIR": str(tmp_path / "out"), "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "unlearn.results.sweep", "paper_embedded", *TINY_SWEEP,
           "--tables", str(tmp_path / "results")]
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "2 jobs in" in first.stdout and "2 missing" in first.stdout
    root = tmp_path / "out" / "sweeps" / "paper_embedded"
    summaries = {p.parent.parent.name: json.loads(p.read_text()) for p in root.glob("*/seed=0/summary.json")}
    assert set(summaries) == {"uce_dual", "ga_weighted_sum"}
    assert {s["method"] for s in summaries.values()} == {"uce+dual", "ga+weighted_sum"}
    assert all(s["status"] == "completed" and s["steps"] == 2 for s in summaries.values())
    assert summaries["ga_weighted_sum"]["eval/after/n_prompts"] == 3
    # the warm-up trained the judge and evaluated the original once, so every job hit the cache
    assert "warmed the shared caches" in first.stdout
    assert all(s["eval/before/cached"] == 1 for s in summaries.values())
    md = (tmp_path / "results" / "paper_embedded" / "table.md").read_text()
    assert "| uce+dual (MOLLM) | 1 |" in md and "| ga+weighted_sum | 1 |" in md
    assert "All 2 runs completed." in md
    assert (tmp_path / "results" / "paper_embedded" / "harmful_vs_fluency.png").is_file()
    stamp = {k: (root / k / "seed=0" / "summary.json").stat().st_mtime_ns for k in summaries}

    second = subprocess.run(cmd[:-2], cwd=REPO, env=env, capture_output=True, text=True, timeout=200)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 completed" in second.stdout and "$ " not in second.stdout  # nothing launched
    assert stamp == {k: (root / k / "seed=0" / "summary.json").stat().st_mtime_ns for k in summaries}
