"""W&B resume (offline, in a temporary WANDB_DIR): the run id is chosen at the first start and kept
in the run dir; a resumed run continues that run (``resume="allow"``, the same id) and sends only
the steps after the last one sent, so the history has no duplicated step. A new run gets a new id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unlearn.tracking import WandbRunState, WandbSink


@pytest.fixture(autouse=True)
def _isolated_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def session(run_dir: Path, steps, resume: bool, monkeypatch) -> tuple[str, list[int]]:
    """One W&B session logging ``steps``; returns its run id and the steps that reached W&B."""
    import wandb

    sent: list[int] = []
    real = wandb.Run.log
    monkeypatch.setattr(wandb.Run, "log", lambda self, data, step=None, **kw: (sent.append(step),
                                                                                 real(self, data, step=step, **kw)))
    sink = WandbSink(run_dir, {"seed": 0}, mode="offline", resume=resume)
    assert sink.run is not None
    run_id = sink.run.id
    for step in steps:
        sink.log({"step": step, "loss/forget": 1.0 / step}, step=step)
    sink.finish()
    monkeypatch.setattr(wandb.Run, "log", real)
    return run_id, sent


def test_resumed_offline_run_keeps_its_id_and_sends_no_step_twice(tmp_path: Path, monkeypatch) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    first, sent1 = session(run_dir, [1, 2, 3, 4], resume=False, monkeypatch=monkeypatch)
    assert sent1 == [1, 2, 3, 4]
    assert json.loads((run_dir / WandbRunState.FILE).read_text()) == {"id": first, "last_step": 4}
    # resumed from a checkpoint at step 2: steps 3 and 4 are recomputed, W&B already holds them
    second, sent2 = session(run_dir, [3, 4, 5, 6], resume=True, monkeypatch=monkeypatch)
    assert second == first and sent2 == [5, 6]
    # offline-run-<time>-<id>, with a "-1" suffix when both sessions started in the same second
    sessions = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
    assert len(sessions) == 2 and all(f"-{first}" in name for name in sessions), sessions
    assert json.loads((run_dir / WandbRunState.FILE).read_text())["last_step"] == 6


def test_a_new_run_gets_a_new_id(tmp_path: Path) -> None:
    a, b = WandbRunState(tmp_path, resume=False).run_id, WandbRunState(tmp_path, resume=False).run_id
    assert a != b and WandbRunState(tmp_path, resume=True).run_id == b
