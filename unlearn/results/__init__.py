"""Results of sweeps: read run dirs, build tables (Markdown, LaTeX, CSV) and plots.

* :mod:`.collect`: one :class:`~unlearn.results.collect.Run` per run dir (``summary.json``,
  ``metrics.jsonl``, ``.hydra/config.yaml``), grouped by experiment;
* :mod:`.records`: per-prompt values of a run (``generations.jsonl``, utility NLLs);
* :mod:`.intervals`, :mod:`.tables`: mean [95 % interval] over seeds per method, plus the
  original model's row;
* :mod:`.comparisons`: every method against a reference (MOLLM), paired over prompts;
* :mod:`.plots`: harmful rate against fluency and utility with error bars and the Pareto front,
  losses over steps, share of steps whose direction increased an objective;
* :mod:`.loss_space`: forgetting against drift over training, and its hypervolume;
* :mod:`.sweep`: the resumable driver of ``make paper-tables`` (launches only missing runs);
* ``python -m unlearn.results <sweep dirs…>``: the command line (:mod:`.cli`).
"""

from unlearn.results.collect import Run, collect_runs, group_by_experiment

__all__ = ["Run", "collect_runs", "group_by_experiment"]
