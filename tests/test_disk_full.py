"""A full disk (ENOSPC, simulated) while writing a checkpoint, the model or summary.json: the
previous complete files stay, no temporary file is left, the run stops with an error naming the
folder to free and ``resume=true``, and the resumed run finishes once space is back."""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import pytest
import torch
import transformers
from conftest import TINY

from unlearn.checkpoint import CheckpointManager
from unlearn.errors import DiskFullError, disk_full
from unlearn.experiment import run_experiment
from unlearn.models.export import save_model


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def overrides(*extra: str) -> list[str]:
    base = [o for o in TINY if not o.startswith(("trainer.max_steps", "trainer.save_model"))]
    return [*base, "trainer.max_steps=2", "trainer.checkpoint_every=1", "trainer.keep_checkpoints=3",
            "trainer.save_model=true", "threads=1", *extra]


def temp_files(run_dir: Path) -> list[str]:
    return [str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if ".tmp" in p.name]


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def fails_for_lack_of_space(make_config, run_dir: Path, caplog, folder: Path, *extra: str) -> None:
    with caplog.at_level(logging.ERROR), pytest.raises(DiskFullError) as info:
        run_experiment(make_config(*overrides(*extra)), run_dir)
    message = str(info.value)
    assert f"Free space in {folder} then rerun with resume=true" in message, message
    assert any(f"Free space in {folder}" in r.getMessage() for r in caplog.records)  # logged, with the fix
    assert info.value.errno == errno.ENOSPC
    assert not temp_files(run_dir)


def test_full_disk_at_each_write_keeps_the_previous_files_and_resumes(make_config, tmp_path, caplog,
                                                                      monkeypatch) -> None:
    run_dir = tmp_path / "run"
    ckpts = CheckpointManager(run_dir)

    # 1. the checkpoint of step 2: step 1's stays, the run stops (summary.json says why)
    real_save, calls = torch.save, []

    def save_fails_at_step_2(obj, f, *args, **kwargs):
        if "step-000002" in str(f):
            calls.append(f)
            no_space()
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_fails_at_step_2)
    fails_for_lack_of_space(make_config, run_dir, caplog, run_dir / "checkpoints")
    monkeypatch.setattr(torch, "save", real_save)
    assert calls and [c.step for c in map(ckpts.verify, (p for _, p in ckpts.candidates()))] == [1]
    assert summary(run_dir)["status"] == "failed" and "no space left" in summary(run_dir)["error"]

    # 2. the model: nothing of it is left under its name; every checkpoint is intact
    def partial_model(self, folder, *args, **kwargs):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "model.safetensors").write_bytes(b"\0" * 16)
        no_space()

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", partial_model)
    fails_for_lack_of_space(make_config, run_dir, caplog, run_dir, "resume=true")
    monkeypatch.undo()
    assert not (run_dir / "model").exists()
    assert ckpts.latest().step == 2  # trained to the end before the save failed

    # 3. summary.json: the previous one stays, complete
    before = (run_dir / "summary.json").read_text()
    real_write = Path.write_text

    def write_text(self, data, *args, **kwargs):
        if self.name.startswith(".summary.json.tmp"):
            real_write(self, data[: len(data) // 2], *args, **kwargs)
            no_space()
        return real_write(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    fails_for_lack_of_space(make_config, run_dir, caplog, run_dir, "resume=true")
    monkeypatch.undo()
    assert (run_dir / "summary.json").read_text() == before

    # space is back: the resumed run finishes without training again
    done = run_experiment(make_config(*overrides("resume=true")), run_dir)
    assert done["status"] == "completed" and done["steps"] == 2 and summary(run_dir)["status"] == "completed"
    assert [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert (run_dir / "model" / "model.safetensors").stat().st_size > 1000
    assert not temp_files(run_dir)


def test_save_model_keeps_the_previous_model(tmp_path: Path) -> None:
    class Failing:
        def save_pretrained(self, folder, **kwargs):
            Path(folder).mkdir(parents=True)
            (Path(folder) / "model.safetensors").write_bytes(b"half")
            raise RuntimeError("[enforce fail at inline_container.cc] file write failed: No space left on device")

    target = tmp_path / "model"
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"complete")
    with pytest.raises(DiskFullError, match=f"Free space in {tmp_path} then rerun with resume=true"):
        save_model(Failing(), None, target)
    assert (target / "model.safetensors").read_bytes() == b"complete"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_disk_full_recognises_only_a_full_disk() -> None:
    assert disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"), "/d", "x") is not None
    assert disk_full(PermissionError(errno.EACCES, "Permission denied"), "/d", "x") is None
    wrapped = RuntimeError("could not save")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert "Free space in /d" in str(disk_full(wrapped, "/d", "x"))
