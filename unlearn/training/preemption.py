"""Preemption: a stop signal ends a run at a step boundary with a checkpoint, and the run resumes.

SIGTERM (what SLURM, Kubernetes and ``kill`` send before killing), SIGUSR1 and SIGUSR2 (what
submitit's SLURM jobs receive ``signal_delay_s`` before their time limit) only set a flag. The
trainer checks it between steps: it finishes the current step, writes a checkpoint (whatever
``trainer.checkpoint_every`` says) and raises :class:`Preempted`; the run then writes
``summary.json`` with ``status: preempted``, flushes ``metrics.jsonl`` and W&B, and
``python -m unlearn.run`` exits with :data:`EXIT_PREEMPTED` (75, ``EX_TEMPFAIL``: try again). A
signal after training stops the run before the model is saved or evaluated (the final checkpoint
holds the trained weights).

Rerunning the same command in the same run dir resumes it: a run dir whose ``summary.json`` says
``preempted`` is continued as with ``resume=true`` (:func:`was_preempted`). Under the submitit
launcher (``hydra/launcher=slurm``) the job hands over to submitit's own handler, which requeues it
with the same arguments (the same run dir); the requeued job resumes.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL: a temporary failure, the same command may be retried
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGUSR2") if hasattr(signal, name))
PREEMPTED = "preempted"


class Preempted(Exception):
    """A stop signal ended the run at ``step`` (a checkpoint of that step is on disk)."""

    def __init__(self, step: int, signum: int | None) -> None:
        self.step, self.signum = step, signum
        name = signal.Signals(signum).name if signum else "a stop signal"
        super().__init__(f"{name} received: stopped after step {step} with a checkpoint; rerun the same "
                         "command (resume=true hydra.run.dir=<this run dir>) to continue")


class StopRequest:
    """Callable flag: true once a stop signal has arrived."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    def check(self, step: int) -> None:
        """Raise :class:`Preempted` if a stop signal has arrived."""
        if self.signum is not None:
            raise Preempted(step, self.signum)


@contextmanager
def watch_signals(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[StopRequest]:
    """Catch ``signals`` into a :class:`StopRequest` while inside; the previous handlers are
    restored on exit. Outside the main thread (no handler can be set there) the request never fires."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def on_signal(signum: int, frame: Any) -> None:
        if request.signum is None:
            print(f"unlearn: {signal.Signals(signum).name} received; stopping after the current step "
                  "with a checkpoint", file=sys.stderr, flush=True)
        request.signum = signum

    previous = {}
    try:
        for sig in signals:
            previous[sig] = signal.signal(sig, on_signal)
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def was_preempted(run_dir: Path) -> bool:
    """``run_dir/summary.json`` records a run stopped by a signal (so the same command resumes it)."""
    try:
        return json.loads((Path(run_dir) / "summary.json").read_text()).get("status") == PREEMPTED
    except (OSError, ValueError, AttributeError):
        return False


def submitit_requeue_handler() -> tuple[int, Callable[[int, Any], None]] | None:
    """``(signal, handler)`` of submitit's checkpoint-and-requeue handler when this process is a
    submitit job (installed by submitit before the task runs); else None."""
    sig = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
    handler = signal.getsignal(sig) if sig is not None else None
    owner = getattr(handler, "__self__", None)
    if callable(handler) and type(owner).__module__.startswith("submitit"):
        return sig, handler
    return None


def exit_preempted(exc: Preempted) -> NoReturn:
    """End the process after :class:`Preempted`: under submitit, its handler requeues the job with
    the same arguments and exits; otherwise exit with :data:`EXIT_PREEMPTED`."""
    log.warning("%s", exc)
    print(f"unlearn: {exc} (exit code {EXIT_PREEMPTED})", file=sys.stderr, flush=True)
    found = submitit_requeue_handler()
    if found is not None:
        sig, handler = found
        handler(sig, None)  # checkpoint (the same submission) and requeue; exits the process
    sys.exit(EXIT_PREEMPTED)


__all__ = ["EXIT_PREEMPTED", "PREEMPTED", "Preempted", "STOP_SIGNALS", "StopRequest", "exit_preempted",
           "submitit_requeue_handler", "was_preempted", "watch_signals"]
