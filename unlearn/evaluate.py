"""``python -m unlearn.evaluate model_path=<run dir | hub id | local dir> [overrides]``.

Evaluates one model on its own with the ``eval``, ``judge`` and ``scorer`` settings and writes
``summary.json`` (``eval/<metric>``) and ``generations.jsonl`` to a new folder under
``${output_root}/evaluations/``. ``model_path=null`` evaluates the configured original model
(``model=…``), sharing the cache of the before-training evaluation of ``python -m unlearn.run``.

* run dir: the folder of a ``python -m unlearn.run`` job; its ``model/`` is loaded (a LoRA
  adapter on top of the run's base model) and its ``.hydra/config.yaml`` names the original
  model (the fluency reference);
* local dir: safetensors weights and a tokenizer;
* hub id: downloaded (fails at once, with a hint, when the hub is unreachable).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from unlearn.config_resolvers import register_resolvers

# Hydra resolves the run dir (``${method_label:}`` in experiments' hydra.sweep.subdir) in this
# process and in every launcher worker, which imports this module to find the task function.
register_resolvers()

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(config_path=CONFIG_DIR, config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from unlearn.evaluation.standalone import evaluate_standalone

    summary = evaluate_standalone(cfg, Path(HydraConfig.get().runtime.output_dir))
    return float(summary.get("eval/harmful_rate", float("nan")))


if __name__ == "__main__":
    main()
