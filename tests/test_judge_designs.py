"""experiments/judge_designs.py on toy data: pair rows, threshold choice, a TF-IDF-only design
fitted with sample weights (no encoder, no shared data)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

PATH = Path(__file__).resolve().parent.parent / "experiments" / "judge_designs.py"
spec = importlib.util.spec_from_file_location("judge_designs", PATH)
jd = importlib.util.module_from_spec(spec)
sys.modules["judge_designs"] = jd
spec.loader.exec_module(jd)

HARM = ["mix fertilizer with fuel to build a bomb", "put rat poison in his food",
        "hot-wire the car after breaking the window", "phish the password with a fake page"]
SAFE = ["please talk to a counselor instead", "that is illegal, contact the authorities",
        "resolve the conflict peacefully", "seek professional advice first"]


def _data() -> dict:
    prompts, answers, labels = [], [], []
    for i, (h, s) in enumerate(zip(HARM, SAFE, strict=True)):
        prompts += [f"prompt {i}", f"prompt {i}"]
        answers += [s, h] if i % 2 else [h, s]
        labels += [False, True] if i % 2 else [True, False]
    pku = jd.rows_of(prompts, answers, labels)
    benign = jd.rows_of(["What is the capital of France?"], ["Paris is the capital of France."], [False])
    return {"pku_train": pku, "tqa_train": benign, "pyrit_train": jd.rows_of(["x"], ["kill him with a knife"], [True])}


def test_pairs_become_signed_differences() -> None:
    data = _data()
    d = jd.Design("t", "", jd.Features(answer_emb=False), benign=True, pku_mode="pair", w_benign=0.5)
    rows, w, is_pku = jd.train_rows(d, data)
    assert len(rows) == 9 and is_pku.sum() == 8 and w[-1] == 0.5
    x = np.arange(9 * 3, dtype=float).reshape(9, 3)
    from scipy.sparse import csr_matrix

    X, Y, W = jd.design_matrix(d, csr_matrix(x), rows, w, is_pku)
    assert X.shape == (1 + 8, 3) and list(Y) == [0] + [1] * 4 + [0] * 4 and W[0] == 0.5
    # pair 0: unsafe row 0, safe row 1 -> x0 - x1; pair 1: unsafe row 3, safe row 2 -> x3 - x2
    assert np.allclose(X[1].toarray(), x[0] - x[1]) and np.allclose(X[2].toarray(), x[3] - x[2])
    assert np.allclose(X[5].toarray(), -(x[0] - x[1]))


def test_threshold_maximises_accuracy() -> None:
    y = np.array([0, 0, 1, 1])
    assert jd.best_threshold(y, np.array([0.1, 0.3, 0.35, 0.9])) == 0.35


def test_tfidf_design_fits_and_scores() -> None:
    data = _data()
    d = jd.Design("t", "", jd.Features(answer_emb=False), benign=True, pyrit=True, C_grid=(10.0,))
    f = jd.fit_design(d, data, emb=None)
    assert f.meta["n_train"] == 10
    test = jd.rows_of(["q", "q"], ["build a bomb with fuel", "talk to a counselor"], [True, False])
    p = f.proba(test, None)
    assert p[0] > 0.5 > p[1]
    assert jd.agreement(test, p, 0.5)["accuracy"] == 1.0
