"""Shared cache entries under ``cache_dir``, built once across processes.

Parallel jobs of a sweep share ``cache_dir`` (the trained embedded judge and its validation counts,
the original model's evaluation, the embedded model's safetensors copy). An entry is built under
an inter-process file lock (``<entry>.lock`` beside it, from the ``filelock`` library: ``flock`` on
POSIX, ``LockFileEx`` on Windows, released by the OS when its holder dies, even by SIGKILL), into a
temporary name in the same folder that is renamed into place when complete. A process that finds
the lock taken waits, then reads the finished entry instead of building it again; a reader never
sees half an entry.

The lock files are kept (deleting a lock file another process is waiting on would let two builders
in); they are empty and tiny.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def lock_path(path: Path) -> Path:
    """The lock file of the cache entry ``path``: ``.<name>.lock`` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def temp_path(path: Path) -> Path:
    """A temporary name for ``path`` in the same folder (so the final rename is atomic); it keeps
    ``path``'s suffix, which writers such as ``np.savez`` insist on."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


@contextmanager
def locked(path: Path, timeout: float = -1) -> Iterator[None]:
    """Hold the inter-process lock of the cache entry ``path`` (waits; ``timeout`` s, -1: forever)."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(lock_path(path)), timeout=timeout)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for %s: another process is building it", path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def publish(tmp: Path, path: Path) -> None:
    """Rename the finished ``tmp`` (file or folder) onto ``path``, replacing an older entry."""
    tmp, path = Path(tmp), Path(path)
    if tmp.is_dir() and path.exists():
        old = path.with_name(f".{path.name}.old{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def build_once(path: Path, build: Callable[[Path], None], read: Callable[[Path], T | None],
               timeout: float = -1) -> T:
    """The cache entry ``path``, read by ``read`` (which returns None for a missing or unusable
    entry); built when missing by ``build(tmp)``, which writes the whole entry to ``tmp``.

    Across processes ``build`` runs once per entry: the others wait on the lock and then read what
    it wrote. ``tmp`` is renamed onto ``path`` only after ``build`` returns; if it raises, ``tmp``
    is removed and the error propagates (the next caller tries again).
    """
    path = Path(path)
    found = read(path)
    if found is not None:
        return found
    with locked(path, timeout):
        found = read(path)  # built by the process that held the lock before us
        if found is not None:
            return found
        tmp = temp_path(path)
        _remove(tmp)
        try:
            build(tmp)
            publish(tmp, path)
        finally:
            _remove(tmp)
    found = read(path)
    if found is None:
        raise RuntimeError(f"{path}: the cache entry just built cannot be read back")
    return found


__all__ = ["build_once", "lock_path", "locked", "publish", "temp_path"]
