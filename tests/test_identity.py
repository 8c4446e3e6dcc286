"""The method label: one torch-free function, the same for a live config and a run dir's YAML."""

from __future__ import annotations

import sys

import pytest
from omegaconf import OmegaConf

from conftest import compose_config
from unlearn.experiment import run_label
from unlearn.identity import method_label


@pytest.mark.parametrize(("overrides", "label"), [
    ([], "uce+dual"),
    (["aggregator=mgda", "loss=ga"], "ga+mgda"),
    (["loss=uce_bounded", "aggregator=weighted_sum"], "uce_bounded+weighted_sum"),
    (["optimizer=sgd"], "uce+dual[sgd]"),
    (["optimizer=metric_adam", "trainer.aggregation_metric=preconditioned"],
     "uce+dual[metricadam,preconditioned]"),
    (["aggregator=upgrad"], "uce+upgrad"),
])
def test_labels_name_loss_aggregator_and_a_non_default_update(overrides: list[str], label: str) -> None:
    cfg = compose_config(overrides)
    assert run_label(cfg) == label
    # what the results module reads back from a run dir: the unresolved YAML as a plain dict
    assert method_label(OmegaConf.to_container(cfg, resolve=False)) == label


def test_label_of_an_old_run_without_the_new_keys() -> None:
    old = {"loss": {"_target_": "unlearn.losses.UCE"}, "aggregator": {"_target_": "unlearn.aggregators.MGDA"},
           "trainer": {"optimizer": {"_target_": "torch.optim.AdamW", "lr": 5e-5}}}
    assert method_label(old) == "uce+mgda"
    assert method_label({}) == "?+?"


def test_identity_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, unlearn.identity; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
