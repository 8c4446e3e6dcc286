"""The method label: one torch-free function, the same for a live config and a run dir's YAML."""

from __future__ import annotations

import sys

import pytest
from omegaconf import OmegaConf

from conftest import CONF, compose_config
from unlearn.experiment import run_label
from unlearn.identity import method_label


@pytest.mark.parametrize(("overrides", "label"), [
    ([], "uce+dual"),
    (["aggregator=mgda", "loss=ga"], "ga+mgda"),
    (["loss=uce_bounded", "aggregator=weighted_sum"], "uce_bounded+weighted_sum"),
    (["optimizer=sgd"], "uce+dual[sgd]"),
    (["optimizer=metric_adam", "trainer.aggregation_metric=preconditioned"],
     "uce+dual[metric_adam,preconditioned]"),
    (["aggregator=upgrad"], "uce+upgrad"),
    # hyperparameters that differ from the option's file are part of the label; lr is not
    (["loss=ga", "aggregator=weighted_sum", "aggregator.weights=[0.5,1.0,1.0]"], "ga+weighted_sum(weights=0.5,1,1)"),
    (["loss.bounded=true", "aggregator.rank_tol=0.01"], "uce_bounded+dual(rank_tol=0.01)"),  # what ran, however spelled
    (["optimizer=sgd", "trainer.optimizer.lr=0.5", "trainer.optimizer.momentum=0.9"], "uce+dual[sgd(momentum=0.9)]"),
    (["loss=ga", "objectives=yao", "aggregator=weighted_sum"], "ga,mismatch,kl+weighted_sum"),
])
def test_labels_name_loss_aggregator_and_a_non_default_update(overrides: list[str], label: str) -> None:
    cfg = compose_config(overrides)
    assert run_label(cfg) == label
    # what the results module reads back from a run dir: the unresolved YAML as a plain dict
    assert method_label(OmegaConf.to_container(cfg, resolve=False)) == label


def test_label_uses_hydra_choices_and_search_path(tmp_path) -> None:
    """An option in another config folder (hydra.searchpath) is named after its file, and its
    hyperparameters are compared with that file."""
    from hydra import compose, initialize_config_dir

    from unlearn.identity import hydra_label_context

    (tmp_path / "loss").mkdir()
    (tmp_path / "loss" / "hinge.yaml").write_text("_target_: my_lab.losses.Hinge\nmargin: 1.0\n")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["loss=hinge", "loss.margin=2.0", f"hydra.searchpath=[file://{tmp_path}]"],
                      return_hydra_config=True)
    container = OmegaConf.to_container(cfg, resolve=False)
    context = hydra_label_context(container.pop("hydra"))
    assert method_label(container, *context) == "hinge(margin=2)+dual"
    assert method_label(container) == "hinge+dual"  # no option file found: the class name


def test_label_survives_a_deleted_checkout(tmp_path) -> None:
    """A run records its checkout's conf/ as an absolute path; built after that checkout is gone
    (a removed git worktree, another machine), the label still comes from the suite's options."""
    from hydra import compose, initialize_config_dir

    from unlearn.identity import hydra_label_context

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["loss=ga", "aggregator=weighted_sum", "optimizer=sgd"],
                      return_hydra_config=True)
    container = OmegaConf.to_container(cfg, resolve=False)
    hydra = container.pop("hydra")
    for source in hydra["runtime"]["config_sources"]:
        if source.get("schema") == "file":
            source["path"] = str(tmp_path / "deleted_checkout" / "conf")
    context = hydra_label_context(hydra)
    assert context[1] == [str(tmp_path / "deleted_checkout" / "conf")]
    assert method_label(container, *context) == "ga+weighted_sum[sgd]"


def test_label_of_an_old_run_without_the_new_keys() -> None:
    old = {"loss": {"_target_": "unlearn.losses.UCE"}, "aggregator": {"_target_": "unlearn.aggregators.MGDA"},
           "trainer": {"optimizer": {"_target_": "torch.optim.AdamW", "lr": 5e-5}}}
    assert method_label(old) == "uce+mgda"
    assert method_label({}) == "?+?"


def test_identity_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, unlearn.identity; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize(("label", "parts"), [
    ("uce+dual", ("uce", "dual", "", "dual", "dual")),
    ("ga,mismatch,kl+weighted_sum(weights=0.5,1,1)", ("ga,mismatch,kl", "weighted_sum(weights=0.5,1,1)", "",
                                                       "weighted_sum", "weighted_sum(weights=0.5,1,1)")),
    ("uce+dual[metric_adam,preconditioned]", ("uce", "dual", "[metric_adam,preconditioned]", "dual",
                                              "dual[metric_adam,preconditioned]")),
    ("uce+dual(rank_tol=0.01)[sgd(momentum=0.9)]", ("uce", "dual(rank_tol=0.01)", "[sgd(momentum=0.9)]", "dual",
                                                    "dual(rank_tol=0.01)[sgd(momentum=0.9)]")),
    ("original", ("original", "", "", "", "")),
])
def test_parse_label_splits_a_label_into_its_parts(label: str, parts: tuple[str, ...]) -> None:
    from unlearn.identity import parse_label

    got = parse_label(label)
    assert (got.losses, got.aggregator, got.update_rule, got.aggregator_name, got.aggregation) == parts
