"""Preemption and kills outside training, with real processes and signals: SIGTERM during
training (checkpoint, exit code 75), SIGKILL during the evaluation after training, and resumes
that end exactly like an uninterrupted run, in one offline W&B run."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import REPO, TINY

from unlearn.checkpoint import CheckpointManager
from unlearn.evaluation.metrics import Metric, MetricOutput
from unlearn.training.preemption import EXIT_PREEMPTED, was_preempted


class PausingMetric(Metric):
    """Adds nothing; on the ``PAUSE_ON_CALL``-th evaluation of this process it writes the file
    ``PAUSE_MARKER`` and sleeps, so a test can kill the run at a known point of an evaluation."""

    name = "pausing"
    needs_answers = False
    calls = 0

    def compute(self, ctx) -> MetricOutput:
        PausingMetric.calls += 1
        if str(PausingMetric.calls) == os.environ.get("PAUSE_ON_CALL"):
            Path(os.environ["PAUSE_MARKER"]).write_text("paused")
            time.sleep(600)
        return MetricOutput()


def tiny(*extra: str, steps: int = 6, base: Sequence[str] = TINY) -> list[str]:
    kept = [o for o in base if not o.startswith("trainer.max_steps")]
    return [*kept, f"trainer.max_steps={steps}", "threads=1", *extra]


def environment(data_dir: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "UNLEARN_DATA_DIR": str(data_dir), "WANDB_MODE": "offline",
           "WANDB_DIR": str(tmp_path / "wandb"), "WANDB_CONFIG_DIR": str(tmp_path / "wandb_config"),
           "WANDB_CACHE_DIR": str(tmp_path / "wandb_cache"), "NETRC": str(tmp_path / "netrc"),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
           **extra}
    env.pop("WANDB_SERVICE", None)  # set by W&B in this process if an earlier test used it
    env.pop("WANDB_API_KEY", None)
    return env


def cli(overrides: list[str], run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "unlearn.run", *overrides, f"hydra.run.dir={run_dir}", *extra]


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"run ended before {what}:\n{proc.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.02)


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def volatile(key: str) -> bool:
    """Timings and memory: the only summary and metrics keys a resume may change."""
    return "time" in key or key.startswith("peak_")


def assert_same_value(a, b, where: str) -> None:
    if isinstance(a, float) and isinstance(b, float):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-9) or (math.isnan(a) and math.isnan(b)), where
    else:
        assert a == b, where


def assert_same_run(ref_dir: Path, run_dir: Path, files: tuple[str, ...] = ()) -> None:
    ref, got = (json.loads((d / "summary.json").read_text()) for d in (ref_dir, run_dir))
    assert ref["status"] == got["status"] == "completed"
    assert {k for k in ref if not volatile(k)} == {k for k in got if not volatile(k)}
    for key in ref:
        if not volatile(key):
            assert_same_value(ref[key], got[key], f"summary[{key}]")
    for name in ("metrics.jsonl", *files):
        a, b = lines(ref_dir / name), lines(run_dir / name)
        assert [r.get("step", r.get("stage")) for r in b] == [r.get("step", r.get("stage")) for r in a], name
        for r, g in zip(a, b):
            assert {k for k in r if not volatile(k)} == {k for k in g if not volatile(k)}
            for key in r:
                if not volatile(key):
                    assert_same_value(r[key], g[key], f"{name}: {r.get('step', r.get('stage'))} {key}")


def wandb_run_ids(run_dir: Path) -> list[str]:
    """The run id of every W&B offline session in ``run_dir/wandb`` (``offline-run-<time>-<id>``)."""
    return sorted(p.name.rsplit("-", 1)[-1] for p in (run_dir / "wandb").glob("offline-run-*"))


# Evaluation cheap enough for a test: no judge (the diversity of a few generated answers), no cache
# (every run computes every stage itself).
EVAL = ["eval.enabled=true", "eval.cache=false", "eval.n_prompts=3", "eval.max_new_tokens=6",
        "eval.utility_max_examples=4", "eval.batch_size=4", "eval.progress_bar=false",
        "eval.metrics=[diversity,{_target_:test_preemption.PausingMetric}]"]


def test_sigterm_then_sigkill_in_evaluation_then_resume_equals_uninterrupted(data_dir: Path, tmp_path: Path) -> None:
    """One run, three sessions, beside an uninterrupted run (one thread each):
    1. SIGTERM at step ≥ 2: the step finishes, a checkpoint of it is written (checkpoint_every is
       larger than the run), summary.json says preempted, the exit code is 75;
    2. ``resume=true``, SIGKILL during the evaluation after training (the model saved);
    3. ``resume=true``: nothing is retrained (the last step is always checkpointed), the missing
       stages run; summary.json, metrics.jsonl and generations.jsonl equal the uninterrupted run's,
       and the three sessions logged to one offline W&B run without sending a step twice."""
    overrides = [o for o in tiny("logger.mode=offline", "trainer.checkpoint_every=100", "trainer.save_model=true",
                                 steps=5) if not o.startswith("eval.")] + EVAL
    env = environment(data_dir, tmp_path)
    ref_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "interrupted"
    no_wandb = [o.replace("logger.mode=offline", "logger.mode=disabled") for o in overrides]
    reference = start(cli(no_wandb, ref_dir), env)  # its W&B is not compared
    victim = start(cli(overrides, run_dir), env)
    try:
        wait_for(lambda: len(lines(run_dir / "metrics.jsonl")) >= 2, victim, "step 2")
        victim.send_signal(signal.SIGTERM)
        out, _ = victim.communicate(timeout=120)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == EXIT_PREEMPTED, out[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    step = summary["preempted_at_step"]
    assert summary["status"] == "preempted" and "SIGTERM" in summary["error"] and was_preempted(run_dir)
    assert 2 <= step < 5 and [r["step"] for r in lines(run_dir / "metrics.jsonl")] == list(range(1, step + 1))
    assert CheckpointManager(run_dir).latest().step == step  # written at the signal, verified
    assert "SIGTERM received" in out and "exit code 75" in out

    # the evaluations of a session: 1 before training, 2 after it
    marker = tmp_path / "paused"
    victim = start(cli(overrides, run_dir, "resume=true"),
                   environment(data_dir, tmp_path, PAUSE_ON_CALL="2", PAUSE_MARKER=str(marker)))
    try:
        wait_for(marker.exists, victim, "the evaluation after training")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "preempted"  # never reached its end
    assert CheckpointManager(run_dir).latest().step == 5  # the last step is always checkpointed
    assert (run_dir / "model" / "model.safetensors").is_file()

    resumed = subprocess.run(cli(overrides, run_dir, "resume=true"), cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=300, check=False)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-4000:]
    assert re.search(r"resuming from \S*step-000005 \(step 5\)", log)  # nothing left to train
    finish(reference)
    assert_same_run(ref_dir, run_dir, files=("generations.jsonl",))
    # the wall time counts the earlier sessions' training, as train_time_s does: no part exceeds the whole
    got = json.loads((run_dir / "summary.json").read_text())
    assert 0 < got["resumed_train_time_s"] <= got["train_time_s"]
    assert got["wall_time_s"] >= got["train_time_s"] + got["eval/after/time_s"]
    assert not [p.name for p in run_dir.iterdir() if ".tmp" in p.name]
    # W&B: the three sessions wrote to one offline run, whose id is kept in the run dir
    state = json.loads((run_dir / "wandb-run.json").read_text())
    assert wandb_run_ids(run_dir) == [state["id"]] * 3 and state["last_step"] == 5


def test_submitit_job_requeues_itself_and_resumes(data_dir: Path, tmp_path: Path) -> None:
    """The submitit path of ``hydra/launcher=slurm``, run by submitit's local executor (the same job
    environment, requeue by exit code instead of ``scontrol requeue``): SIGUSR2, submitit's
    preemption/timeout signal, reaches the job; it checkpoints, hands over to submitit's handler,
    which requeues it with the same arguments; the requeued job resumes in the same run dir."""
    psutil = pytest.importorskip("psutil")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    overrides = tiny("trainer.checkpoint_every=100", steps=4)
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "unlearn.run", "-m", *overrides, "hydra/launcher=submitit_local",
           "hydra.launcher.timeout_min=60", f"hydra.sweep.dir={sweep}"]
    driver = start(cmd, environment(data_dir, tmp_path))
    try:
        metrics = lambda: next(sweep.glob("*/metrics.jsonl"), None)  # noqa: E731
        wait_for(lambda: metrics() is not None and len(lines(metrics())) >= 1, driver, "step 1")
        jobs = [p for p in psutil.Process(driver.pid).children(recursive=True)
                if "submitit.core._submit" in " ".join(p.cmdline())]
        assert len(jobs) == 1
        jobs[0].send_signal(signal.SIGUSR2)
        out = finish(driver)
    finally:
        if driver.poll() is None:
            for p in psutil.Process(driver.pid).children(recursive=True):
                p.kill()
            driver.kill()
    run_dir = metrics().parent
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 4, out[-2000:]
    assert [r["step"] for r in lines(run_dir / "metrics.jsonl")] == [1, 2, 3, 4]
    job_log = "\n".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "SIGUSR2 received" in job_log and "Requeued job" in job_log and "resuming from" in job_log
