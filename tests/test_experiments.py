"""Experiment configs, method configs, launchers and the resumable sweep driver.

* every ``conf/experiment`` option composes, resolves, and its grid has the paper's methods;
* every loss × aggregator pair composes and is labelled by its options' names;
* a new forget loss joins the paper grid with one module, one YAML file and one word;
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
LOSSES = sorted(p.stem for p in (CONF / "loss").glob("*.yaml"))
AGGREGATORS = sorted(p.stem for p in (CONF / "aggregator").glob("*.yaml"))
YAO = "ga,mismatch,kl+weighted_sum(weights=0.5,1,1)"  # Yao et al. 2023's recipe, at their weights
FAITHFUL = [f"uce+{a}{rule}" for rule in ("[sgd]", "[metric_adam,preconditioned]")
            for a in ("weighted_sum", "mgda", "dual")]  # the update rules that keep the guarantee
PAPER_METHODS = ["ga+weighted_sum(weights=0.5,1,1)", YAO, "uce+weighted_sum", "uce+mgda", "uce+dual", "npo+weighted_sum",
                 *FAITHFUL]
SAFE = "uce,kl,retain,safe"  # MOLLM's objectives and cross-entropy on the safe answers
SAFE_ANSWERS_METHODS = ["uce+weighted_sum", "uce+mgda", "uce+dual", f"{SAFE}+weighted_sum(weights=1,1,1,1)",
                        f"{SAFE}+mgda", f"{SAFE}+dual"]


def compose_hydra(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_experiment_options_exist() -> None:
    assert {"paper_embedded", "paper_llama3", "ablation"} <= set(EXPERIMENTS)


# robustness sweeps evaluations of saved models, not methods (tests/test_attacks.py covers it)
@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e != "robustness"])
def test_experiment_grid_composes(experiment: str, data_dir: Path) -> None:
    plain, jobs, extras = sweep.grid(experiment, [f"data_dir={data_dir}"])
    seeds = [j["seed"] for j in jobs]
    assert seeds == sorted(seeds) and len(set(seeds)) >= 3 and seeds[0] == "0"  # seed-major order
    labels = []
    for params in (j for j in jobs if j["seed"] == "0"):
        cfg = compose_config([f"experiment={experiment}", *(f"{k}={v}" for k, v in params.items())], data_dir)
        OmegaConf.resolve(cfg)  # every interpolation resolves
        labels.append(run_label(cfg))
        instantiate(cfg.loss), instantiate(cfg.aggregator)
    if experiment == "ablation":
        torchjd = ("upgrad", "dualproj", "pcgrad", "cagrad", "imtlg", "alignedmtl")
        assert set(labels) == ({f"{loss}+{a}" for loss in ("ga", "uce", "npo") for a in ("weighted_sum", "mgda", "dual")}
                               | {f"uce+{a}" for a in torchjd} | {YAO})
    elif experiment == "safe_answers":
        assert labels == SAFE_ANSWERS_METHODS and set(seeds) == {"0", "1", "2", "3", "4"}
        assert extras["reference"] == "uce+dual"
    else:
        assert labels == PAPER_METHODS  # in the grid's (the table's) order
        assert extras["reference"] == "uce+dual" and extras["names"] == {"uce+dual": "MOLLM"}
    first = jobs[0]
    hydra_cfg = compose_hydra([f"experiment={experiment}", *(f"{k}={v}" for k, v in first.items() if k != "seed"),
                               "seed=2", "output_root=/x"])
    assert hydra_cfg.hydra.sweep.dir == f"/x/sweeps/{experiment}"
    assert hydra_cfg.hydra.sweep.subdir == f"{labels[0]}/seed=2"  # the label, no job number: stable


def test_paper_embedded_settings_fit_the_cpu_budget(data_dir: Path) -> None:
    cfg = compose_config(["experiment=paper_embedded"], data_dir)
    assert cfg.model._target_.endswith("load_smollm2") and cfg.trainer.lora is False
    assert cfg.judge._target_.endswith("build_embedded_judge") and cfg.scorer._target_.endswith("OfflineScorer")
    assert cfg.trainer.save_model is True and cfg.trainer.checkpoint_every == 0  # models for make robustness
    assert compose_config(["experiment=paper_embedded", "seed=1"], data_dir).trainer.save_model is False  # disk
    assert compose_config(["experiment=safe_answers"], data_dir).trainer.save_model is False
    assert cfg.dataset.max_length <= 128 and cfg.eval.enabled
    assert cfg.eval.n_prompts >= 200 and cfg.eval.max_new_tokens <= 64  # resolves 0.10 in harmful rate
    assert cfg.trainer.heldout_probe_size > 0 and cfg.trainer.probe_every > 0  # the loss-space curves
    ga = next(row for row in cfg.grid.rows if row.loss == "ga")
    assert list(ga["aggregator.weights"])[0] < 1 and list(ga["aggregator.weights"])[1:] == [1.0, 1.0]
    llama = compose_config(["experiment=paper_llama3"], data_dir)
    assert llama.model._target_.endswith("load_pretrained") and llama.trainer.lora is True
    assert llama.judge._target_.endswith("BeaverDamJudge")


@pytest.mark.parametrize("aggregator", AGGREGATORS)
@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_and_aggregator_compose_and_name_the_method(loss: str, aggregator: str, data_dir: Path) -> None:
    cfg = compose_config([f"loss={loss}", f"aggregator={aggregator}"], data_dir)
    assert list(cfg.objectives) == ["forget", "kl", "retain"]  # MOLLM's objectives by default
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
        launcher.launch([["aggregator=dual", "seed=0"], ["aggregator=dual", "seed=1"]], initial_job_idx=0)
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
    overrides = [f"output_root={tmp_path}", f"data_dir={data_dir}", TWO_ROWS, "seed=0,1"]
    plain, jobs = sweep.plan("paper_embedded", overrides)
    assert [j.state for j in jobs] == ["missing"] * 4
    by = {(j.label, j.params["seed"]): j for j in jobs}
    assert by[("uce+dual", "1")].run_dir == tmp_path / "sweeps" / "paper_embedded" / "uce+dual" / "seed=1"
    _write_run(by[("uce+dual", "0")].run_dir, by[("uce+dual", "0")].config, "completed")
    _write_run(by[("uce+dual", "1")].run_dir, by[("uce+dual", "1")].config, "failed")
    _write_run(by[("ga+weighted_sum", "0")].run_dir, by[("ga+weighted_sum", "0")].config, None)
    # a finished run with other settings must not be taken for this job
    other = json.loads(json.dumps(by[("ga+weighted_sum", "1")].config))
    other["trainer"]["max_steps"] = 999
    other["threads"] = 7  # ignored: does not change the result
    _write_run(by[("ga+weighted_sum", "1")].run_dir, other, "completed")
    _, jobs = sweep.plan("paper_embedded", overrides)
    state = {(j.label, j.params["seed"]): j.state for j in jobs}
    assert state == {("uce+dual", "0"): "completed", ("uce+dual", "1"): "stale",
                     ("ga+weighted_sum", "0"): "stale", ("ga+weighted_sum", "1"): "conflict"}
    assert "trainer.max_steps" in next(j for j in jobs if j.state == "conflict").note
    assert "threads" not in next(j for j in jobs if j.state == "conflict").note
    stale = next(j for j in jobs if j.params == {"seed": "1", "loss": "uce", "aggregator": "dual"})
    moved = sweep.move_aside(stale, tmp_path / "sweeps" / "paper_embedded")
    assert not stale.run_dir.exists() and (moved / "summary.json").is_file()
    assert moved.parent.name == ".stale"
    # a run stopped by a signal stays in place (with its checkpoint): its relaunched job resumes it
    _write_run(stale.run_dir, stale.config, "preempted")
    sweep.inspect(stale)
    assert stale.state == "preempted" and stale.run_dir.is_dir()
    cmds = sweep.launch_commands("paper_embedded", plain, [j for j in jobs if j.state in ("stale", "preempted")],
                                 "joblib")
    assert len(cmds) == 2 and all("hydra/launcher=joblib" in c for c in cmds)
    assert {tuple(c[5:8]) for c in cmds} == {("seed=1", "loss=uce", "aggregator=dual"),
                                             ("seed=0", "loss=ga", "aggregator=weighted_sum")}
    # --jobs: one single-job multirun per job, in seed-major grid order, each landing in its run dir
    singles = sweep.job_commands("paper_embedded", plain, jobs)
    assert [c[5:8] for c in singles] == [[f"seed={j.params['seed']}", f"loss={j.params['loss']}",
                                          f"aggregator={j.params['aggregator']}"] for j in jobs]
    assert [j.params["seed"] for j in jobs] == ["0", "0", "1", "1"]
    assert all("," not in a for c in singles for a in c[5:8])
    warm = sweep.warm_command("paper_embedded", ["threads=1", "eval.n_prompts=3"])
    assert warm[1:4] == ["-m", "unlearn.evaluation.warm", "experiment=paper_embedded"]
    assert "threads=1" not in warm and warm[-1] == f"threads={os.cpu_count()}" and "eval.n_prompts=3" in warm


def test_run_pool_runs_every_command_and_reports_a_failure(tmp_path: Path) -> None:
    marks = [tmp_path / f"job{i}" for i in range(3)]
    ok = [[sys.executable, "-c", f"open({str(m)!r}, 'w').close()"] for m in marks]
    assert sweep.run_pool(ok, 2) and all(m.is_file() for m in marks)
    assert not sweep.run_pool([*ok, [sys.executable, "-c", "raise SystemExit(3)"]], 2)


def test_jobs_refuses_a_hydra_launcher() -> None:
    assert sweep.main(["paper_embedded", "--jobs", "2", "--launcher", "joblib", "--dry-run"]) == 2


# A tiny end-to-end sweep: tiny_random, two steps, a small real evaluation (TF-IDF judge).
TINY_SWEEP = [
    "model=tiny_random", "trainer.max_steps=2", "trainer.forget_batch_size=2", "trainer.normal_batch_size=2",
    "dataset.max_length=64", "logger.mode=disabled", "threads=1",
    "eval.n_prompts=3", "eval.max_new_tokens=4", "eval.utility_max_examples=4", "eval.batch_size=4",
    "judge.features=tfidf", "judge.C=[1.0]", "judge.progress_bar=false", "scorer.progress_bar=false",
    "trainer.probe_size=2", "trainer.heldout_probe_size=2", "seed=0",
]
# two rows of the paper grid, as a plain override (what a user passes to run a subset)
TWO_ROWS = "grid.rows=[{loss:uce,aggregator:dual},{loss:ga,aggregator:weighted_sum}]"


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
    cmd = [sys.executable, "-m", "unlearn.results.sweep", "paper_embedded", *TINY_SWEEP, TWO_ROWS,
           "--jobs", "2", "--tables", str(tmp_path / "results")]
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "2 jobs in" in first.stdout and "2 missing" in first.stdout
    root = tmp_path / "out" / "sweeps" / "paper_embedded"
    summaries = {p.parent.parent.name: json.loads(p.read_text()) for p in root.glob("*/seed=0/summary.json")}
    assert set(summaries) == {"uce+dual", "ga+weighted_sum"}  # run dirs named by the method label
    assert {s["method"] for s in summaries.values()} == {"uce+dual", "ga+weighted_sum"}
    assert all(s["status"] == "completed" and s["steps"] == 2 for s in summaries.values())
    assert summaries["ga+weighted_sum"]["eval/after/n_prompts"] == 3
    assert json.loads((root / "grid.json").read_text())["methods"] == ["uce+dual", "ga+weighted_sum"]
    # the warm-up trained the judge and evaluated the original once, so every job hit the cache
    assert "warmed the shared caches" in first.stdout
    assert all(s["eval/before/cached"] == 1 for s in summaries.values())
    md = (tmp_path / "results" / "paper_embedded" / "table.md").read_text()
    assert "| uce+dual (MOLLM) | 1 |" in md and "| ga+weighted_sum | 1 |" in md
    assert md.index("| uce+dual (MOLLM) |") < md.index("| ga+weighted_sum |")  # the grid's order, not a list
    assert "All 2 runs completed." in md
    assert (tmp_path / "results" / "paper_embedded" / "harmful_vs_fluency.png").is_file()
    stamp = {k: (root / k / "seed=0" / "summary.json").stat().st_mtime_ns for k in summaries}

    second = subprocess.run(cmd[:-2], cwd=REPO, env=env, capture_output=True, text=True, timeout=200)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 completed" in second.stdout and "$ " not in second.stdout  # nothing launched
    assert stamp == {k: (root / k / "seed=0" / "summary.json").stat().st_mtime_ns for k in summaries}


HALVED_LOSS = '''
import torch

from unlearn.losses import UCE


class HalvedUCE(UCE):
    """UCE at a fixed scale: a stand-in for a researcher's new forget loss."""

    def __init__(self, scale: float = 0.5) -> None:
        super().__init__()
        self.scale = scale

    def __call__(self, logits, labels, ref_logits=None) -> torch.Tensor:
        return self.scale * super().__call__(logits, labels, ref_logits)
'''


def test_a_new_forget_loss_joins_the_paper_grid_with_one_module_one_yaml_one_word(
        tmp_path: Path, data_dir: Path, cache_dir: Path) -> None:
    """A user's folder on Hydra's search path holds the module and its YAML; the grid gains the
    loss by one word. The driver plans its rows in the grid's order, a real run labels itself
    from the option's file name, and the table shows the row."""
    import difflib

    from unlearn.results.cli import main as tables_main

    ext = tmp_path / "ext"
    (ext / "loss").mkdir(parents=True)
    (ext / "grid").mkdir()
    (ext / "halved_loss.py").write_text(HALVED_LOSS)                                   # one module
    (ext / "loss" / "halved_uce.yaml").write_text("_target_: halved_loss.HalvedUCE\nscale: 0.5\n")  # one YAML
    paper = (CONF / "grid" / "paper.yaml").read_text()
    edited = paper.replace('{loss: "uce", aggregator: "mgda,dual"', '{loss: "uce,halved_uce", aggregator: "mgda,dual"', 1)
    (ext / "grid" / "paper_halved.yaml").write_text(edited)                            # one word
    added = [t for t in difflib.ndiff(paper.replace(",", " ").split(), edited.replace(",", " ").split())
             if t[0] in "+-"]
    assert added == ["- \"uce\"", "+ \"uce", "+ halved_uce\""]  # the word halved_uce, nothing else

    out = tmp_path / "out"
    overrides = [f"hydra.searchpath=[file://{ext}]", "grid=paper_halved", f"output_root={out}",
                 f"data_dir={data_dir}", "seed=0"]
    _, jobs = sweep.plan("paper_embedded", overrides)
    labels = [j.label for j in jobs]
    assert labels == [*PAPER_METHODS[:5], "halved_uce+mgda", "halved_uce+dual", *PAPER_METHODS[5:]]
    job = next(j for j in jobs if j.label == "halved_uce+dual")
    root = out / "sweeps" / "paper_embedded"
    assert job.run_dir == root / "halved_uce+dual" / "seed=0"

    tiny = [o for o in TINY_SWEEP if not o.startswith(("seed=", "eval."))] + ["eval.enabled=false"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ext), os.environ.get("PYTHONPATH", "")]),
           "UNLEARN_CACHE_DIR": str(cache_dir), "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "unlearn.run", "-m", "experiment=paper_embedded", *overrides, *job.overrides, *tiny]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((job.run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["method"] == "halved_uce+dual"
    sweep.write_grid("paper_embedded", jobs, {"names": {"uce+dual": "MOLLM"}}, root)
    assert tables_main([str(root), "--out", str(tmp_path / "results"), "--no-plots"]) == 0
    md = (tmp_path / "results" / "paper_embedded" / "table.md").read_text()
    assert "| halved_uce+dual | 1 |" in md


def test_run_pool_starts_nothing_more_after_an_interrupt(monkeypatch) -> None:
    import signal
    import threading

    started = []
    real_run = subprocess.run

    def run(cmd, **kwargs):
        started.append(cmd)
        return real_run(cmd, **kwargs)

    monkeypatch.setattr(sweep.subprocess, "run", run)
    commands = [[sys.executable, "-c", "import time; time.sleep(1.5)"] for _ in range(4)]
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))  # Ctrl-C while the first job runs
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        sweep.run_pool(commands, 1)
    timer.join()
    assert len(started) == 1  # the three queued commands were dropped, not started
