"""Shared fixtures. Data come from ../shared/data (or $UNLEARN_DATA_DIR); never copied here."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from unlearn.config_resolvers import register_resolvers

register_resolvers()  # as the entry points do: configs use ${method_label:} and ${sweep_run_dir:…}

# Set before any test module imports transformers/datasets: they read these once, at import.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"


def shared_data_dir() -> Path:
    return Path(os.environ.get("UNLEARN_DATA_DIR", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if not (path / "pku-saferlhf-v0-test-pairs").is_dir():
        pytest.fail(f"shared data not found at {path}; set UNLEARN_DATA_DIR")
    return path


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch the network or a real W&B account."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def compose_config(overrides: list[str] | None = None, data: Path | None = None) -> DictConfig:
    """Compose conf/config.yaml with overrides, pointing data_dir at the shared data."""
    base = [f"data_dir={data or shared_data_dir()}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=base + list(overrides or []))


@pytest.fixture
def make_config(data_dir: Path) -> Callable[..., DictConfig]:
    return lambda *overrides: compose_config(list(overrides), data_dir)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """A fresh cache dir that shares the embedded model files of the real one."""
    root = tmp_path_factory.mktemp("cache")
    real = Path(os.environ.get("UNLEARN_CACHE_DIR", "~/.cache/unlearn")).expanduser() / "models"
    if real.is_dir():
        (root / "models").symlink_to(real, target_is_directory=True)
    return root


# Settings that keep a tiny_random run to about a second per step on 2 CPU cores.
TINY = [
    "model=tiny_random",
    "trainer.max_steps=3",
    "trainer.forget_batch_size=2",
    "trainer.normal_batch_size=2",
    "dataset.max_length=64",
    "trainer.progress_bar=false",
    "trainer.save_model=false",
    "logger.mode=disabled",
    "eval.enabled=false",  # the evaluation stage has its own tests (tests/test_eval_*.py)
    # the probes run in every test run, on 2 examples (and 2 pairs) instead of 16 and 32: with the
    # tiny model's 49k-token vocabulary the default probes cost ~25 s of a ~30 s run
    "trainer.probe_size=2",
    "trainer.heldout_probe_size=2",
]
