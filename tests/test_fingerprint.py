"""One rule for "the settings that change a result" (unlearn.identity), used by resume, the sweep's
skip of finished runs, the evaluation cache and the tables."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from conftest import CONF, compose_config
from unlearn import identity
from unlearn.checkpoint import CheckpointError, CheckpointManager, apply_checkpoint
from unlearn.checkpoint import config_differences as resume_differences
from unlearn.evaluation.stage import EvaluationStage, cache_key
from unlearn.identity import config_differences, method_label, result_config, settings_fingerprint
from unlearn.results import sweep
from unlearn.results.collect import Run
from unlearn.results.tables import SETTINGS, build_notes

# Each changes only how a run is watched, stored or where it computes: never a number.
NON_RESULT = [
    "trainer.progress_bar=false", "eval.progress_bar=false", "judge.progress_bar=false",
    "scorer.progress_bar=false", "output_root=/elsewhere", "logger.mode=disabled", "logger=disabled",
    "logger.project=other", "threads=3", "model.device=cpu", "judge.device=cuda", "eval.device=cpu",
    "resume=true", "trainer.checkpoint_every=7", "trainer.keep_checkpoints=4", "trainer.save_model=false",
    "trainer.max_consecutive_skips=9", "eval.save_generations=false", "eval.cache=false",
    "eval.every_n_steps=5", "eval.every_n_prompts=3", "cache_dir=/other/cache", "data_dir=/other/data",
]
# Each changes what is trained or measured.
RESULT = {
    "trainer.optimizer.lr=1e-3": "trainer.optimizer.lr",
    "seed=1": "seed",
    "aggregator=mgda": "aggregator._target_",
    "loss=ga": "loss._target_",
    "optimizer=sgd": "trainer.optimizer._target_",
    "trainer.aggregation_metric=preconditioned": "trainer.aggregation_metric",
    "trainer.max_steps=7": "trainer.max_steps",
    "dataset.max_length=64": "dataset.max_length",
    "model.dtype=bfloat16": "model.dtype",
    "eval.n_prompts=9": "eval.n_prompts",
    "eval.enabled=false": "eval.enabled",
    "judge.threshold=0.7": "judge.threshold",
    "scorer.batch_size=8": "scorer.batch_size",
}


@pytest.fixture(scope="module")
def base() -> DictConfig:
    return compose_config([])


def plain(cfg: DictConfig, resolve: bool = False) -> dict:
    return OmegaConf.to_container(cfg, resolve=resolve)


@pytest.mark.parametrize("override", NON_RESULT)
def test_non_result_settings_keep_the_fingerprint(base: DictConfig, override: str) -> None:
    other = compose_config([override])
    for resolve in (False, True):
        assert settings_fingerprint(plain(other, resolve)) == settings_fingerprint(plain(base, resolve))
        assert config_differences(plain(base, resolve), plain(other, resolve)) == []
    assert settings_fingerprint(other) == settings_fingerprint(plain(base, resolve=True))  # DictConfig: resolved


@pytest.mark.parametrize(("override", "key"), list(RESULT.items()))
def test_result_settings_change_the_fingerprint(base: DictConfig, override: str, key: str) -> None:
    other = compose_config([override])
    assert settings_fingerprint(other) != settings_fingerprint(base)
    assert key in config_differences(plain(base), plain(other))


def test_fingerprint_is_sha256_of_sorted_json_and_ignores_key_order() -> None:
    a = {"seed": 0, "trainer": {"lr": 1, "progress_bar": True}, "threads": 2}
    b = {"threads": 8, "trainer": {"progress_bar": False, "lr": 1}, "seed": 0}
    assert result_config(a) == {"seed": 0, "trainer": {"lr": 1}}
    assert settings_fingerprint(a) == settings_fingerprint(b)
    expected = hashlib.sha256(json.dumps({"seed": 0, "trainer": {"lr": 1}}, sort_keys=True).encode()).hexdigest()
    assert settings_fingerprint(a) == expected
    assert settings_fingerprint(a, groups=("trainer",)) != settings_fingerprint(a)


def test_a_brand_new_aggregator_and_loss_need_no_list(base: DictConfig) -> None:
    """A new component's own keys count as result settings; only declared patterns are ignored."""
    cfg = base.copy()
    cfg.aggregator = OmegaConf.create({"_target_": "my_lab.aggs.SoftNash", "temperature": 0.5,
                                       "progress_bar": True, "device": "cpu"})
    cfg.loss = OmegaConf.create({"_target_": "my_lab.losses.Hinge", "margin": 1.0})
    assert method_label(plain(cfg)) == "hinge+softnash"

    def variant(**changes) -> DictConfig:
        out = cfg.copy()
        for dotted, value in changes.items():
            OmegaConf.update(out, dotted.replace("__", "."), value, force_add=True)
        return out

    fp = settings_fingerprint(cfg)
    assert settings_fingerprint(variant(aggregator__temperature=2.0)) != fp
    assert settings_fingerprint(variant(loss__margin=0.1)) != fp
    assert settings_fingerprint(variant(aggregator__progress_bar=False, aggregator__device="cuda")) == fp
    assert config_differences(plain(cfg), plain(variant(aggregator__temperature=2.0))) == ["aggregator.temperature"]
    # a new top-level key is a result setting too, and resume checks it
    with_new = variant(precision="tf32")
    assert config_differences(plain(cfg), plain(with_new)) == ["precision"]
    assert resume_differences(plain(cfg, True), plain(with_new, True)) == \
        ["precision: checkpoint='<absent>', now='tf32'"]


def test_every_declared_pattern_matches_a_real_key_and_says_why(base: DictConfig, data_dir) -> None:
    paper = compose_config(["experiment=paper_embedded"], data_dir)  # an experiment adds its grid
    llama = compose_config(["model=llama3_8b"], data_dir)               # a model declares its architecture
    hit = {identity.non_result_pattern(k) for c in (base, paper, llama) for k in _flat(plain(c))} - {None}
    assert hit | {"hydra"} == set(identity.NON_RESULT_KEYS)  # hydra: not part of a job's config
    assert all(len(why) > 15 for why in identity.NON_RESULT_KEYS.values())


def _flat(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _flat(v, f"{prefix}.{k}" if prefix else k)
    else:
        yield prefix


def test_table_settings_are_result_settings_and_subdir_exclusions_are_not() -> None:
    for label, key in SETTINGS.items():
        assert identity.is_result_key(key), label
    hydra_job = yaml.safe_load((CONF / "config.yaml").read_text())["hydra"]["job"]
    for key in hydra_job["config"]["override_dirname"]["exclude_keys"]:
        assert not identity.is_result_key(key), key


# --------------------------------------------------------------------------- resume


def test_resume_refuses_a_result_change_and_accepts_the_rest(base: DictConfig) -> None:
    saved = plain(base, True)
    assert resume_differences(saved, plain(compose_config(["threads=2", "trainer.progress_bar=false",
                                                           "eval.n_prompts=5", "judge=harmbench"]), True)) == []
    assert resume_differences(saved, plain(compose_config(["trainer.optimizer.lr=1e-3"]), True)) == \
        ["trainer.optimizer.lr: checkpoint=5e-05, now=0.001"]
    # a constant schedule does not read max_steps: the run may be extended
    assert resume_differences(saved, plain(compose_config(["trainer.max_steps=99"]), True)) == []
    linear = plain(compose_config(["trainer.lr_scheduler=linear"]), True)
    longer = plain(compose_config(["trainer.lr_scheduler=linear", "trainer.max_steps=99"]), True)
    assert resume_differences(linear, longer) == ["trainer.max_steps: checkpoint=20, now=99"]


def test_resume_refuses_a_checkpoint_past_max_steps(base: DictConfig, tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    config = plain(base, True)
    ckpt_dir = CheckpointManager(tmp_path).save(
        5, dict(model.named_parameters()), opt, None, {"config": config, "data": {}, "trainer": {}})
    checkpoint = CheckpointManager.verify(ckpt_dir)
    shorter = plain(compose_config(["trainer.max_steps=3"]), True)
    with pytest.raises(CheckpointError, match=r"step 5, past trainer.max_steps=3"):
        apply_checkpoint(checkpoint, {"config": shorter, "data": {}}, model, opt, None)
    loaded = apply_checkpoint(checkpoint, {"config": config, "data": {}}, model, opt, None)
    assert loaded.checkpoint.step == 5


# --------------------------------------------------------------------------- sweep


def _finished(run_dir: Path, config: dict) -> None:
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "summary.json").write_text(json.dumps({"status": "completed", "method": "uce+dual", "seed": 0}))


def test_sweep_skips_a_finished_run_unless_a_result_setting_changed(base: DictConfig, tmp_path: Path) -> None:
    wanted = plain(base)
    cases = {"only_non_result": ["threads=1", "trainer.save_model=false", "eval.every_n_steps=3", "logger=disabled"],
             "result": ["eval.n_prompts=7", "threads=1"]}
    states = {}
    for name, overrides in cases.items():
        run_dir = tmp_path / name
        _finished(run_dir, plain(compose_config(overrides)))
        job = sweep.Job({"seed": "0"}, run_dir, tmp_path, wanted)
        sweep.inspect(job)
        states[name] = (job.state, job.note)
    assert states["only_non_result"] == ("completed", "")
    assert states["result"] == ("conflict", "settings differ: eval.n_prompts")


# --------------------------------------------------------------------------- evaluation cache


def _stage(cfg: DictConfig) -> EvaluationStage:
    examples = [SimpleNamespace(prompt=f"q{i}", response=f"a{i}") for i in range(6)]
    split = SimpleNamespace(train=examples, eval=examples)
    return EvaluationStage(cfg, SimpleNamespace(name="m", source="src"), split, split)


@pytest.mark.parametrize("override", ["eval.progress_bar=false", "judge.progress_bar=false", "judge.device=cuda",
                                      "model.device=cpu", "eval.every_n_steps=4", "eval.save_generations=false",
                                      "cache_dir=/c2", "data_dir=/d2", "threads=4", "trainer.optimizer.lr=1"])
def test_eval_cache_key_ignores_non_result_settings(base: DictConfig, override: str) -> None:
    assert cache_key(_stage(compose_config([override])).key_parts()) == cache_key(_stage(base).key_parts())


@pytest.mark.parametrize("override", ["eval.n_prompts=2", "eval.max_new_tokens=3", "judge.threshold=0.9",
                                      "judge=harmbench", "scorer=detoxify", "model.dtype=bfloat16",
                                      "dataset.max_length=32"])
def test_eval_cache_key_follows_result_settings(base: DictConfig, override: str) -> None:
    assert cache_key(_stage(compose_config([override])).key_parts()) != cache_key(_stage(base).key_parts())


# --------------------------------------------------------------------------- tables


def test_table_notes_name_settings_mixed_within_a_method(tmp_path: Path) -> None:
    def run(seed: int, **trainer) -> Run:
        config = {"seed": seed, "threads": seed, "loss": {"_target_": "unlearn.losses.UCE"},
                  "aggregator": {"_target_": "unlearn.aggregators.DualSpace"},
                  "trainer": {"max_steps": 25, "progress_bar": bool(seed), **trainer}}
        return Run(tmp_path / str(seed), "e", "uce+dual", seed, "completed", {"model": "m"}, config)

    clean = build_notes([run(0), run(1)])
    assert "settings that differ between seeds of one method" not in clean
    mixed = build_notes([run(0), run(1), run(2, max_steps=50)])
    assert mixed["settings that differ between seeds of one method"] == "trainer.max_steps"
