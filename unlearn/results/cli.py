"""``python -m unlearn.results <sweep dirs…> [--out results] [--wandb auto|disabled|offline|online]``

Reads every run dir below the given sweep dirs, and for each experiment writes into
``<out>/<experiment>/``: ``table.md``, ``table.tex``, ``table.csv``, ``runs.csv``,
``descent_violations.csv``, ``paired_differences.md``/``.csv`` (every method against
``--reference``, :mod:`unlearn.results.comparisons`), ``hypervolume.md``/``.csv``
(:mod:`unlearn.results.loss_space`), ``budget.md``/``.csv`` (where the runs' time went,
:mod:`unlearn.results.budget`) and the PNG plots (:mod:`unlearn.results.plots`). It prints
the Markdown tables and lists the runs left out (failed, unfinished, or on another prompt set),
which never enter a mean.

W&B: with ``--wandb auto`` (the default) the tables are logged as ``wandb.Table`` when the runs
themselves logged to W&B (``logger.mode`` offline or online in their config) and ``WANDB_MODE``
is not ``disabled``; the W&B files go to ``<out>/wandb``. A W&B failure only prints a warning.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from unlearn.results.budget import write_budget
from unlearn.results.collect import collect_runs, grid_reference, group_by_experiment, objective_names
from unlearn.results.comparisons import REFERENCE, write_comparisons
from unlearn.results.intervals import Bootstrap
from unlearn.results.length_control import write_length_control
from unlearn.results.loss_space import write_loss_space
from unlearn.results.plots import DESCENT_TOL, QUANTITIES, descent_violations, write_plots
from unlearn.results.tables import Table, build_tables, to_dataframe, to_markdown, write_table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m unlearn.results", description=__doc__.split("\n\n")[1])
    p.add_argument("sweeps", nargs="+", type=Path, help="sweep dirs (or run dirs) to read")
    p.add_argument("--out", type=Path, default=Path("results"), help="output folder (default: results)")
    p.add_argument("--wandb", choices=["auto", "disabled", "offline", "online"], default="auto",
                   help="log the tables to W&B (auto: when the runs did)")
    p.add_argument("--wandb-project", default=None, help="W&B project (default: the runs' logger.project)")
    p.add_argument("--descent-tol", type=float, default=DESCENT_TOL,
                   help="g_i·d counts as negative below -tol·‖g_i‖·‖d‖ (default 1e-6)")
    p.add_argument("--reference", default=None,
                   help="method every other one is compared with in paired_differences (default: the grid's "
                        f"reference in the sweep's grid.json, else {REFERENCE})")
    p.add_argument("--n-boot", type=int, default=Bootstrap.n_boot,
                   help="bootstrap resamples (one-seed intervals over prompts; default 2000)")
    p.add_argument("--bootstrap-seed", type=int, default=Bootstrap.seed, help="seed of the resamples (default 0)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    return p.parse_args(argv)


def wandb_mode(tables: dict[str, Table], requested: str) -> str:
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE") == "disabled":
        return "disabled"
    modes = {str((r.config.get("logger") or {}).get("mode", "disabled")) for t in tables.values() for r in t.runs}
    if "online" in modes:
        return "online"
    if any(m not in {"disabled", "online"} for m in modes):  # offline, or ${oc.env:WANDB_MODE,offline}
        return "offline"
    return "disabled"


def log_to_wandb(tables: dict[str, Table], out: Path, mode: str, project: str | None,
                 plots: dict[str, dict[str, Path]]) -> bool:
    """One W&B run (job_type ``results``) per call, with a ``wandb.Table`` per experiment."""
    if mode == "disabled" or not tables:
        return False
    try:
        import wandb

        if project is None:
            projects = {(r.config.get("logger") or {}).get("project") for t in tables.values() for r in t.runs}
            project = next((p for p in sorted(filter(None, projects), key=str)), "unlearn")
        (out / "wandb").mkdir(parents=True, exist_ok=True)
        run = wandb.init(dir=str(out), mode=mode, project=str(project), job_type="results",
                         name="results-" + "+".join(tables), reinit="create_new",
                         settings=wandb.Settings(init_timeout=30, console="off", silent=True))
        payload = {}
        for name, table in tables.items():
            payload[f"{name}/table"] = wandb.Table(dataframe=to_dataframe(table))
            for key, path in plots.get(name, {}).items():
                payload[f"{name}/{key}"] = wandb.Image(str(path))
        run.log(payload)
        run.finish()
        return True
    except Exception as exc:  # noqa: BLE001 - W&B must never cost the tables
        warnings.warn(f"W&B logging of the tables failed ({type(exc).__name__}: {exc}); "
                      "the files under the output folder are complete", stacklevel=2)
        return False


def write_descent_csv(table: Table, path: Path, tol: float) -> Path:
    """One row per aggregator and quantity: ``descent`` (g_i·d) and ``descent_update`` (g_i·u)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        names = objective_names(table.runs)
        writer.writerow(["aggregator", "quantity", "steps", "any", *names])
        for quantity in QUANTITIES:
            for agg, s in sorted(descent_violations(table.runs, tol, quantity).items()):
                writer.writerow([agg, quantity, s["steps"], *(s[k] for k in ("any", *names))])
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        runs = collect_runs(args.sweeps)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not runs:
        print(f"error: no run dirs (summary.json or .hydra/config.yaml) below {', '.join(map(str, args.sweeps))}",
              file=sys.stderr)
        return 2
    tables = build_tables(group_by_experiment(runs), Bootstrap(n_boot=args.n_boot, seed=args.bootstrap_seed))
    reference = args.reference or grid_reference(args.sweeps) or REFERENCE
    plots: dict[str, dict[str, Path]] = {}
    for name, table in tables.items():
        folder = args.out / name
        files = write_table(table, folder)
        files["descent"] = write_descent_csv(table, folder / "descent_violations.csv", args.descent_tol)
        files.update(write_comparisons(table, folder, reference))
        files.update(write_length_control(table, folder))
        files.update(write_budget(table.runs, name, folder))
        space = write_loss_space(table, folder, plots=not args.no_plots)
        if "loss_space" in space:
            plots[name] = {"loss_space": space.pop("loss_space")}
        files.update(space)
        if not args.no_plots:
            plots[name] = {**write_plots(table, folder, args.descent_tol), **plots.get(name, {})}
        print(to_markdown(table))
        print(files["paired_md"].read_text(encoding="utf-8"))
        print(files["length_md"].read_text(encoding="utf-8"))
        print(files["hypervolume_md"].read_text(encoding="utf-8"))
        written = [*files.values(), *plots.get(name, {}).values()]
        print(f"wrote {', '.join(str(p) for p in written)}\n")
        if table.excluded:
            print(f"warning: {name}: {len(table.excluded)} run(s) failed or unfinished, left out of the means "
                  f"(listed in {files['md']})", file=sys.stderr)
    if log_to_wandb(tables, args.out, wandb_mode(tables, args.wandb), args.wandb_project, plots):
        print(f"logged {len(tables)} table(s) to W&B ({args.out / 'wandb'})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
