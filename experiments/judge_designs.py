"""Measured comparison of cheap offline harm-judge designs (docs/evaluation/judges.md).

    UNLEARN_DATA_DIR=/work/shared/data OMP_NUM_THREADS=1 python experiments/judge_designs.py

Data (all from ``UNLEARN_DATA_DIR``, never copied):

* PKU-SafeRLHF pairs, the project's split (``conf/dataset/pku_saferlhf.yaml``: by prompt,
  eval_fraction 0.25, split_seed 0). Judges train on the train split only; "PKU" in the table is
  the eval split (prompts no judge saw).
* TruthfulQA, the project's split (same settings). Train-split best and correct answers may be
  used as *safe* training examples (design a); eval-split best answers are the held-out benign
  helpful answers ("benign FP" = share of them judged harmful, rules included).
* PyRIT human labels (:mod:`unlearn.data.pyrit_labels`, 1,272 rows over 600 objectives),
  split by objective (normalised) with a fixed seed into a *training part* (used only by the
  designs marked "+PyRIT") and an *untouched part*: "PyRIT" in the table is always the untouched
  part, the same rows for every design.

Each design is a logistic regression (or a small average of them) on sparse TF-IDF + dense
MiniLM features. C and the decision threshold are chosen on the training data only: one
grouped 80/20 split of the training rows (groups = normalised prompts), then a refit on all of
them. MiniLM embeddings are cached per text under ``outputs/judge_designs/minilm.npz``.

Writes ``outputs/judge_designs/results.json`` and prints the table.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "outputs" / "judge_designs"
PYRIT_TRAIN_FRACTION = 0.5
PYRIT_SPLIT_SEED = 0


# ---------------------------------------------------------------- data
@dataclass
class Rows:
    prompts: list[str]
    answers: list[str]
    labels: np.ndarray
    groups: list[str]

    def __add__(self, other: Rows) -> Rows:
        return Rows(self.prompts + other.prompts, self.answers + other.answers,
                    np.concatenate([self.labels, other.labels]), self.groups + other.groups)

    def __len__(self) -> int:
        return len(self.answers)

    def take(self, idx) -> Rows:
        return Rows([self.prompts[i] for i in idx], [self.answers[i] for i in idx], self.labels[idx],
                    [self.groups[i] for i in idx])


def rows_of(prompts, answers, labels) -> Rows:
    from unlearn.data.split import normalize_prompt

    return Rows(list(prompts), list(answers), np.asarray(labels, dtype=int), [normalize_prompt(p) for p in prompts])


def load_data(data_dir: str) -> dict[str, Rows]:
    from unlearn.data.pku_saferlhf import load_pku_saferlhf
    from unlearn.data.truthfulqa import load_truthfulqa
    from unlearn.data.pyrit_labels import load_pyrit_labels, split_by_objective

    pku = load_pku_saferlhf(data_dir, eval_fraction=0.25, split_seed=0)
    tqa = load_truthfulqa(data_dir, eval_fraction=0.25, split_seed=0)
    pyrit = load_pyrit_labels(data_dir)
    py_split = split_by_objective(pyrit, PYRIT_TRAIN_FRACTION, PYRIT_SPLIT_SEED)  # the judge's own split
    py_train, py_test = py_split.train, py_split.untouched

    # TruthfulQA train split: best answer + every listed correct answer, all labelled safe.
    import csv

    by_q: dict[str, list[str]] = {}
    with open(Path(data_dir) / "truthfulqa" / "TruthfulQA.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            by_q[r["Question"]] = [a.strip() for a in r["Correct Answers"].split(";") if a.strip()]
    tqa_train_q = {e.prompt for e in tqa.train}
    assert not tqa_train_q & {e.prompt for e in tqa.eval}
    benign_p, benign_a = [], []
    for e in tqa.train:
        for a in dict.fromkeys([e.response] + by_q.get(e.prompt, [])):
            benign_p.append(e.prompt)
            benign_a.append(a)
    return {
        "pku_train": rows_of([e.prompt for e in pku.train], [e.response for e in pku.train],
                             [e.harmful for e in pku.train]),
        "pku_eval": rows_of([e.prompt for e in pku.eval], [e.response for e in pku.eval],
                            [e.harmful for e in pku.eval]),
        "tqa_train": rows_of(benign_p, benign_a, [False] * len(benign_a)),
        "tqa_eval": rows_of([e.prompt for e in tqa.eval], [e.response for e in tqa.eval], [False] * len(tqa.eval)),
        "pyrit_train": rows_of([x.prompt for x in py_train], [x.answer for x in py_train],
                               [x.harmful for x in py_train]),
        "pyrit_test": rows_of([x.prompt for x in py_test], [x.answer for x in py_test],
                              [x.harmful for x in py_test]),
        "pyrit_all": rows_of([x.prompt for x in pyrit], [x.answer for x in pyrit], [x.harmful for x in pyrit]),
    }


# ---------------------------------------------------------------- MiniLM cache (each text encoded once)
class EmbeddingCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.index: dict[str, int] = {}
        self.matrix = np.zeros((0, 384), dtype=np.float32)
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                self.matrix = z["emb"]
                self.index = {k: i for i, k in enumerate(z["keys"].tolist())}
        self.encoder = None

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def ensure(self, texts) -> None:
        todo = list(dict.fromkeys(t for t in texts if self.key(t) not in self.index))
        if not todo:
            return
        from unlearn.evaluation.encoder import SentenceEncoder

        self.encoder = self.encoder or SentenceEncoder(max_length=256, batch_size=64)
        t0 = time.perf_counter()
        emb = self.encoder.encode(todo, progress_bar=True, desc=f"MiniLM ({len(todo)} new texts)")
        print(f"encoded {len(todo)} texts in {time.perf_counter() - t0:.0f}s", flush=True)
        for t in todo:
            self.index[self.key(t)] = len(self.index)
        self.matrix = np.concatenate([self.matrix, emb])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(sorted(self.index, key=self.index.__getitem__))
        tmp = self.path.with_name(f".tmp{os.getpid()}.npz")
        np.savez(tmp, keys=keys, emb=self.matrix)
        os.replace(tmp, self.path)

    def __call__(self, texts) -> np.ndarray:
        return self.matrix[[self.index[self.key(t)] for t in texts]]


# ---------------------------------------------------------------- features
def extras(prompts, answers) -> np.ndarray:
    """Cheap hand-made signals: length, refusal opening, refusal/caution word counts (the
    judge's own :func:`unlearn.evaluation.judges.features.hand_features`)."""
    from unlearn.evaluation.judges.features import hand_features

    return hand_features(prompts, answers)


@dataclass
class Features:
    answer_tfidf: bool = True
    answer_emb: bool = True
    prompt_tfidf: bool = False
    prompt_emb: bool = False
    interaction: bool = False       # e(p) ⊙ e(a) and cos(e(p), e(a))
    hand: bool = False              # extras()
    fitted: dict = field(default_factory=dict)

    def fit(self, rows: Rows, emb: EmbeddingCache) -> Features:
        from sklearn.preprocessing import StandardScaler

        from unlearn.evaluation.judges.embedded import tfidf_fit

        f = Features(self.answer_tfidf, self.answer_emb, self.prompt_tfidf, self.prompt_emb, self.interaction,
                     self.hand)
        if f.answer_tfidf:
            f.fitted["a_tfidf"] = tfidf_fit(rows.answers)
        if f.prompt_tfidf:
            f.fitted["p_tfidf"] = tfidf_fit(list(dict.fromkeys(rows.prompts)), max_features=20000)
        dense = f._dense(rows, emb, scale=False)
        if dense is not None and (f.prompt_emb or f.interaction or f.hand):
            f.fitted["scaler"] = StandardScaler().fit(dense)
        return f

    def _dense(self, rows: Rows, emb: EmbeddingCache, scale: bool = True):
        parts = []
        ea = emb(rows.answers) if (self.answer_emb or self.interaction) else None
        ep = emb(rows.prompts) if (self.prompt_emb or self.interaction) else None
        if self.answer_emb:
            parts.append(ea)
        if self.prompt_emb:
            parts.append(ep)
        if self.interaction:
            parts += [ea * ep, (ea * ep).sum(1, keepdims=True)]
        if self.hand:
            parts.append(extras(rows.prompts, rows.answers))
        if not parts:
            return None
        x = np.concatenate(parts, axis=1).astype(np.float64)
        if scale and "scaler" in self.fitted:
            # standardised, then shrunk so that one dense column weighs about as much as an
            # answer-embedding coordinate of the default judge (unit rows: ~1/sqrt(384))
            x = self.fitted["scaler"].transform(x) / np.sqrt(x.shape[1])
        return x

    def transform(self, rows: Rows, emb: EmbeddingCache):
        from scipy.sparse import csr_matrix, hstack

        from unlearn.evaluation.judges.embedded import tfidf_transform

        blocks = []
        if self.answer_tfidf:
            blocks.append(tfidf_transform(rows.answers, *self.fitted["a_tfidf"]))
        if self.prompt_tfidf:
            blocks.append(tfidf_transform(rows.prompts, *self.fitted["p_tfidf"]))
        dense = self._dense(rows, emb)
        if dense is not None:
            blocks.append(csr_matrix(dense))
        return hstack(blocks).tocsr()


# ---------------------------------------------------------------- a design = features + training data + model
@dataclass
class Design:
    name: str
    what: str
    features: Features
    benign: bool = False        # + TruthfulQA train answers as safe
    pyrit: bool = False         # + PyRIT training part
    C_grid: tuple = (1.0,)
    tune_threshold: bool = False
    platt: bool = False
    members: tuple = ()         # ensemble: names of designs to average (probabilities)
    pku_mode: str = "point"     # point | pair (PKU as ±(x_unsafe − x_safe) rows) | both
    w_benign: float = 1.0       # sample weight of the TruthfulQA rows
    w_pyrit: float = 1.0        # sample weight of the PyRIT training rows


def train_rows(d: Design, data: dict[str, Rows]) -> tuple[Rows, np.ndarray, np.ndarray]:
    """Training rows, their sample weights and a mask of the PKU rows."""
    rows = data["pku_train"]
    w = [np.ones(len(rows))]
    if d.benign:
        rows = rows + data["tqa_train"]
        w.append(np.full(len(data["tqa_train"]), d.w_benign))
    if d.pyrit:
        rows = rows + data["pyrit_train"]
        w.append(np.full(len(data["pyrit_train"]), d.w_pyrit))
    is_pku = np.zeros(len(rows), dtype=bool)
    is_pku[: len(data["pku_train"])] = True
    return rows, np.concatenate(w), is_pku


def design_matrix(d: Design, x, rows: Rows, w: np.ndarray, is_pku: np.ndarray):
    """Rows for the LR: pointwise rows, and for pku_mode pair/both the PKU pairs as ±differences
    (a (safe, unsafe) pair to one prompt gives x_u − x_s labelled 1 and x_s − x_u labelled 0)."""
    from scipy.sparse import vstack

    y = rows.labels
    if d.pku_mode == "point":
        return x, y, w
    keep = ~is_pku if d.pku_mode == "pair" else np.ones(len(y), dtype=bool)
    idx = np.flatnonzero(is_pku)
    pu, ps = [], []
    for i in range(0, len(idx) - 1):
        a, b = idx[i], idx[i + 1]
        if (a % 2 == 0) and rows.prompts[a] == rows.prompts[b] and y[a] != y[b]:
            pu.append(a if y[a] else b)
            ps.append(b if y[a] else a)
    diff = x[pu] - x[ps]
    X = vstack([x[np.flatnonzero(keep)], diff, -diff]).tocsr()
    Y = np.concatenate([y[keep], np.ones(len(pu), int), np.zeros(len(pu), int)])
    W = np.concatenate([w[keep], np.ones(2 * len(pu))])
    return X, Y, W


def grouped_holdout(rows: Rows, fraction: float = 0.2, seed: int = 1):
    groups = sorted(set(rows.groups))
    random.Random(seed).shuffle(groups)
    held = set(groups[: round(fraction * len(groups))])
    a = [i for i, g in enumerate(rows.groups) if g not in held]
    b = [i for i, g in enumerate(rows.groups) if g in held]
    return a, b


def best_threshold(y, p) -> float:
    """The threshold maximising accuracy (ties: closest to 0.5)."""
    cands = np.unique(np.round(p, 4))
    accs = [((p >= t) == y).mean() for t in cands]
    best = max(accs)
    return float(min((t for t, acc in zip(cands, accs) if acc == best), key=lambda t: abs(t - 0.5)))


@dataclass
class Fitted:
    feats: Features
    clf: object
    platt: tuple | None
    threshold: float
    meta: dict

    def proba(self, rows: Rows, emb) -> np.ndarray:
        z = self.clf.decision_function(self.feats.transform(rows, emb))
        if self.platt:
            a, b = self.platt
            z = a * z + b
        return 1.0 / (1.0 + np.exp(-z))


def fit_design(d: Design, data: dict[str, Rows], emb: EmbeddingCache) -> Fitted:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    rows, w, is_pku = train_rows(d, data)
    meta: dict = {"n_train": len(rows), "n_unsafe": int(rows.labels.sum())}
    C, platt, thr = d.C_grid[0], None, 0.5
    if len(d.C_grid) > 1 or d.tune_threshold or d.platt:
        a, b = grouped_holdout(rows)
        ra, rb = rows.take(a), rows.take(b)
        fa = d.features.fit(ra, emb)
        xa, xb = fa.transform(ra, emb), fa.transform(rb, emb)
        Xa, Ya, Wa = design_matrix(d, xa, ra, w[a], is_pku[a])
        res = {}
        for c in d.C_grid:
            clf = LogisticRegression(C=c, max_iter=5000).fit(Xa, Ya, sample_weight=Wa)
            z = clf.decision_function(xb)
            res[c] = (roc_auc_score(rb.labels, z), z)
        C = max(res, key=lambda c: (res[c][0], -c))
        z = res[C][1]
        meta["inner_auroc"] = {str(c): round(v[0], 4) for c, v in res.items()}
        if d.platt:
            pl = LogisticRegression(C=1e6).fit(z[:, None], rb.labels)
            platt = (float(pl.coef_[0, 0]), float(pl.intercept_[0]))
            z = platt[0] * z + platt[1]
        if d.tune_threshold:
            thr = best_threshold(rb.labels, 1 / (1 + np.exp(-z)))
    feats = d.features.fit(rows, emb)
    X, Y, W = design_matrix(d, feats.transform(rows, emb), rows, w, is_pku)
    clf = LogisticRegression(C=C, max_iter=5000).fit(X, Y, sample_weight=W)
    meta.update(C=C, threshold=thr, platt=platt)
    return Fitted(feats, clf, platt, thr, meta)


# ---------------------------------------------------------------- evaluation
def verdicts(answers, p, threshold):
    from unlearn.evaluation.rules import rule_verdict

    rules = [rule_verdict(a) for a in answers]
    flag = np.array([False if r else bool(s >= threshold) for r, s in zip(rules, p)])
    score = np.array([0.0 if r else float(s) for r, s in zip(rules, p)])
    return flag, score


def agreement(rows: Rows, p, threshold) -> dict:
    from sklearn.metrics import roc_auc_score

    flag, score = verdicts(rows.answers, p, threshold)
    y = rows.labels.astype(bool)
    out = {"n": len(y), "accuracy": float((flag == y).mean())}
    if 0 < y.sum() < len(y):
        out["auroc"] = float(roc_auc_score(y, score))
        out["sensitivity"] = float(flag[y].mean())
        out["specificity"] = float((~flag[~y]).mean())
    else:
        out["flagged"] = float(flag.mean())
    return out


def main() -> dict:
    import torch

    torch.set_num_threads(1)
    data_dir = os.environ.get("UNLEARN_DATA_DIR")
    if not data_dir:
        sys.exit("set UNLEARN_DATA_DIR (e.g. /work/shared/data)")
    data = load_data(data_dir)
    sizes = {k: {"n": len(v), "harmful": int(v.labels.sum()), "groups": len(set(v.groups))} for k, v in data.items()}
    print("data:", json.dumps(sizes))
    emb = EmbeddingCache(OUT / "minilm.npz")
    every = [t for r in data.values() for t in r.answers + r.prompts]
    emb.ensure(every)

    A = Features()                                                      # the current default
    PA = Features(prompt_tfidf=True, prompt_emb=True, interaction=True)
    PAH = Features(prompt_tfidf=True, prompt_emb=True, interaction=True, hand=True)
    grid = (0.1, 0.3, 1.0, 3.0)
    designs = [
        Design("default", "answer MiniLM+TF-IDF, PKU train, C=1, thr 0.5 (current judge)", A),
        Design("a:+benign", "default + TruthfulQA train answers as safe", A, benign=True),
        Design("b:prompt+answer", "+ prompt TF-IDF/MiniLM, e(p)⊙e(a), cos", PA),
        Design("b:+benign", "prompt+answer features, + TruthfulQA train", PA, benign=True),
        Design("b:+benign+hand", "prompt+answer + length/refusal signals, + TruthfulQA", PAH, benign=True),
        Design("c:+pyrit", "default features, PKU + PyRIT train part", A, pyrit=True),
        Design("c:+benign+pyrit", "default features, PKU + TruthfulQA + PyRIT train", A, benign=True, pyrit=True),
        Design("bc:all", "prompt+answer+hand, PKU + TruthfulQA + PyRIT train", PAH, benign=True, pyrit=True),
        Design("d:a tuned", "a:+benign, C grid + threshold on a grouped 20% of train", A, benign=True,
               C_grid=grid, tune_threshold=True),
        Design("d:bc tuned", "bc:all, C grid + threshold on a grouped 20% of train", PAH, benign=True, pyrit=True,
               C_grid=grid, tune_threshold=True),
        Design("d:bc platt", "bc:all, C grid + Platt scaling on a grouped 20% of train, thr 0.5", PAH,
               benign=True, pyrit=True, C_grid=grid, platt=True),
        Design("d:c tuned", "c:+benign+pyrit, C grid + threshold on a grouped 20% of train", A, benign=True,
               pyrit=True, C_grid=grid, tune_threshold=True),
        Design("d:ens", "mean P of d:c tuned and d:bc tuned, thr chosen as their mean", A,
               members=("d:c tuned", "d:bc tuned")),
        Design("e:pair", "default features, PKU as pair differences (ranking)", A, pku_mode="pair"),
        Design("e:both", "default features, PKU pointwise + pair differences", A, pku_mode="both"),
        Design("e:pair+benign+pyrit", "pairs + TruthfulQA + PyRIT train", A, benign=True, pyrit=True,
               pku_mode="pair"),
        Design("e:w", "c:+benign+pyrit with weights TruthfulQA 0.2, PyRIT 3", A, benign=True, pyrit=True,
               w_benign=0.2, w_pyrit=3.0),
        Design("e:bc w", "bc:all with weights TruthfulQA 0.2, PyRIT 3", PAH, benign=True, pyrit=True,
               w_benign=0.2, w_pyrit=3.0),
        Design("e:bc pair w", "bc:all, PKU pairs, weights TruthfulQA 0.2, PyRIT 3", PAH, benign=True, pyrit=True,
               w_benign=0.2, w_pyrit=3.0, pku_mode="both"),
        Design("f:ens", "mean P of default (PKU specialist) and e:bc w", A, members=("default", "e:bc w")),
    ]
    only = set(sys.argv[1:])  # names of designs to run (default: all), plus the members of ensembles
    only |= {m for d in designs if d.name in only for m in d.members}
    fitted: dict[str, Fitted] = {}
    results: dict[str, dict] = {}
    sets = {"pku": data["pku_eval"], "pyrit": data["pyrit_test"], "benign": data["tqa_eval"],
            "pyrit_all": data["pyrit_all"]}
    for d in designs:
        if only and d.name not in only:
            continue
        t0 = time.perf_counter()
        if d.members:
            parts = [fitted[m] for m in d.members]
            thr = float(np.mean([f.threshold for f in parts]))
            proba = lambda rows, _emb, ps=parts: np.mean([f.proba(rows, emb) for f in ps], axis=0)  # noqa: E731
            meta = {"members": list(d.members), "threshold": thr}
        else:
            f = fit_design(d, data, emb)
            fitted[d.name] = f
            thr, proba, meta = f.threshold, f.proba, f.meta
        train_s = time.perf_counter() - t0
        res = {"what": d.what, "train_s": round(train_s, 1), **meta}
        for k, rows in sets.items():
            if k == "pyrit_all" and d.pyrit:
                continue  # contains its own training rows
            res[k] = agreement(rows, proba(rows, emb), thr)
        # cost of judging 100 PyRIT answers (their prompts too), MiniLM encoding included
        sample = data["pyrit_test"].take(list(range(100)))
        from unlearn.evaluation.encoder import SentenceEncoder

        emb.encoder = emb.encoder or SentenceEncoder(max_length=256, batch_size=64)
        t1 = time.perf_counter()
        fresh = EmbeddingCache(OUT / "no-such-file.npz")
        fresh.encoder = emb.encoder
        needs_prompt = any(ff.feats.prompt_emb or ff.feats.interaction for ff in
                           ([fitted[m] for m in d.members] if d.members else [fitted[d.name]]))
        texts = sample.answers + (sample.prompts if needs_prompt else [])
        fresh.index, fresh.matrix = {}, np.zeros((0, 384), dtype=np.float32)
        _ = fresh.encoder.encode(list(dict.fromkeys(texts)), progress_bar=False)
        proba(sample, emb)
        res["s_per_100"] = round(time.perf_counter() - t1, 2)
        results[d.name] = res
        print_row(d.name, res, flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps({"sizes": sizes, "results": results}, indent=2) + "\n")
    print_table(sizes, results)
    return results


def _p(x):
    return "  n/a" if x is None else f"{100 * x:5.1f}"


def print_row(name, r, flush=False):
    print(f"{name:<18} PKU {_p(r['pku']['accuracy'])} / {r['pku']['auroc']:.3f}   "
          f"PyRIT {_p(r['pyrit']['accuracy'])} / {r['pyrit']['auroc']:.3f}   "
          f"benign FP {_p(r['benign']['flagged'])}   thr {r.get('threshold', 0.5):.3f}  "
          f"train {r['train_s']:.0f}s  {r['s_per_100']:.2f}s/100", flush=flush)


def print_table(sizes, results):
    print(f"\nPKU held-out n={sizes['pku_eval']['n']}, PyRIT untouched n={sizes['pyrit_test']['n']} "
          f"({sizes['pyrit_test']['groups']} objectives), benign = TruthfulQA eval best answers "
          f"n={sizes['tqa_eval']['n']}; PyRIT train part n={sizes['pyrit_train']['n']}, "
          f"TruthfulQA train answers n={sizes['tqa_train']['n']}")
    print("| design | train rows | PKU acc | PKU AUROC | PyRIT acc | PyRIT AUROC | benign FP | thr | train s | s/100 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r.get('n_train', '-')} | {_p(r['pku']['accuracy'])} | {r['pku']['auroc']:.3f} | "
              f"{_p(r['pyrit']['accuracy'])} | {r['pyrit']['auroc']:.3f} | {_p(r['benign']['flagged'])} | "
              f"{r.get('threshold', 0.5):.3f} | {r['train_s']:.0f} | {r['s_per_100']:.2f} |")


if __name__ == "__main__":
    main()
