"""Shared cache entries are built once across processes: two real processes started together on
an empty cache run the builder once (counted in a marker file), and both read the complete entry.
A builder that fails leaves no entry and no temporary file behind."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from unlearn.cache import build_once, lock_path

# Each child does its imports, says it is ready, waits for the file ``go`` (so both start building
# at the same moment), then calls the code below; ``marker`` gets one line per build.
PRELUDE = """
import json, os, sys, time
from pathlib import Path
root = Path(sys.argv[1])
import unlearn.evaluation.judges.embedded  # the slow imports, before the start line
(root / f"ready-{os.getpid()}").write_text("")
while not (root / "go").exists():
    time.sleep(0.005)
"""

CHEAP = PRELUDE + """
from unlearn.cache import build_once

def build(tmp):
    with open(root / "marker", "a") as handle:
        handle.write("built\\n")
    time.sleep(1.0)  # a slow builder: the other process arrives while it works
    tmp.write_text(json.dumps({"value": 42}))

def read(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None

print(json.dumps(build_once(root / "cache" / "entry.json", build, read)))
"""

# The real call site: the embedded judge (the TF-IDF design on 40 rows, a fraction of a second to
# fit; the default design encodes thousands of rows with MiniLM first, minutes on 2 cores).
JUDGE = PRELUDE + """
from unlearn.data.types import Example
from unlearn.evaluation.judges import embedded as embedded_judge

real_fit = embedded_judge.fit_linear_model

def counting_fit(*args, **kwargs):
    with open(root / "marker", "a") as handle:
        handle.write("fit\\n")
    time.sleep(1.0)
    return real_fit(*args, **kwargs)

embedded_judge.fit_linear_model = counting_fit
train = [Example(f"question {i}?", ("Sure, here is how to hurt " if i % 2 else "I cannot help with ") + f"thing {i}.",
                 bool(i % 2)) for i in range(40)]
valid = [Example(f"other {i}?", ("Sure, hurt " if i % 2 else "No, I won't do ") + f"item {i}.", bool(i % 2))
         for i in range(10)]
judge = embedded_judge.build_embedded_judge(train, cache_dir=str(root / "cache"), features="tfidf", folds=2,
                                            progress_bar=False, validation_examples=valid)
print(json.dumps({"coef": judge.model.coef.tolist(), "bias": judge.model.bias,
                  "validation": judge.validation.to_dict(), "path": judge.model.meta["path"]}))
"""


def race(code: str, root: Path, n: int = 2) -> list[dict]:
    """Start ``n`` processes running ``code``, release them together, return their outputs."""
    root.mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(root)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(n)]
    deadline = time.monotonic() + 120
    while len(list(root.glob("ready-*"))) < n:  # every child has done its imports …
        assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    (root / "go").write_text("")  # … and all start building at the same moment
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


def test_two_processes_build_a_cache_entry_once(tmp_path: Path) -> None:
    outs = race(CHEAP, tmp_path)
    assert (tmp_path / "marker").read_text().splitlines() == ["built"]
    assert outs == [{"value": 42}, {"value": 42}]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".entry.json.lock", "entry.json"]


def test_two_processes_train_the_embedded_judge_once(tmp_path: Path) -> None:
    """The real call site (build_embedded_judge, with its validation counts)."""
    outs = race(JUDGE, tmp_path)
    assert (tmp_path / "marker").read_text().splitlines() == ["fit"]
    assert outs[0] == outs[1]
    judges = tmp_path / "cache" / "judges"
    assert not [p.name for p in judges.iterdir() if ".tmp" in p.name]  # no temporary file left
    assert Path(outs[0]["path"]).is_file()


def test_a_failed_build_leaves_nothing_and_is_retried(tmp_path: Path) -> None:
    path = tmp_path / "entry.json"

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    def read(p: Path):
        return p.read_text() if p.is_file() else None

    with pytest.raises(OSError, match="No space left"):
        build_once(path, broken, read)
    assert not path.exists() and [p.name for p in tmp_path.iterdir()] == [lock_path(path).name]
    assert build_once(path, lambda tmp: tmp.write_text("ok"), read) == "ok"
    assert build_once(path, broken, read) == "ok"  # a ready entry is read, never rebuilt
