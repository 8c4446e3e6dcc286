"""Coverage of the seeds × prompts interval: Satterthwaite's t against the generalized pivot.

Binary per-prompt outcomes (a judge's verdicts) with a seed effect and a prompt effect on the
logit scale (:func:`unlearn.uncertainty.simulation.binary_grids`), 200 prompts, nominal 95 %:
for each regime, the share of simulated experiments whose interval covers the true rate, and
the mean width. A seed logit SD of 0.3 / 0.55 at rate 0.15 is a seed-to-seed SD of about
0.04 / 0.07 in rate, the spread of the embedded model's runs.

    python experiments/interval_coverage.py --sims 1000 --out docs/results/intervals/coverage.csv
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
from pathlib import Path

import numpy as np

from unlearn.uncertainty.seeds import pivot_interval, prompt_term, seed_terms, summarise_grid, t_interval
from unlearn.uncertainty.simulation import binary_grids

FIELDS = ["seeds", "rate", "seed_logit_sd", "prompt_logit_sd", "sims", "t_coverage", "t_width",
          "pivot_coverage", "pivot_width", "mc_error"]


def intervals(grid: np.ndarray, draws: int) -> tuple:
    summary = summarise_grid(grid)
    terms = [*seed_terms(summary), prompt_term(summary.prompt_means)]
    return (t_interval(summary.grand, terms, 0.95, "", 0, 0),
            pivot_interval(summary.grand, terms, 0.95, "", 0, 0, draws=draws))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=2000)
    parser.add_argument("--draws", type=int, default=5000, help="pivot draws per interval (the default of the tables)")
    parser.add_argument("--out", default="outputs/interval_coverage.csv")
    args = parser.parse_args()
    rows = []
    regimes = itertools.product((3, 5), (0.15, 0.3), (0.0, 0.3, 0.55), (1.0, 2.0))
    for k, (seeds, rate, seed_sd, prompt_sd) in enumerate(regimes):
        grids = binary_grids(np.random.default_rng(1000 + k), args.sims, seeds, 200, rate, seed_sd, prompt_sd)
        hits, widths = np.zeros(2), np.zeros(2)
        for grid in grids:
            for j, iv in enumerate(intervals(grid, args.draws)):
                hits[j] += iv.lo <= rate <= iv.hi
                widths[j] += iv.hi - iv.lo
        cov, width = hits / args.sims, widths / args.sims
        rows.append({"seeds": seeds, "rate": rate, "seed_logit_sd": seed_sd, "prompt_logit_sd": prompt_sd,
                     "sims": args.sims, "t_coverage": round(cov[0], 4), "t_width": round(width[0], 4),
                     "pivot_coverage": round(cov[1], 4), "pivot_width": round(width[1], 4),
                     "mc_error": round(math.sqrt(0.95 * 0.05 / args.sims), 4)})
        print(rows[-1], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
