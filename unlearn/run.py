"""Entry point: ``python -m unlearn.run [overrides]`` (add ``-m`` for a sweep).

Examples::

    python -m unlearn.run                                  # embedded SmolLM2, UCE + dual
    python -m unlearn.run aggregator=mgda trainer.max_steps=50
    python -m unlearn.run -m aggregator=weighted_sum,mgda,dual seed=0,1,2
    python -m unlearn.run model=llama3_8b trainer.lora=true  # GPU
    accelerate launch --num_processes 2 -m unlearn.run model=llama3_8b trainer.lora=true \
        hydra.run.dir=outputs/runs/llama3-dp2              # data parallel, 2 GPUs

SIGTERM, SIGUSR1 or SIGUSR2 stop a run after the current step with a checkpoint; the process then
exits with code 75 (:data:`unlearn.training.preemption.EXIT_PREEMPTED`), or under the submitit
launcher requeues itself; rerunning the same command resumes it (docs/failures.md).

Data parallel: only rank 0 uses Hydra's run dir; the other ranks get overrides that keep Hydra
from writing anything there (no ``.hydra/``, no log file; their Hydra dir is an empty folder
under the system temp dir) and train in rank 0's run dir, which it broadcasts.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import hydra
from omegaconf import DictConfig

from unlearn.config_resolvers import register_resolvers

# Hydra resolves the run dir (``${method_label:}`` in experiments' hydra.sweep.subdir) in this
# process and in every launcher worker, which imports this module to find the task function.
register_resolvers()

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from unlearn.evaluation.standalone import format_run_report
    from unlearn.experiment import run_experiment
    from unlearn.training.preemption import Preempted, exit_preempted

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        summary = run_experiment(cfg, run_dir)
    except Preempted as exc:  # checkpointed: exit 75, or submitit requeues the job
        exit_preempted(exc)
    if not non_main_rank_overrides():  # data parallel: rank 0 alone reports (it wrote the run dir)
        print(format_run_report(summary, run_dir))
    return float(summary.get("final/loss/forget", float("nan")))


def non_main_rank_overrides(environ: dict[str, str] | None = None) -> list[str]:
    """Hydra overrides for a data-parallel rank > 0 (``RANK`` set by the launcher); else []."""
    rank = int((environ if environ is not None else os.environ).get("RANK", "0") or 0)
    if rank == 0:
        return []
    scratch = Path(tempfile.gettempdir()) / f"unlearn-rank{rank}"
    return [f"hydra.run.dir={scratch}", f"hydra.sweep.dir={scratch}", "hydra.output_subdir=null",
            "hydra/job_logging=stdout"]


if __name__ == "__main__":
    sys.argv += non_main_rank_overrides()  # last: they win over the user's hydra.run.dir
    main()
