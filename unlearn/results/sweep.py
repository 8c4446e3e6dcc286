"""Resumable sweeps: launch only the runs of an experiment that are missing.

``python -m unlearn.results.sweep paper_embedded [--launcher joblib] [--tables results] [-- overrides…]``

1. Composes ``experiment=<name>`` (plus the overrides) and reads its grid: the experiment's
   ``grid`` (``seeds`` × ``rows``, each row a set of Hydra overrides in which ``a,b`` sweeps, so
   ``loss: uce,ga`` is two rows; rows in table order), or else ``hydra.sweeper.params`` (one
   product). A sweep on the command line (``seed=0,1,2,3,4``) replaces that key in every row, or
   adds it to every row; a plain override (``seed=0``) fixes it everywhere.
2. Each job's run dir is its experiment's ``hydra.sweep.subdir``, e.g.
   ``${method_label:}/seed=${seed}`` (``uce+dual/seed=0``): deterministic, no job number. Two jobs
   with one run dir (two rows with one label) are an error.
3. Checks each job's run dir. ``summary.json`` with ``status: completed`` is done and skipped,
   provided its saved ``.hydra/config.yaml`` matches the job's config in every setting that changes
   a result (:func:`unlearn.identity.config_differences`; a mismatch stops the driver: pass another
   ``hydra.sweep.dir`` or delete that run). A run stopped by a signal (``status: preempted``,
   with its checkpoint) is left in place: its relaunched job resumes it. Any other content (failed,
   killed, running) is moved to ``<sweep dir>/.stale/`` and the job is run again from scratch.
4. Writes ``<sweep dir>/grid.json`` (the rows' labels in grid order, the seeds, the reference
   row): the tables take their row order and reference from it.
5. Unless ``--no-warm``, first fills the caches every job shares (the judge, the original model's
   evaluation) in one process with every core (:mod:`unlearn.evaluation.warm`), so parallel jobs
   do not each redo them on one thread.
6. Launches the missing jobs as Hydra multiruns, ``python -m unlearn.run -m experiment=<name>
   key=v1,v2 …``, covering exactly the missing set with as few products as it can; any Hydra
   launcher works (``--launcher joblib`` for local parallelism, ``submitit_slurm`` on a cluster).
   With ``--jobs N`` it instead runs each missing job as its own one-job multirun, N at a time on
   this machine, in the grid's seed-major order: no core idles at the end of a row block with an
   odd number of jobs, and an interrupted sweep has every row at the same seeds.
7. With ``--tables OUT``, builds the tables and plots (:mod:`unlearn.results.cli`) from the sweep dir.

Exit status: 0 when every job of the grid is completed, 1 when some job failed (the tables are
still built and list it), 2 on a usage or configuration error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unlearn.identity import config_differences, hydra_label_context, method_label
from unlearn.results.collect import COMPLETED, GRID_FILE, read_json, read_yaml, run_status
from unlearn.training.preemption import PREEMPTED

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"


@dataclass
class Job:
    params: dict[str, str]          # sweep key -> value, e.g. {"seed": "0", "loss": "uce", "aggregator": "dual"}
    run_dir: Path
    sweep_dir: Path
    config: dict[str, Any] = field(default_factory=dict)  # unresolved, without the hydra node
    state: str = "missing"          # completed | preempted | stale | missing
    note: str = ""
    label: str = ""                 # the method label (unlearn.identity.method_label)

    @property
    def overrides(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.params.items()]


class SweepError(RuntimeError):
    pass


def compose(experiment: str, overrides: Sequence[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from unlearn.config_resolvers import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[f"experiment={experiment}", *overrides],
                             return_hydra_config=True)


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Plain overrides, and sweep overrides (``key=a,b``) as key -> values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    plain, sweeps = [], {}
    for text, parsed in zip(overrides, OverridesParser.create().parse_overrides(list(overrides)), strict=True):
        if parsed.is_sweep_override():
            sweeps[parsed.get_key_element()] = [str(v) for v in parsed.sweep_string_iterator()]
        else:
            plain.append(text)
    return plain, sweeps


def _override_value(value: Any) -> str:
    """A grid value as override text: lists as ``[a,b]``, the rest as written."""
    if isinstance(value, list | tuple):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _bare(key: str) -> str:
    return key.lstrip("+~")


def _block(row: dict[str, Any]) -> dict[str, list[str]]:
    """One grid row as ``key -> values`` in the row's key order (``a,b`` sweeps)."""
    texts = [f"{k}={_override_value(v)}" for k, v in row.items()]
    plain, sweeps = split_overrides(texts)
    values = {**{t.split("=", 1)[0]: [t.split("=", 1)[1]] for t in plain}, **sweeps}
    return {str(k): values[str(k)] for k in row}


def grid(experiment: str, overrides: Sequence[str]) -> tuple[list[str], list[dict[str, str]], dict[str, Any]]:
    """The plain overrides, every job's swept values (seed-major: every row gets seed 0 before any
    gets seed 1) and the grid's extras (``reference``). The grid is the experiment's ``grid``
    (``seeds`` × ``rows``) or else its ``hydra.sweeper.params``; command-line sweeps and plain
    overrides apply to every row (module docstring)."""
    from omegaconf import OmegaConf

    plain, cli_sweeps = split_overrides(overrides)
    cfg = compose(experiment, plain)
    spec = OmegaConf.to_container(cfg.grid, resolve=True) if cfg.get("grid") else None
    extras: dict[str, Any] = {}
    if spec:
        seeds = [_override_value(s) for s in spec.get("seeds") or [cfg.seed]]
        blocks = [{"seed": seeds, **_block(row)} for row in spec.get("rows") or [{}]]
        extras = {k: v for k, v in spec.items() if k not in ("seeds", "rows")}
    else:
        params = dict(cfg.hydra.sweeper.get("params") or {})
        _, swept = split_overrides([f"{k}={v}" for k, v in params.items()]) if params else ([], {})
        blocks = [swept] if swept else []
    fixed = {_bare(text.split("=", 1)[0]) for text in plain}  # a plain `seed=0` replaces the swept seed
    blocks = [{k: v for k, v in b.items() if _bare(k) not in fixed} for b in blocks]
    for key, values in cli_sweeps.items():  # in place, as Hydra's basic sweeper orders the product
        blocks = [{(key if _bare(k) == _bare(key) else k): (values if _bare(k) == _bare(key) else v)
                   for k, v in b.items()} | ({} if any(_bare(k) == _bare(key) for k in b) else {key: values})
                  for b in (blocks or [{}])]
    jobs = [dict(zip(b, values, strict=True)) for b in blocks for values in itertools.product(*b.values())]
    jobs = [dict(t) for t in dict.fromkeys(tuple(j.items()) for j in jobs if j)]
    if not jobs:
        raise SweepError(f"experiment={experiment} defines no grid and no hydra.sweeper.params, and no sweep was given")
    seeds = list(dict.fromkeys(j.get("seed") for j in jobs))
    jobs.sort(key=lambda j: seeds.index(j.get("seed")))  # stable: grid order within a seed
    return plain, jobs, extras


def plan(experiment: str, overrides: Sequence[str] = ()) -> tuple[list[str], list[Job]]:
    """Every job of the grid with its run dir, label and state."""
    from omegaconf import OmegaConf

    plain, params_list, _ = grid(experiment, overrides)
    jobs = []
    for params in params_list:
        cfg = compose(experiment, [*plain, *(f"{k}={v}" for k, v in params.items())])
        sweep_dir = OmegaConf.select(cfg, "hydra.sweep.dir")
        subdir = OmegaConf.select(cfg, "hydra.sweep.subdir")
        if "hydra.job.num" in str(OmegaConf.to_container(cfg.hydra.sweep, resolve=False)):
            raise SweepError(f"experiment={experiment}: hydra.sweep.subdir uses hydra.job.num, so run dirs "
                             "are not stable across relaunches; set it from the swept values")
        container = OmegaConf.to_container(cfg, resolve=False)
        hydra_node = container.pop("hydra", None)
        label = method_label(container, *hydra_label_context(hydra_node))
        jobs.append(Job(params, Path(sweep_dir) / str(subdir), Path(sweep_dir), container, label=label))
    seen: dict[Path, Job] = {}
    for job in jobs:
        other = seen.setdefault(job.run_dir, job)
        if other is not job:
            raise SweepError(f"experiment={experiment}: jobs {' '.join(other.overrides)} and {' '.join(job.overrides)} "
                             f"share the run dir {job.run_dir} (method label {job.label!r}): make the rows differ "
                             "in a setting the label shows, or fix hydra.sweep.subdir")
    for job in jobs:
        inspect(job)
    return plain, jobs


def write_grid(experiment: str, jobs: Sequence[Job], extras: dict[str, Any], sweep_root: Path) -> Path:
    """``<sweep dir>/grid.json``: the experiment, its rows' labels in grid order, seeds, reference."""
    import json

    payload = {"experiment": experiment, "methods": list(dict.fromkeys(j.label for j in jobs)),
               "seeds": list(dict.fromkeys(j.params.get("seed") for j in jobs if "seed" in j.params)), **extras}
    sweep_root.mkdir(parents=True, exist_ok=True)
    path = sweep_root / GRID_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def inspect(job: Job) -> None:
    summary = read_json(job.run_dir / "summary.json")
    if run_status(summary) == COMPLETED:
        saved = read_yaml(job.run_dir / ".hydra" / "config.yaml")
        diff = config_differences(saved, job.config)
        if diff:
            job.state, job.note = "conflict", "settings differ: " + ", ".join(diff[:8])
        else:
            job.state = "completed"
    elif summary and summary.get("status") == PREEMPTED:  # its relaunched job resumes it
        job.state, job.note = "preempted", f"resumes after step {summary.get('preempted_at_step')}"
    elif job.run_dir.exists() and any(job.run_dir.iterdir()):
        job.state = "stale"
        job.note = f"status={summary.get('status')}" if summary else "no summary.json"
    else:
        job.state = "missing"


def move_aside(job: Job, sweep_root: Path) -> Path:
    """Move a failed or interrupted run out of the way (kept for inspection, never deleted)."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    rel = job.run_dir.relative_to(sweep_root) if job.run_dir.is_relative_to(sweep_root) else Path(job.run_dir.name)
    target = sweep_root / ".stale" / f"{str(rel).replace(os.sep, '__')}-{stamp}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(job.run_dir), target)
    return target


def product_cover(rows: Sequence[tuple[str, ...]]) -> list[list[list[str]]]:
    """Blocks (one list of values per position) whose cartesian products are disjoint and
    together equal ``rows`` exactly; rows that share their tails are merged."""
    rows = list(dict.fromkeys(rows))
    if not rows:
        return []
    if len(rows[0]) == 1:
        return [[[r[0] for r in rows]]]
    by_head: dict[str, list[tuple[str, ...]]] = {}
    for r in rows:
        by_head.setdefault(r[0], []).append(r[1:])
    merged: dict[tuple, list[str]] = {}
    for head, tails in by_head.items():
        key = tuple(tuple(tuple(v) for v in block) for block in product_cover(tails))
        merged.setdefault(key, []).append(head)
    return [[heads, *(list(v) for v in block)] for key, heads in merged.items() for block in key]


def launch_commands(experiment: str, plain: Sequence[str], jobs: Sequence[Job],
                    launcher: str | None) -> list[list[str]]:
    """Hydra multirun commands covering exactly ``jobs``: the jobs that sweep the same keys are
    covered by products (:func:`product_cover`), in the order the keys first appear."""
    extra = [f"hydra/launcher={launcher}"] if launcher and launcher != "basic" else []
    by_keys: dict[tuple[str, ...], list[Job]] = {}
    for job in jobs:
        by_keys.setdefault(tuple(job.params), []).append(job)
    return [[sys.executable, "-m", "unlearn.run", "-m", f"experiment={experiment}",
             *(f"{k}={','.join(vals)}" for k, vals in zip(keys, block, strict=True)), *plain, *extra]
            for keys, group in by_keys.items()
            for block in product_cover([tuple(j.params[k] for k in keys) for j in group])]


def job_commands(experiment: str, plain: Sequence[str], jobs: Sequence[Job]) -> list[list[str]]:
    """One single-job multirun per job, in the jobs' order: its run dir is the one the grid's
    multirun would give it (``hydra.sweep.dir``/``subdir``), so either way resumes the other."""
    return [[sys.executable, "-m", "unlearn.run", "-m", f"experiment={experiment}",
             *(f"{k}={v}" for k, v in job.params.items()), *plain] for job in jobs]


def run_pool(commands: Sequence[Sequence[str]], parallel: int) -> bool:
    """Run ``commands`` as subprocesses, ``parallel`` at a time, each started as a slot frees;
    True when every one exited 0. On Ctrl-C the commands not yet started are dropped
    (``Executor.map`` cancels its pending futures) and the interrupt propagates."""
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        codes = list(pool.map(lambda cmd: subprocess.run(list(cmd), check=False).returncode, commands))
    return all(code == 0 for code in codes)


def warm_command(experiment: str, plain: Sequence[str]) -> list[str]:
    """The cache warm-up (:mod:`unlearn.evaluation.warm`) for the jobs' shared settings, on every core."""
    kept = [o for o in plain if not o.split("=", 1)[0].lstrip("+~") == "threads"]
    return [sys.executable, "-m", "unlearn.evaluation.warm", f"experiment={experiment}", *kept,
            f"threads={os.cpu_count() or 1}"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m unlearn.results.sweep",
                                description="Run the missing jobs of an experiment's sweep, then build its tables.")
    p.add_argument("experiment", help="a conf/experiment option, e.g. paper_embedded")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every job (key=value); key=a,b sweeps")
    p.add_argument("--launcher", default=None,
                   help="Hydra launcher: basic (default), joblib (local processes), submitit_slurm, "
                        "or a conf/hydra/launcher option")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="run each job as its own process, N at a time on this machine, in seed-major "
                        "order (instead of one Hydra multirun per row block); not with --launcher")
    p.add_argument("--tables", type=Path, default=None, metavar="OUT",
                   help="then build tables and plots from the sweep dir into OUT (e.g. results)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the commands; run nothing")
    p.add_argument("--no-warm", action="store_true",
                   help="do not fill the shared caches (judge, original model's evaluation) before launching")
    return p.parse_intermixed_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.jobs is not None and (args.jobs < 1 or args.launcher not in (None, "basic")):
        print(f"error: --jobs {args.jobs} runs N >= 1 local processes itself; drop --launcher "
              f"{args.launcher} or --jobs", file=sys.stderr)
        return 2
    try:
        plain, jobs = plan(args.experiment, args.overrides)
    except Exception as exc:  # noqa: BLE001 - a config error: say it and stop
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    roots = sorted({j.sweep_dir for j in jobs})
    if len(roots) != 1:
        print(f"error: the jobs of experiment={args.experiment} do not share one sweep dir: {roots}", file=sys.stderr)
        return 2
    sweep_root = roots[0]
    counts = {s: sum(j.state == s for j in jobs) for s in ("completed", "preempted", "stale", "missing", "conflict")}
    print(f"experiment={args.experiment}: {len(jobs)} jobs in {sweep_root}: "
          + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    for job in jobs:
        print(f"  [{job.state:9s}] {job.label:32s} {' '.join(job.overrides)}  {job.run_dir}" + (f"  ({job.note})" if job.note else ""))
    conflicts = [j for j in jobs if j.state == "conflict"]
    if conflicts:
        print(f"error: {len(conflicts)} finished run(s) in {sweep_root} were made with other settings. Pass "
              "another hydra.sweep.dir=… (or output_root=…), or delete those run dirs.", file=sys.stderr)
        return 2
    todo = [j for j in jobs if j.state != "completed"]
    commands = (job_commands(args.experiment, plain, todo) if args.jobs is not None
                else launch_commands(args.experiment, plain, todo, args.launcher))
    for cmd in commands:
        print("$ " + " ".join(cmd[1:] if cmd[0] == sys.executable else cmd))
    if args.dry_run:
        return 0
    _, _, extras = grid(args.experiment, args.overrides)
    print(f"wrote {write_grid(args.experiment, jobs, extras, sweep_root)}")
    for job in todo:
        if job.state == "stale":
            print(f"moved the unfinished run {job.run_dir} to {move_aside(job, sweep_root)}")
    launched_ok = True
    if todo and not args.no_warm:
        warm = warm_command(args.experiment, plain)
        print("$ " + " ".join(warm[1:]))
        if subprocess.run(warm, check=False).returncode != 0:
            print("warning: the cache warm-up failed; each job fills the caches itself", file=sys.stderr)
    if args.jobs is not None:  # same cwd: same relative paths
        launched_ok = run_pool(commands, args.jobs)
    else:
        for cmd in commands:
            launched_ok &= subprocess.run(cmd, check=False).returncode == 0
    for job in jobs:
        inspect(job)
    failed = [j for j in jobs if j.state != "completed"]
    if failed:
        print(f"warning: {len(failed)} of {len(jobs)} jobs did not complete: "
              + "; ".join(str(j.run_dir) for j in failed), file=sys.stderr)
    elif not launched_ok:
        print("warning: a launch returned an error although every run completed", file=sys.stderr)
    if args.tables is not None:
        from unlearn.results.cli import main as tables_main

        tables_main([str(sweep_root), "--out", str(args.tables)])
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
