"""Coverage of the corrected harmful rate's interval when the judge's validation responses share prompts.

    python experiments/correction_coverage.py [--replicates 4000] [--draws 4000] \
        [--prompt-sd 0 1.5 3] [--corr 0 -1] [--out docs/results/correction/coverage.json]

Simulation (every number known): a judge whose sensitivity and specificity vary between prompts,
logit-normal per prompt,

    Se_p = σ(μ_Se + s·z_p),  Sp_p = σ(μ_Sp + s·w_p),  z_p, w_p ~ N(0, 1),

with μ set so the population means E Se_p, E Sp_p equal ``se``, ``sp`` (the embedded judge's 0.539
and 0.666 by default). Validation: ``prompts`` prompts (232, as the PKU eval split), each with
1 + Binomial(8, ½) harmful and the rest of 10 responses safe; the judge flags a harmful response
of prompt p with probability Se_p and a safe one with 1 − Sp_p. Judged answers: ``n`` (200) new
prompts, one answer each, truly harmful with probability θ, flagged by the same rule with that
prompt's own Se_p, Sp_p. So k ~ Binomial(n, Se·θ + (1 − Sp)(1 − θ)) exactly, and the truth is θ.

Each replicate gets both intervals of :func:`unlearn.evaluation.correction.corrected_rate` on the
same data: ``judge_draws="beta"`` (Se*, Sp* from independent Jeffreys Betas: the responses as
independent) and the default (cluster bootstrap over the validation prompts). A replicate whose
rate is not identified counts as a miss. The design effect printed is Var(Ŝe) over replicates
divided by the binomial Se(1 − Se)/P, i.e. how much the prompt clustering inflates the
variance of the validation estimate (about 4 on the real PKU validation data, where the prompt
bootstrap's half-widths are about twice the Jeffreys ones).

Monte Carlo error of a coverage c over R replicates: √(c(1 − c)/R) (0.0034 at c = 0.95,
R = 4000). ``tests/test_correction.py`` runs a short version of the same simulation.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from unlearn.evaluation.correction import ConfusionCounts, corrected_rate  # noqa: E402
from unlearn.uncertainty.simulation import logit_for_rate  # noqa: E402


@dataclass(frozen=True)
class Setting:
    theta: float = 0.30          # true harmful rate of the judged answers
    se: float = 0.539            # population-mean sensitivity and specificity of the judge
    sp: float = 0.666
    prompt_sd: float = 1.0       # logit sd of the per-prompt Se_p and Sp_p (0: no clustering)
    corr: float = 0.0            # correlation of the two logit effects (< 0: some prompts get flagged more)
    prompts: int = 232           # validation prompts
    per_prompt: int = 10         # validation responses per prompt (1 + Binomial(per_prompt − 2, ½) harmful)
    n: int = 200                 # judged answers (one per prompt)


@lru_cache(maxsize=64)
def logit_mean(rate: float, sd: float) -> float:
    """μ with E σ(μ + sd·Z) = rate."""
    return logit_for_rate(rate, sd)


def expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def effects(rng: np.random.Generator, s: Setting, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Standard normal logit effects (z_p, w_p) of ``size`` prompts with correlation ``s.corr``."""
    z = rng.standard_normal(size)
    w = s.corr * z + math.sqrt(1.0 - s.corr**2) * rng.standard_normal(size)
    return z, w


def simulate(rng: np.random.Generator, s: Setting) -> tuple[int, ConfusionCounts]:
    """One replicate: the k flags among the n judged answers and the clustered validation counts."""
    mu_se, mu_sp = logit_mean(s.se, s.prompt_sd), logit_mean(s.sp, s.prompt_sd)
    pos = 1 + rng.binomial(s.per_prompt - 2, 0.5, s.prompts)
    neg = s.per_prompt - pos
    z, w = effects(rng, s, s.prompts)
    se_p, sp_p = expit(mu_se + s.prompt_sd * z), expit(mu_sp + s.prompt_sd * w)
    tp, tn = rng.binomial(pos, se_p), rng.binomial(neg, sp_p)
    counts = ConfusionCounts(int(tp.sum()), int(pos.sum()), int(tn.sum()), int(neg.sum()), "simulated",
                             tuple(map(int, tp)), tuple(map(int, pos)), tuple(map(int, tn)), tuple(map(int, neg)))
    harmful = rng.random(s.n) < s.theta
    z, w = effects(rng, s, s.n)
    se_i, sp_i = expit(mu_se + s.prompt_sd * z), expit(mu_sp + s.prompt_sd * w)
    flagged = np.where(harmful, rng.random(s.n) < se_i, rng.random(s.n) >= sp_i)
    return int(flagged.sum()), counts


def coverage(s: Setting, replicates: int, draws: int, seed: int = 0,
             methods: tuple[str, ...] = ("beta", "auto")) -> dict[str, dict[str, float]]:
    """Per method ("beta": independent Jeffreys Se*, Sp*; "auto": cluster bootstrap): the share of
    replicates whose interval holds θ, its Monte Carlo error, the mean width, the share not
    identified; and the design effect of Ŝe over the replicates."""
    rng = np.random.default_rng(seed)
    hits = {m: 0 for m in methods}
    widths: dict[str, list[float]] = {m: [] for m in methods}
    unidentified = {m: 0 for m in methods}
    se_hat, sp_hat = [], []
    for i in range(replicates):
        k, counts = simulate(rng, s)
        se_hat.append(counts.sensitivity)
        sp_hat.append(counts.specificity)
        for m in methods:
            r = corrected_rate(k, s.n, counts, draws=draws, seed=i, judge_draws=m)
            if not r.identified:
                unidentified[m] += 1
                continue
            hits[m] += r.lo <= s.theta <= r.hi
            widths[m].append(r.hi - r.lo)
    per_class = s.prompts * s.per_prompt / 2  # expected harmful (and safe) validation responses
    deff_se = float(np.var(se_hat, ddof=1) / (s.se * (1 - s.se) / per_class))
    deff_sp = float(np.var(sp_hat, ddof=1) / (s.sp * (1 - s.sp) / per_class))
    out: dict[str, dict[str, float]] = {}
    for m in methods:
        c = hits[m] / replicates
        out[m] = {"coverage": c, "mc_error": math.sqrt(c * (1 - c) / replicates),
                  "mean_width": float(np.mean(widths[m])) if widths[m] else math.nan,
                  "not_identified": unidentified[m] / replicates}
    out["design_effect"] = {"se": deff_se, "sp": deff_sp}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=4000)
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompt-sd", type=float, nargs="+", default=[0.0, 1.5, 3.0])
    ap.add_argument("--corr", type=float, nargs="+", default=[0.0, -1.0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "correction" / "coverage.json")
    args = ap.parse_args(argv)
    results = []
    # without prompt effects (sd 0) their correlation is moot: one setting
    settings = dict.fromkeys((sd, c if sd else 0.0) for sd in args.prompt_sd for c in args.corr)
    for sd, corr in settings:
        s = Setting(prompt_sd=sd, corr=corr)
        t0 = time.perf_counter()
        cov = coverage(s, args.replicates, args.draws, args.seed)
        row = {"setting": asdict(s), "replicates": args.replicates, "draws": args.draws, "seed": args.seed,
               "design_effect": cov.pop("design_effect"),
               "independent_beta": cov["beta"], "cluster_bootstrap": cov["auto"],
               "seconds": time.perf_counter() - t0}
        results.append(row)
        deff = row["design_effect"]
        show = lambda c: f"{c['coverage']:.4f} ± {c['mc_error']:.4f} (width {c['mean_width']:.3f})"  # noqa: E731
        print(f"prompt_sd {sd}, corr {corr}: design effect Se {deff['se']:.2f}, Sp {deff['sp']:.2f}; coverage "
              f"independent Beta {show(cov['beta'])}, cluster bootstrap {show(cov['auto'])}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"script": "experiments/correction_coverage.py", "level": 0.95,
                                    "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
