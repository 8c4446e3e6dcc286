"""Compose and instantiate every option of every config group (lightning-hydra-template style)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from conftest import CONF, compose_config

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and not p.name.startswith("_"))
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF / g).glob("*.yaml"))]


def _in_defaults(group: str) -> bool:
    """Groups in config.yaml's defaults list are overridden (g=o); optional ones appended (+g=o)."""
    defaults = OmegaConf.load(CONF / "config.yaml").defaults
    return any(isinstance(d, DictConfig) and group in d for d in defaults)


def _package(group: str, option: str) -> str:
    """Where the option lands in the config: its ``# @package`` header, else the group name."""
    first = (CONF / group / f"{option}.yaml").read_text().splitlines()[0]
    return first.split("@package", 1)[1].strip() if first.startswith("# @package") else group


def _targets(node, path=""):
    """Yield (path, node) for every sub-config holding a ``_target_``."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
            return
        for key in node:
            yield from _targets(node[key], f"{path}.{key}" if path else str(key))


@pytest.fixture(scope="module")
def tiny_safetensors_dir(tmp_path_factory) -> Path:
    """A real safetensors checkpoint standing in for hub weights (no network here)."""
    from unlearn.models.tiny import build_tiny_random

    folder = tmp_path_factory.mktemp("tiny_llama")
    loaded = build_tiny_random(device="cpu")
    loaded.model.save_pretrained(folder, safe_serialization=True)
    loaded.tokenizer.save_pretrained(folder)
    return folder


# Options that point at the hub are instantiated from a local stand-in with the same loader.
LOCAL_STAND_INS = {("model", "llama3_8b"): lambda d: [f"model.path={d}", "model.device=cpu"]}


# Options that cannot run on this machine (no GPU, no hub, no Detoxify checkpoint) must fail at
# instantiation with the suite's own error, naming what to pass instead.
OFFLINE_FAILURES = {
    ("judge", "beaver_dam"): "judge=embedded",
    ("judge", "llama_guard"): "judge.path",
    ("judge", "harmbench"): "judge.path",
    ("scorer", "detoxify"): "checkpoint",
    ("attack", "over_refusal"): "pass path=",  # no XSTest copy ships in a package: the user supplies one
}


def _instantiate(group: str, option: str, path: str, target: DictConfig):
    if group == "judge" and option.startswith("embedded"):  # trained from labelled responses
        from unlearn.data.types import Example

        rows = [Example(f"q{i}", text, harmful=i % 2 == 1) for i, text in enumerate(
            ["I cannot help with that request.", "Here is how to hurt them: hit hard.",
             "Please contact a professional.", "Steal the car by breaking the window.",
             "That is illegal; I won't assist.", "Poison works best in small doses."] * 4)]
        benign = [Example(f"b{i}", f"The capital of country {i} is its largest city.") for i in range(6)]
        return instantiate(target, train_examples=rows, normal_train_examples=benign, features="tfidf",
                           C=[1.0], folds=2, progress_bar=False)
    return instantiate(target)


def test_every_group_has_options() -> None:
    assert {"model", "dataset", "loss", "aggregator", "trainer", "logger"} <= set(GROUPS)
    assert len(OPTIONS) >= 14


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_compose_and_instantiate(group: str, option: str, tiny_safetensors_dir: Path) -> None:
    extra = LOCAL_STAND_INS.get((group, option), lambda d: [])(tiny_safetensors_dir)
    prefix = "" if _in_defaults(group) else "+"
    cfg = compose_config([f"{prefix}{group}={option}", *extra])
    OmegaConf.resolve(cfg)  # every interpolation resolves
    if group in {"experiment", "method"}:  # global packages: they pick the loss and aggregator
        for key in ("loss", "aggregator"):
            assert instantiate(cfg[key]) is not None
        return
    node = OmegaConf.select(cfg, _package(group, option))
    if group == "optimizer":  # partial: built with the trainable parameters by the experiment
        import torch

        optimizer = instantiate(node)(params=[torch.nn.Parameter(torch.zeros(3))])
        assert isinstance(optimizer, torch.optim.Optimizer) and optimizer.param_groups[0]["lr"] > 0
        return
    if (group, option) in OFFLINE_FAILURES:
        from unlearn.errors import UnlearnError

        with pytest.raises(Exception) as info:
            for path, target in _targets(node):
                instantiate(target)
        cause = info.value if isinstance(info.value, UnlearnError) else info.value.__cause__
        assert isinstance(cause, UnlearnError), repr(info.value)
        assert OFFLINE_FAILURES[(group, option)] in str(cause)
        return
    built = [(path, _instantiate(group, option, path, target)) for path, target in _targets(node)]
    if group in {"model", "dataset", "loss", "aggregator"}:
        assert built, f"{group}={option} has no _target_ to instantiate"
    for path, obj in built:
        assert obj is not None, path
    if group == "model":
        (_, loaded), = built
        assert loaded.tokenizer.pad_token_id is not None
        assert sum(p.numel() for p in loaded.model.parameters()) > 0
    if group == "dataset":
        splits = dict(built)
        assert splits["forget"].train and splits["forget"].eval and splits["normal"].train


def test_default_config_is_the_embedded_setup() -> None:
    cfg = compose_config()
    assert cfg.model._target_.endswith("load_smollm2")
    assert cfg.loss._target_.endswith("UCE") and cfg.loss.bounded is False
    assert cfg.aggregator._target_.endswith("DualSpace")
    assert cfg.logger.mode == "offline"
    assert cfg.trainer.lora is False


def test_unknown_option_is_a_clear_error() -> None:
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="aggregator"):
        compose_config(["aggregator=does_not_exist"])
