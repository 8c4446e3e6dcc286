"""Metrics sinks: a local ``metrics.jsonl`` (always) and Weights & Biases (optional).

W&B can never kill a run: every call into it is guarded, a failure is reported once and W&B is
switched off, while ``metrics.jsonl`` and ``summary.json`` are still written in full.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import uuid
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from unlearn.errors import disk_full

# Secret-looking key names: *secret*, *password*, *api_key*, … and ``token``/``*_token``, but not
# tokenizer settings (pad_token, eos_token…) nor counts such as max_new_tokens.
SECRET_KEY = re.compile(
    r"(secret|password|passwd|credential|api[_-]?key|private[_-]?key|"
    r"(?<![a-z])(?<!pad_)(?<!eos_)(?<!bos_)(?<!unk_)(?<!sep_)(?<!cls_)(?<!mask_)(?<!special_)token$)",
    re.I,
)
SECRET_VALUE = re.compile(r"^(hf_[A-Za-z0-9]{20,}|[0-9a-f]{40}|wandb_v1_\S+)$")
# token-shaped substrings (HF user tokens, W&B keys) and ``secret_key=value`` pairs inside strings
SECRET_SUBSTRING = re.compile(r"\b(hf_[A-Za-z0-9]{20,}|[0-9a-f]{40}|wandb_v1_[^\s,'\"\]]+)\b")
SECRET_ASSIGNMENT = re.compile(r"([\w.+~-]+)(\s*[=:]\s*)([^\s,'\"\]]+)")
REVISION_KEY = re.compile(r"(revision|commit|sha)$", re.I)
REDACTED = "***"


def redact_text(text: str) -> str:
    """Mask token-shaped substrings and the values of ``secret_key=value`` pairs in a string."""
    text = SECRET_ASSIGNMENT.sub(
        lambda m: m.group(1) + m.group(2) + REDACTED
        if SECRET_KEY.search(m.group(1).lstrip("+~").rsplit(".", 1)[-1]) else m.group(0),
        text,
    )
    return SECRET_SUBSTRING.sub(REDACTED, text)


def redact(obj: Any) -> Any:
    """Copy of a config tree with secret-looking keys and token-shaped values masked."""
    if isinstance(obj, Mapping):
        return {k: (REDACTED if SECRET_KEY.search(str(k)) and v not in (None, "")
                    else v if REVISION_KEY.search(str(k)) and isinstance(v, str)  # a 40-hex commit id
                    else redact(v))
                for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return REDACTED if SECRET_VALUE.match(obj) else redact_text(obj)
    return obj


def redact_hydra_files(run_dir: Path) -> list[Path]:
    """Rewrite ``<run_dir>/.hydra/*.yaml`` (config, overrides, hydra) and a sweep's
    ``multirun.yaml`` with secrets masked.

    Hydra saves the command-line overrides verbatim; a token passed there must not stay on disk.
    Returns the files that changed.
    """
    from omegaconf import OmegaConf

    changed = []
    sweep_file = Path(run_dir).parent / "multirun.yaml"  # a sweep's job dirs sit beside it
    for path in sorted((Path(run_dir) / ".hydra").glob("*.yaml")) + [sweep_file] * sweep_file.is_file():
        try:
            original = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
            masked = redact(original)
            if masked != original:
                tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
                OmegaConf.save(OmegaConf.create(masked), tmp)
                os.replace(tmp, path)
                changed.append(path)
        except Exception as exc:  # noqa: BLE001 - never fail a run over this; say so
            warnings.warn(f"could not redact {path} ({exc}); check it for secrets", stacklevel=2)
    return changed


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Inf; keep the fact visible
    return value


class JsonlWriter:
    """Appends one JSON object per line and flushes, so a killed run keeps every line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")

    def write(self, record: Mapping[str, Any]) -> None:
        try:
            self._handle.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")
            self._handle.flush()
        except OSError as exc:  # a resume cuts metrics.jsonl back to its checkpoint
            full = disk_full(exc, self.path.parent, str(self.path))
            if full is not None:
                raise full from exc
            raise

    def close(self) -> None:
        try:
            self._handle.close()
        except OSError as exc:  # the unflushed line of a failed write (reported there already)
            if disk_full(exc, self.path.parent, str(self.path)) is None:
                raise


@contextmanager
def _redacted_argv() -> Iterator[None]:
    saved = sys.argv
    sys.argv = [redact_text(a) for a in saved]
    try:
        yield
    finally:
        sys.argv = saved


class WandbRunState:
    """``<run dir>/wandb-run.json``: the W&B run id, chosen at the first start, and the last step sent.

    A resumed run (``resume=true``) calls ``wandb.init(id=<that id>, resume="allow")``, online or
    offline, so W&B continues the same run; steps up to the last one sent are not sent again (the
    resumed run recomputes them from the checkpoint with the same values), so the history has no
    duplicated step. A new run gets a new id.
    """

    FILE = "wandb-run.json"

    def __init__(self, run_dir: Path, resume: bool) -> None:
        self.path = Path(run_dir) / self.FILE
        saved = {}
        if resume:
            try:
                saved = json.loads(self.path.read_text())
            except (OSError, ValueError):
                saved = {}
        self.run_id = str(saved.get("id") or uuid.uuid4().hex[:16])
        self.logged_before = int(saved.get("last_step") or 0)  # sent by the interrupted session(s)
        self.last_step = self.logged_before
        self._write()

    def logged(self, step: int) -> None:
        if step > self.last_step:
            self.last_step = step
            self._write()

    def _write(self) -> None:
        try:
            write_json_atomic(self.path, {"id": self.run_id, "last_step": self.last_step})
        except OSError as exc:  # only a resume's W&B continuity depends on it
            warnings.warn(f"could not write {self.path} ({exc}); a resumed run will start a new W&B run",
                          stacklevel=3)


class WandbSink:
    """Thin, failure-proof wrapper around ``wandb``; resumes the run's W&B run (:class:`WandbRunState`)."""

    def __init__(
        self,
        run_dir: Path,
        config: Mapping[str, Any],
        mode: str = "offline",
        project: str = "unlearn",
        entity: str | None = None,
        name: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        init_timeout: float = 30.0,
        resume: bool = False,
    ) -> None:
        self.run = None
        if mode == "disabled":
            return
        if mode not in {"offline", "online"}:
            raise ValueError(f"logger.mode must be offline, online or disabled, got {mode!r}")
        self.state = WandbRunState(Path(run_dir), resume)
        try:
            import wandb

            with _redacted_argv():  # W&B records sys.argv, where a token may have been passed
                self.run = wandb.init(
                    dir=str(run_dir), mode=mode, project=project, entity=entity, name=name,
                    group=group, tags=list(tags or []), config=dict(redact(config)), reinit="create_new",
                    id=self.state.run_id, resume="allow",
                    settings=wandb.Settings(init_timeout=init_timeout, console="off", silent=True),
                )
        except Exception as exc:  # noqa: BLE001 - any W&B failure must not stop training
            self._disable(f"wandb.init failed ({type(exc).__name__}: {exc})")

    def _disable(self, why: str) -> None:
        warnings.warn(f"W&B logging disabled: {why}. metrics.jsonl is still written.", stacklevel=3)
        self.run = None

    def log(self, record: Mapping[str, Any], step: int | None = None) -> None:
        if self.run is None:
            return
        if step is not None and step <= self.state.logged_before:
            return  # a resumed run retraces steps the interrupted session already sent (same values)
        try:
            self.run.log(dict(record), step=step)
        except Exception as exc:  # noqa: BLE001
            self._disable(f"wandb.log failed ({exc})")
            return
        if step is not None:
            self.state.logged(step)

    def summary(self, values: Mapping[str, Any]) -> None:
        if self.run is None:
            return
        try:
            self.run.summary.update(dict(values))
        except Exception as exc:  # noqa: BLE001
            self._disable(f"wandb summary failed ({exc})")

    def finish(self) -> None:
        if self.run is None:
            return
        try:
            with _redacted_argv():
                self.run.finish()
        except Exception as exc:  # noqa: BLE001
            self._disable(f"wandb.finish failed ({exc})")


class Tracker:
    """Fan-out to ``metrics.jsonl`` and W&B."""

    def __init__(self, run_dir: Path, wandb_sink: WandbSink | None = None) -> None:
        self.metrics = JsonlWriter(run_dir / "metrics.jsonl")
        self.wandb = wandb_sink

    def log(self, record: Mapping[str, Any]) -> None:
        self.metrics.write(record)
        if self.wandb:
            self.wandb.log(record, step=record.get("step"))

    def close(self, summary: Mapping[str, Any] | None = None) -> None:
        self.metrics.close()
        if self.wandb:
            if summary:
                self.wandb.summary(summary)
            self.wandb.finish()


class NullTracker(Tracker):
    """Writes nothing: the tracker of a data-parallel rank other than 0."""

    def __init__(self) -> None:
        self.metrics = None
        self.wandb = None

    def log(self, record: Mapping[str, Any]) -> None:
        pass

    def close(self, summary: Mapping[str, Any] | None = None) -> None:
        pass


def write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    """Write JSON to a temp file in the same folder, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps({k: _jsonable(v) for k, v in payload.items()}, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as exc:  # the previous complete file stays; no half-written temp file is left
        tmp.unlink(missing_ok=True)
        full = disk_full(exc, path.parent, str(path))
        if full is not None:
            raise full from exc
        raise
