"""Exceptions with messages that say what went wrong and what to pass instead."""


class UnlearnError(Exception):
    """Base class of the suite's user-facing errors."""


class DataError(UnlearnError):
    """A data file or row is missing, malformed or unusable."""


class HubUnavailableError(UnlearnError):
    """A hub download was needed but the Hugging Face hub cannot be reached."""


class ModelLoadError(UnlearnError):
    """Model weights could not be found or loaded safely."""


class DiskFullError(UnlearnError, OSError):
    """A write failed because the disk (or the quota) is full; the previous complete files stay."""


ENOSPC, EDQUOT = 28, 122  # Linux errno values
DISK_FULL_ERRNOS = frozenset({ENOSPC, EDQUOT})
# C++ writers (torch.save, safetensors) report a full disk as a RuntimeError carrying strerror's text
DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded")


def disk_full(exc: BaseException, directory: object, what: str) -> DiskFullError | None:
    """A :class:`DiskFullError` naming ``what`` and the fix when ``exc`` is a full-disk OSError
    (ENOSPC or EDQUOT, also as the cause of another error); else None."""
    if isinstance(exc, DiskFullError):
        return None
    seen: BaseException | None = exc
    for _ in range(8):  # the error itself, or what caused it
        if seen is None or _is_disk_full(seen):
            break
        seen = seen.__cause__ or seen.__context__
    if seen is None or not _is_disk_full(seen):
        return None
    why = getattr(seen, "strerror", None) or seen
    err = DiskFullError(
        f"no space left on the device while writing {what} ({why}); the previous complete files are intact."
        f" Free space in {directory} then rerun with resume=true "
        "hydra.run.dir=<this run dir>")
    err.errno = getattr(seen, "errno", None) or ENOSPC
    return err


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    return any(text in str(exc) for text in DISK_FULL_TEXT)
