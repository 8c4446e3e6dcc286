"""The local data folder (``data_dir``): its files, where each comes from, and the checks.

This module is the one place that pins the origins of the data:

* :data:`PKU_SAFERLHF` and :data:`TRUTHFULQA`: hub data sets at a fixed revision. The hub loaders
  (:func:`~unlearn.data.pku_saferlhf.load_pku_saferlhf`, :func:`~unlearn.data.truthfulqa.load_truthfulqa`)
  and ``python -m unlearn.data`` (:mod:`unlearn.data.prepare`) both read the revision from here.
* :data:`PYRIT_VERSION`: the PyPI package whose wheel ships the PyRIT human labels.
* :data:`JIGSAW`: a 100-comment sample at a fixed GitHub commit, with its sha256.

:func:`check_data_dir` reports what a folder holds (``python -m unlearn.data --check``);
:func:`check_run_data` is the pre-flight check of ``python -m unlearn.run`` and
``python -m unlearn.evaluate``: the files a config will read must exist before any model loads.
Torch-free.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unlearn.data.pku_saferlhf import LOCAL_FILE as PKU_FILE
from unlearn.data.truthfulqa import LOCAL_FILE as TRUTHFULQA_FILE
from unlearn.errors import DataError
from unlearn.data.pyrit_labels import LOCAL_FILE as PYRIT_FILE


@dataclass(frozen=True)
class HubSource:
    hub_id: str
    revision: str        # a commit hash, or a release branch/tag named on the data set's card
    split: str           # the split ``python -m unlearn.data`` writes (the hub loaders take theirs from the config)
    config: str | None = None


# The 2023 "v0" release (Alpaca-7B responses; 1 prompt, 2 responses, 2 safety labels per row).
# Pinned by its release branch name, which the data set card documents
# (load_dataset("PKU-Alignment/PKU-SafeRLHF", revision="v0")); main holds the 2024 release
# (Alpaca-7B/Alpaca2-7B/Alpaca3-8B, more fields). The local copy is built from the **test** split.
PKU_SAFERLHF = HubSource("PKU-Alignment/PKU-SafeRLHF", revision="v0", split="test")
# The commit "Delete loading script" (Parquet files, no script): the 817-question 2021 version.
TRUTHFULQA = HubSource("truthfulqa/truthful_qa", revision="979ec0aa226a82ec817a38ddd2f9bce1b0c8477b",
                       split="validation", config="generation")
PYRIT_VERSION = "1.1.0"


@dataclass(frozen=True)
class UrlSource:
    url: str
    sha256: str


JIGSAW_COMMIT = "8170c0baa2bd05b0ef048835df2a875b03dd1854"
JIGSAW = UrlSource(
    f"https://raw.githubusercontent.com/IBM/MAX-Toxic-Comment-Classifier/{JIGSAW_COMMIT}/samples/test_examples.csv",
    "8fc93924348c6567dc0628506b9712f90ec63de2bdd17f57406a3295a6ff2028",
)


def pinned_revision(hub_id: str) -> str | None:
    """The pinned revision of a hub data set of this module; None for any other id (its main branch)."""
    for src in (PKU_SAFERLHF, TRUTHFULQA):
        if hub_id == src.hub_id:
            return src.revision
    return None


# -- the files --------------------------------------------------------------------------------

# the loaders' own paths (LOCAL_FILE of each reader), so the layout cannot drift from them
PKU_DIR = PKU_FILE.split("/")[0]
TRUTHFULQA_DIR = TRUTHFULQA_FILE.split("/")[0]
PYRIT_DIR = PYRIT_FILE.split("/")[0]
JIGSAW_DIR = "jigsaw-toxic-sample"   # read only by tests/test_eval_metrics.py


@dataclass(frozen=True)
class DataFile:
    path: str                 # relative to data_dir
    folder: str               # the unit python -m unlearn.data writes (one SOURCE.md each)
    used_for: str
    required: bool            # False: only a test or a user reads it
    # (data_dir, file) → a short description; raises on bad content
    validate: Callable[[Path, Path], str] = field(repr=False, compare=False)


def _pku(root: Path, path: Path) -> str:
    from unlearn.data.pku_saferlhf import load_pku_saferlhf

    split = load_pku_saferlhf(str(root))
    examples = split.train + split.eval
    prompts = len({e.prompt for e in examples})
    return f"{len(examples) // 2} pairs, {prompts} prompts, {sum(e.harmful for e in examples)} unsafe responses"


def _count_jsonl(root: Path, path: Path) -> str:
    from unlearn.data.records import read_jsonl

    return f"{sum(1 for _ in read_jsonl(path))} rows"


def _truthfulqa(root: Path, path: Path) -> str:
    from unlearn.data.records import read_csv
    from unlearn.data.truthfulqa import load_truthfulqa

    split = load_truthfulqa(str(root))
    first = next((row for _, row in read_csv(path)), {})
    if "Correct Answers" not in first:
        raise DataError(f"{path}: no 'Correct Answers' column (the judge reads it); "
                        "rewrite it with python -m unlearn.data")
    return f"{len(split.train) + len(split.eval)} questions"


def _pyrit(root: Path, path: Path) -> str:
    from collections import Counter

    from unlearn.data.pyrit_labels import load_pyrit_labels

    counts = Counter(x.group for x in load_pyrit_labels(root))
    return "labels: " + ", ".join(f"{n} {g}" for g, n in counts.items())


JIGSAW_COLUMNS = ("comment_text", "toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")


def _jigsaw(root: Path, path: Path) -> str:
    from unlearn.data.records import read_csv

    rows = [row for _, row in read_csv(path)]
    missing = [c for c in JIGSAW_COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        raise DataError(f"{path}: expected the columns {', '.join(JIGSAW_COLUMNS)}; missing {missing or 'rows'}")
    return f"{len(rows)} comments"


FILES: tuple[DataFile, ...] = (
    DataFile(PKU_FILE, PKU_DIR,
             "the forget set (dataset.forget) and the judge's PKU training rows", True, _pku),
    DataFile(f"{PKU_DIR}/pairs.jsonl", PKU_DIR, "the same pairs as prompt/safe/unsafe (for users; no loader reads it)",
             False, _count_jsonl),
    DataFile(TRUTHFULQA_FILE, TRUTHFULQA_DIR,
             "the normal set (dataset.normal) and judge=embedded's correct answers", True, _truthfulqa),
    DataFile(PYRIT_FILE, PYRIT_DIR,
             "judge=embedded's PyRIT training labels and python -m unlearn.judge", True, _pyrit),
    DataFile(f"{JIGSAW_DIR}/test_examples.csv", JIGSAW_DIR,
             "a smoke test of the offline toxicity scorer (tests only)", False, _jigsaw),
)
FOLDERS = tuple(dict.fromkeys(f.folder for f in FILES))


def fix_for(folder: str, data_dir: str | Path) -> str:
    """What to run to get ``folder`` into ``data_dir`` (``make data DATA_DIR=…`` writes every folder)."""
    cmd = f"python -m unlearn.data {data_dir} --only {folder}"
    if folder == PKU_DIR:
        return f"{cmd} (hub: {PKU_SAFERLHF.hub_id}@{PKU_SAFERLHF.revision}, split {PKU_SAFERLHF.split})"
    if folder == TRUTHFULQA_DIR:
        return f"{cmd} (hub: {TRUTHFULQA.hub_id}@{TRUTHFULQA.revision[:12]})"
    if folder == PYRIT_DIR:
        return (f"{cmd} (no network: copies the labels of the installed pyrit=={PYRIT_VERSION}; make setup "
                f"installs it, or pip install --no-deps pyrit=={PYRIT_VERSION})")
    return f"{cmd} (github.com: IBM/MAX-Toxic-Comment-Classifier@{JIGSAW_COMMIT[:12]})"


@dataclass
class FileStatus:
    file: DataFile
    present: bool
    ok: bool
    detail: str                 # a description when ok, else what is wrong
    fix: str = ""


def check_data_dir(data_dir: str | Path) -> list[FileStatus]:
    """Each file of :data:`FILES`: present, readable by its loader (with a short description), or
    what is wrong and the fix."""
    root = Path(data_dir).expanduser()
    out = []
    for f in FILES:
        path = root / f.path
        if not path.is_file():
            out.append(FileStatus(f, False, False, "missing", fix_for(f.folder, data_dir)))
            continue
        try:
            out.append(FileStatus(f, True, True, f.validate(root, path)))
        except Exception as exc:  # noqa: BLE001 - any parse failure is reported, not raised
            out.append(FileStatus(f, True, False, f"unreadable: {exc}",
                                  f"rewrite it (add --force): {fix_for(f.folder, data_dir)}"))
    return out


def format_check(data_dir: str | Path, statuses: list[FileStatus]) -> str:
    """One line per file (ok / MISSING / BAD, what reads it) with its description or fix."""
    root = Path(data_dir).expanduser()
    lines = [f"data_dir: {root}" + ("" if root.is_dir() else " (the folder does not exist)")]
    for s in statuses:
        tag = "ok" if s.ok else ("MISSING" if not s.present else "BAD")
        need = "required" if s.file.required else "optional"
        lines.append(f"  {tag:<8} {s.file.path}  [{need}: {s.file.used_for}]")
        lines.append(f"           {s.detail}" if s.ok else
                     (f"           {s.detail}\n" if s.present else "") + f"           fix: {s.fix}")
    for folder in FOLDERS:
        if (root / folder).is_dir() and not (root / folder / "SOURCE.md").is_file():
            lines.append(f"  note     {folder}/SOURCE.md is missing (origin, licence, rows): "
                         f"python -m unlearn.data {data_dir} --only {folder} --force rewrites the folder with one")
    bad = [s for s in statuses if s.file.required and not s.ok]
    if bad:
        lines.append(f"{len(bad)} required file(s) missing or unreadable. To write every missing folder: "
                     f"make data DATA_DIR={data_dir} (or python -m unlearn.data {data_dir}); the hub data need "
                     "network, the PyRIT labels only the installed pyrit package")
    else:
        lines.append("all required files present")
    return "\n".join(lines)


# -- pre-flight check of a run's config --------------------------------------------------------

def _param_default(target: str, name: str) -> Any:
    try:
        from hydra.utils import get_method

        param = inspect.signature(get_method(target)).parameters.get(name)
    except Exception:  # noqa: BLE001 - a bad _target_ fails later with Hydra's own message
        return None
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def _setting(node: Any, name: str, default: Any = None) -> Any:
    """``node.<name>``, else the default of the ``_target_``'s parameter, else ``default``."""
    if name in node:
        return node.get(name)
    value = _param_default(str(node.get("_target_", "")), name)
    return default if value is None else value


def data_needs(cfg: Any) -> list[tuple[str | None, str, str]]:
    """``(data_dir, relative file, who reads it)`` for every local file the config will read;
    ``data_dir`` None where the reader's data_dir is null but the file is needed anyway."""
    needs: list[tuple[str | None, str, str]] = []
    dataset = cfg.get("dataset") or {}
    for name in ("forget", "normal"):
        node = dataset.get(name) if hasattr(dataset, "get") else None
        if node is None or not node.get("data_dir"):
            continue  # no data_dir: the hub loader runs
        rel = _setting(node, "local_path")
        if rel:
            needs.append((str(node.data_dir), str(rel), f"dataset.{name}"))
    ecfg, judge = cfg.get("eval"), cfg.get("judge")
    if ecfg is not None and ecfg.get("enabled", True) and judge is not None and "data_dir" in judge:
        jdir = judge.get("data_dir") or None
        if float(_setting(judge, "benign_weight", 0.0)) > 0 and bool(_setting(judge, "benign_correct_answers", True)):
            needs.append((jdir, TRUTHFULQA_FILE,
                          f"judge={judge.get('name', 'embedded')} (TruthfulQA's correct answers)"))
        if float(_setting(judge, "pyrit_fraction", 0.0)) > 0:
            needs.append((jdir, PYRIT_FILE,
                          f"judge={judge.get('name', 'embedded')} (PyRIT human labels)"))
    return needs


def check_run_data(cfg: Any) -> None:
    """Raise :class:`DataError` naming every local file the config needs and lacks, with the fix
    (``make data``, ``data_dir=…``), before any model or data set is loaded."""
    root = cfg.get("data_dir")
    if root and not Path(str(root)).expanduser().is_dir():
        raise DataError(
            f"data_dir={root} does not exist (checked before loading any model). Point data_dir (or "
            f"UNLEARN_DATA_DIR) at a folder with the data, or write it: make data DATA_DIR={root} (or python -m "
            f"unlearn.data {root}); or pass data_dir=null to load the data sets from the hub (docs/data.md)")
    unset: dict[str, list[str]] = {}
    missing: list[str] = []
    dirs: list[str] = []
    for data_dir, rel, who in data_needs(cfg):
        if data_dir is None:
            unset.setdefault(who.split(" ", 1)[0], []).append(f"{rel} ({who.split(' ', 1)[-1].strip('()')})")
        elif not (Path(data_dir).expanduser() / rel).is_file():
            missing.append(f"{who}: {Path(data_dir).expanduser() / rel} is missing")
            dirs.append(data_dir)
    problems = [f"{who} reads {' and '.join(dict.fromkeys(files))} under data_dir, and data_dir is null. Fix: "
                "make data DATA_DIR=<folder> (or python -m unlearn.data <folder>) writes them; then pass "
                "data_dir=<folder> (or set UNLEARN_DATA_DIR=<folder>). Or do without them: "
                "judge.pyrit_fraction=0 judge.benign_correct_answers=false (a judge trained on fewer rows: other "
                "numbers), or eval.enabled=false" for who, files in unset.items()]
    problems += list(dict.fromkeys(missing))
    for d in dict.fromkeys(dirs):
        problems.append(f"Fix: make data DATA_DIR={d} (or python -m unlearn.data {d}) writes the missing folders "
                        "(PKU-SafeRLHF and TruthfulQA from the hub; the PyRIT labels from the installed pyrit "
                        f"package, no network); python -m unlearn.data {d} --check lists what is there")
    if problems:
        raise DataError("data this config reads are missing (checked before loading any model):\n  "
                        + "\n  ".join(problems))


__all__ = [
    "FILES", "FOLDERS", "JIGSAW", "PKU_SAFERLHF", "PYRIT_VERSION", "TRUTHFULQA", "DataFile", "FileStatus",
    "HubSource", "UrlSource", "check_data_dir", "check_run_data", "data_needs", "fix_for", "format_check",
    "pinned_revision",
]
