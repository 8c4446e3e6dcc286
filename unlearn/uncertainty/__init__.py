"""Uncertainty of the evaluation metrics (torch-free; NumPy only).

* per run: percentile bootstrap over prompts / utility examples (:mod:`.bootstrap`);
* across seeds: variance components with a Satterthwaite t quantile (:mod:`.seeds`);
* two methods on the same prompts: paired difference and exact McNemar test (:mod:`.paired`).
"""

from unlearn.uncertainty.bootstrap import bootstrap_interval, mean_interval, ratio_interval
from unlearn.uncertainty.interval import Interval
from unlearn.uncertainty.paired import mcnemar_exact, paired_difference
from unlearn.uncertainty.seeds import seed_prompt_interval

__all__ = ["Interval", "bootstrap_interval", "mcnemar_exact", "mean_interval", "paired_difference",
           "ratio_interval", "seed_prompt_interval"]
