"""Checkpoint and resume: a run killed with SIGKILL and resumed ends exactly like an uninterrupted
run; corrupt or partial checkpoints are skipped; mismatched resumes fail with a clear message."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import CONF, REPO, TINY, compose_config

from unlearn.checkpoint import CheckpointError, CheckpointManager
from unlearn.experiment import run_experiment
from unlearn.training.trainer import UnlearningTrainer

# Keys that measure time or memory: the only ones allowed to differ after a resume.
VOLATILE = {"wall_time_s", "train_time_s", "resumed_train_time_s", "peak_rss_bytes", "peak_cuda_bytes"}

# The evaluation stage (conf/eval) is not what these tests measure: keep the runs to training.
NO_EVAL = ["eval.enabled=false"]  # the evaluation stage has its own tests


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """run_experiment(threads=1) sets torch's thread count; give other test modules theirs back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def tiny(*extra: str, steps: int = 6) -> list[str]:
    base = [o for o in TINY if not o.startswith("trainer.max_steps")]
    return [*base, *NO_EVAL, f"trainer.max_steps={steps}", "trainer.checkpoint_every=2", "threads=1", *extra]


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def assert_same_value(a, b, where: str) -> None:
    if isinstance(a, float) and isinstance(b, float):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-9) or (math.isnan(a) and math.isnan(b)), where
    else:
        assert a == b, where


def assert_same_run(ref_dir: Path, run_dir: Path) -> None:
    """summary.json and metrics.jsonl equal, except for timings and memory."""
    ref, got = read_summary(ref_dir), read_summary(run_dir)
    assert ref["status"] == got["status"] == "completed"
    assert set(ref) - VOLATILE == set(got) - VOLATILE
    for key in set(ref) - VOLATILE:
        assert_same_value(ref[key], got[key], f"summary[{key}]")
    ref_lines, got_lines = read_metrics(ref_dir), read_metrics(run_dir)
    assert [r["step"] for r in got_lines] == [r["step"] for r in ref_lines]  # no duplicates, no orphans
    for r, g in zip(ref_lines, got_lines):
        assert set(r) == set(g)
        for key in r:
            if not key.startswith("time/"):
                assert_same_value(r[key], g[key], f"step {r['step']} {key}")


def assert_same_weights(ref_ckpt: Path, got_ckpt: Path) -> None:
    from safetensors.torch import load_file

    a, b = load_file(str(ref_ckpt / "model.safetensors")), load_file(str(got_ckpt / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-6, atol=1e-8, msg=name)


# --------------------------------------------------------------------------- the kill test


def test_sigkill_then_resume_equals_uninterrupted_run(data_dir: Path, tmp_path: Path) -> None:
    """1. start a tiny_random run through the CLI; 2. SIGKILL it mid-way; 3. resume it;
    4. losses, metrics.jsonl, summary.json and final weights equal an uninterrupted run's."""
    overrides = tiny("logger.mode=disabled", steps=8)
    env = {**os.environ, "UNLEARN_DATA_DIR": str(data_dir), "WANDB_MODE": "disabled"}
    env.pop("WANDB_SERVICE", None)  # set by W&B in this process if an earlier test used it

    def cli(run_dir: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "unlearn.run", *overrides, f"hydra.run.dir={run_dir}", *extra]

    ref_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    kw = {"cwd": REPO, "env": env, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    reference = subprocess.Popen(cli(ref_dir), **kw)  # runs beside the victim (1 thread each)
    victim = subprocess.Popen(cli(run_dir), **kw)
    try:
        first = run_dir / "checkpoints" / "step-000002"
        deadline = time.monotonic() + 240
        while not first.is_dir():
            assert victim.poll() is None, f"run ended before its first checkpoint:\n{victim.stdout.read()[-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint after 240 s"
            time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()  # killed: the run never reached its end
    killed_at = len(read_metrics(run_dir))
    assert 2 <= killed_at < 8, killed_at

    resumed = subprocess.run(cli(run_dir, "resume=true"), cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr + resumed.stdout
    out, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, out[-3000:]

    assert_same_run(ref_dir, run_dir)
    assert read_summary(run_dir)["steps"] == 8
    assert_same_weights(ref_dir / "checkpoints" / "step-000008", run_dir / "checkpoints" / "step-000008")
    # only the newest keep_checkpoints=2 are kept, no temp folders are left behind
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-000006", "step-000008"]


# --------------------------------------------------------------------------- in-process resumes


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, data_dir: Path) -> Path:
    """An uninterrupted 6-step full fine-tuning run with checkpoints at steps 2, 4 and 6."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    n = torch.get_num_threads()
    # module fixtures run before conftest's per-test offline env: set it here too, or the HF
    # libraries (which read it once, at import) would start in online mode for the whole session
    with pytest.MonkeyPatch.context() as mp:
        for var, value in {"WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}.items():
            mp.setenv(var, value)
        mp.delenv("WANDB_API_KEY", raising=False)
        run_experiment(compose_config(tiny("trainer.keep_checkpoints=3"), data_dir), run_dir)
    torch.set_num_threads(n)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "step-000002", "step-000004", "step-000006"]
    return run_dir


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / "summary.json").unlink()
    return dst


def flip_byte(path: Path, offset: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0xFF
    path.write_bytes(data)


def test_corrupt_newest_checkpoint_falls_back_to_previous(reference_run: Path, make_config, tmp_path) -> None:
    run_dir = copy_run(reference_run, tmp_path / "run")
    flip_byte(run_dir / "checkpoints" / "step-000006" / "model.safetensors")
    with pytest.warns(UserWarning, match=r"skipping checkpoint step-000006: .*model\.safetensors: sha256"):
        summary = run_experiment(make_config(*tiny("trainer.keep_checkpoints=3", "resume=true")), run_dir)
    assert summary["status"] == "completed"
    assert_same_run(reference_run, run_dir)
    # steps 5 and 6 were retrained; the corrupt step-6 checkpoint was replaced by a valid one
    CheckpointManager.verify(run_dir / "checkpoints" / "step-000006")
    assert_same_weights(reference_run / "checkpoints" / "step-000006", run_dir / "checkpoints" / "step-000006")


def test_resume_truncates_metrics_written_after_the_checkpoint(reference_run: Path, make_config, tmp_path) -> None:
    run_dir = copy_run(reference_run, tmp_path / "run")
    shutil.rmtree(run_dir / "checkpoints" / "step-000006")  # as if killed after step 6 was logged
    with open(run_dir / "metrics.jsonl", "a") as handle:  # and a half-written line at the end
        handle.write('{"step": 7, "loss/forg')
    run_experiment(make_config(*tiny("trainer.keep_checkpoints=3", "resume=true")), run_dir)
    assert_same_run(reference_run, run_dir)


def test_no_valid_checkpoint_restarts_from_step_zero(reference_run: Path, make_config, tmp_path) -> None:
    run_dir = copy_run(reference_run, tmp_path / "run")
    for ckpt in (run_dir / "checkpoints").iterdir():
        (ckpt / "manifest.json").unlink()
    with pytest.warns(UserWarning, match="no complete checkpoint; starting again from step 0"):
        run_experiment(make_config(*tiny("trainer.keep_checkpoints=3", "resume=true")), run_dir)
    assert_same_run(reference_run, run_dir)


def test_lora_with_dropout_resumes_exactly_after_a_crash(make_config, tmp_path, monkeypatch) -> None:
    """LoRA dropout draws random numbers every step: equality needs the RNG states restored,
    the adapter-only weights reloaded and the metrics cut back to the checkpoint."""
    overrides = tiny("trainer.lora=true", "trainer.lora_config.dropout=0.3", "trainer.optimizer.lr=1e-2")
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    run_experiment(make_config(*overrides), ref_dir)

    original = UnlearningTrainer.train_step

    def crash_at_step_6(self):
        if self.step == 5:  # steps 1-5 are logged, the newest checkpoint is step 4
            raise RuntimeError("simulated crash")
        return original(self)

    monkeypatch.setattr(UnlearningTrainer, "train_step", crash_at_step_6)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_experiment(make_config(*overrides), run_dir)
    assert read_summary(run_dir)["status"] == "failed"
    assert len(read_metrics(run_dir)) == 5
    monkeypatch.setattr(UnlearningTrainer, "train_step", original)

    ckpt = CheckpointManager.verify(run_dir / "checkpoints" / "step-000004")
    from safetensors.torch import load_file

    saved = load_file(str(ckpt.path / "model.safetensors"))
    assert saved and all("lora_" in name for name in saved)  # the adapter only, not the base model

    run_experiment(make_config(*overrides, "resume=true"), run_dir)
    assert_same_run(ref_dir, run_dir)
    assert_same_weights(ref_dir / "checkpoints" / "step-000006", run_dir / "checkpoints" / "step-000006")


# --------------------------------------------------------------------------- refusals


def test_fresh_run_refuses_a_dir_that_holds_a_run(reference_run: Path, make_config, tmp_path) -> None:
    run_dir = shutil.copytree(reference_run, tmp_path / "run")
    before = (run_dir / "summary.json").read_text()
    with pytest.raises(CheckpointError, match=r"already holds an earlier run .*resume=true"):
        run_experiment(make_config(*tiny()), run_dir)
    assert (run_dir / "summary.json").read_text() == before  # the earlier run's summary is intact


def test_resume_in_an_empty_dir_names_the_fix(make_config, tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"holds no earlier run.*hydra\.run\.dir="):
        run_experiment(make_config(*tiny("resume=true")), tmp_path / "typo")


def test_resume_with_a_different_config_is_refused(reference_run: Path, make_config, tmp_path) -> None:
    run_dir = copy_run(reference_run, tmp_path / "run")
    cfg = make_config(*tiny("resume=true", "trainer.optimizer.lr=1e-3", "aggregator=mgda"))
    with pytest.raises(CheckpointError, match=r"config differs") as info:
        run_experiment(cfg, run_dir)
    assert "trainer.optimizer.lr: checkpoint=5e-05, now=0.001" in str(info.value)
    assert "aggregator._target_" in str(info.value)
    # operational keys may change: a longer run continues from the newest checkpoint
    summary = run_experiment(make_config(*tiny("resume=true", "trainer.keep_checkpoints=5", steps=8)), run_dir)
    assert summary["status"] == "completed" and summary["steps"] == 8
    assert [r["step"] for r in read_metrics(run_dir)] == list(range(1, 9))


def test_resume_with_different_training_data_is_refused(reference_run: Path, make_config, data_dir, tmp_path) -> None:
    other = tmp_path / "data"
    (other / "pku-saferlhf-v0-test-pairs").mkdir(parents=True)
    (other / "truthfulqa").symlink_to(data_dir / "truthfulqa")
    src = (data_dir / "pku-saferlhf-v0-test-pairs" / "pku_schema.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in src]
    for row in rows:  # same prompts (so the same split and config), different answers
        row["response_0"] += " (edited)"
    (other / "pku-saferlhf-v0-test-pairs" / "pku_schema.jsonl").write_text(
        "\n".join(json.dumps(r) for r in rows) + "\n")
    run_dir = copy_run(reference_run, tmp_path / "run")
    cfg = compose_config(tiny("resume=true"), other)
    with pytest.raises(CheckpointError, match=r"the forget training data differ"):
        run_experiment(cfg, run_dir)


# --------------------------------------------------------------------------- manager unit tests


def _save_two(root: Path) -> CheckpointManager:
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    manager = CheckpointManager(root, keep=2)
    for step in (1, 2):
        model(torch.ones(2, 4)).sum().backward()
        opt.step()
        manager.save(step, dict(model.named_parameters()), opt, None,
                     {"trainer": {"step": step}}, metrics_path=None)
    return manager


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CORRUPTIONS = {
    "flipped byte in weights": (lambda c: flip_byte(c / "model.safetensors", 200), "sha256"),
    "truncated optimizer state": (lambda c: _truncate(c / "optimizer.pt"), "truncated"),
    "missing manifest (killed mid-write)": (lambda c: (c / "manifest.json").unlink(), "no manifest.json"),
    "garbled manifest": (lambda c: (c / "manifest.json").write_text("{not json"), "unreadable manifest"),
    "missing file": (lambda c: (c / "rng.pt").unlink(), "rng.pt: missing"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_latest_skips_a_corrupt_checkpoint(kind: str, tmp_path: Path) -> None:
    manager = _save_two(tmp_path)
    corrupt, message = CORRUPTIONS[kind]
    corrupt(tmp_path / "checkpoints" / "step-000002")
    with pytest.raises(CheckpointError, match=message):
        manager.verify(tmp_path / "checkpoints" / "step-000002")
    with pytest.warns(UserWarning, match=f"skipping checkpoint step-000002.*{message}"):
        found = manager.latest()
    assert found is not None and found.step == 1


def test_temp_folder_of_an_interrupted_write_is_ignored(tmp_path: Path) -> None:
    manager = _save_two(tmp_path)
    partial = tmp_path / "checkpoints" / ".tmp-step-000003-12345"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 10)
    assert manager.latest().step == 2
    assert manager.remove_stale_temp() == [partial] and not partial.exists()


def test_save_is_atomic_and_prunes(tmp_path: Path) -> None:
    manager = _save_two(tmp_path)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-000001", "step-000002"]
    manifest = json.loads((tmp_path / "checkpoints" / "step-000002" / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.safetensors", "optimizer.pt", "rng.pt", "state.json"}
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters())
    manager.save(3, dict(model.named_parameters()), opt, None, {"trainer": {}})
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000002", "step-000003"]
