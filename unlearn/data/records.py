"""Reading and validating raw rows: every problem names the file, the row and the fix."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from unlearn.errors import DataError


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, row)``; a malformed line raises :class:`DataError`."""
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}:{lineno}: malformed JSON ({exc.msg}); fix or delete that line"
                ) from exc
            if not isinstance(row, dict):
                raise DataError(
                    f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}; "
                    "each line must be one {...} object: fix or delete that line"
                )
            yield lineno, row


def read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, row)`` of a CSV file with a header (line numbers count the header)."""
    with open(path, encoding="utf-8", newline="") as handle:
        for i, row in enumerate(csv.DictReader(handle), start=2):
            yield i, row


FIX_ROW = "fix that row or delete it"


def _missing(row: Mapping[str, Any], key: str, where: str) -> DataError:
    return DataError(
        f"{where}: missing field '{key}' (fields present: {sorted(row)}); add '{key}' to that row "
        "or delete it (if every row lacks it, the file has another schema: check the loader's "
        "expected field names)"
    )


def require_text(row: Mapping[str, Any], key: str, where: str) -> str:
    """Return ``row[key]`` as a non-empty string, else raise naming the row, the field and the fix."""
    if key not in row:
        raise _missing(row, key, where)
    value = row[key]
    if value is None:
        raise DataError(f"{where}: field '{key}' is null; give it a non-empty string, or {FIX_ROW}")
    if not isinstance(value, str):
        raise DataError(
            f"{where}: field '{key}' must be a string, got {type(value).__name__} {value!r:.60}; "
            f"quote it as text, or {FIX_ROW}"
        )
    if not value.strip():
        raise DataError(f"{where}: field '{key}' is empty; give it a non-empty string, or {FIX_ROW}")
    return value


def require_bool(row: Mapping[str, Any], key: str, where: str) -> bool:
    if key not in row:
        raise _missing(row, key, where)
    value = row[key]
    if not isinstance(value, bool):
        raise DataError(f"{where}: field '{key}' must be true or false, got {value!r:.60}; {FIX_ROW}")
    return value


def local_file(data_dir: str | Path, relative: str, what: str) -> Path:
    """Resolve a file under ``data_dir``; raise a DataError naming data_dir if it is absent."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data_dir={root} does not exist. Point data_dir (or UNLEARN_DATA_DIR) at a folder "
            f"with the data (make data DATA_DIR={root} writes one; docs/data.md), or set data_dir=null "
            f"to load {what} from the hub"
        )
    path = root / relative
    if not path.is_file():
        raise DataError(f"{what}: expected {path} under data_dir={root}; the file is missing "
                        f"(python -m unlearn.data {root} writes it; --check lists what is there)")
    return path


def rows_from(items: Iterable[Mapping[str, Any]], source: str) -> Iterator[tuple[str, Mapping]]:
    """Label hub rows with a position for error messages."""
    for i, row in enumerate(items):
        yield f"{source}[{i}]", row
