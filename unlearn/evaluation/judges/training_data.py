"""The labelled rows the offline harm judge trains on, with their sample weights.

Three sources, none of them held-out data:

* ``pku``: every labelled response of the forget set's **train** split (weight 1);
* ``truthfulqa``: the normal set's **train**-split answers as *safe* rows, each question's best
  answer plus, when ``benign_correct_answers``, the other answers TruthfulQA lists as correct
  (weight ``benign_weight``; 0 leaves them out);
* ``pyrit``: the PyRIT human labels of the *training* part of
  :func:`~unlearn.data.pyrit_labels.split_by_objective` (weight ``pyrit_weight``;
  ``pyrit_fraction=0`` leaves them out). The other objectives stay untouched for the report.

Length augmentation (``truncation_augment``, word counts k): for each row of the sources named in
``truncation_sources`` (PKU by default) and each k below the answer's word count, a copy of the
row with the answer cut to its first k words (:func:`cut_words`), the same prompt and label, and
weight ``truncation_weight``, as source ``<source>_cut``. Unsafe PKU answers are long (a median of
about 60 words) and models being unlearned answer in 15–40, so without these copies the judge
learns length as a sign of harm and passes a short unsafe start as safe.

The logistic regression minimises Σ_i w_i · logloss_i + ||w||² / (2C).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from unlearn.errors import DataError

TRUTHFULQA_FILE = "truthfulqa/TruthfulQA.csv"


@dataclass
class TrainingRows:
    prompts: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    labels: list[bool] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def add(self, source: str, prompt: str, answer: str, harmful: bool, weight: float) -> None:
        self.prompts.append(prompt)
        self.answers.append(answer)
        self.labels.append(bool(harmful))
        self.weights.append(float(weight))
        self.sources.append(source)

    def counts(self) -> dict[str, int]:
        """Rows per source, in order of first appearance."""
        return {s: self.sources.count(s) for s in dict.fromkeys(self.sources)}

    def __len__(self) -> int:
        return len(self.answers)


def cut_words(text: str, k: int) -> str:
    """The first ``k`` whitespace-separated words of ``text``, joined by single spaces."""
    return " ".join(text.split()[:k])


def truncated_copies(rows: TrainingRows, lengths: Sequence[int], weight: float,
                     sources: Sequence[str] = ("pku",)) -> TrainingRows:
    """For each row of ``sources`` and each k in ``lengths`` (ascending) shorter than its answer in
    words, the row with the answer cut to its first k words (label kept, weight ``weight``,
    source ``<source>_cut``); rows in the order (row, k)."""
    lengths = sorted({int(k) for k in lengths})
    if any(k < 1 for k in lengths) or weight < 0:
        raise DataError("judge.truncation_augment must hold word counts ≥ 1 and judge.truncation_weight ≥ 0")
    out = TrainingRows()
    for s, p, a, y in zip(rows.sources, rows.prompts, rows.answers, rows.labels, strict=True):
        if s not in sources:
            continue
        n = len(a.split())
        for k in lengths:
            if k < n:
                out.add(f"{s}_cut", p, cut_words(a, k), y, weight)
    return out


def truthfulqa_correct_answers(data_dir: str | Path | None) -> dict[str, list[str]]:
    """Question → the ';'-separated "Correct Answers" of ``<data_dir>/truthfulqa/TruthfulQA.csv``."""
    from unlearn.data.records import read_csv

    if not data_dir:
        raise DataError("the judge's TruthfulQA correct answers need data_dir (or UNLEARN_DATA_DIR) holding "
                        f"{TRUTHFULQA_FILE} (make data writes it); or set judge.benign_correct_answers=false "
                        "(best answers only)")
    path = Path(data_dir).expanduser() / TRUTHFULQA_FILE
    if not path.is_file():
        raise DataError(f"{path} is missing; write it with python -m unlearn.data {data_dir} (make data), or "
                        "judge.benign_correct_answers=false (best answers only)")
    return {row["Question"]: [a.strip() for a in (row.get("Correct Answers") or "").split(";") if a.strip()]
            for _, row in read_csv(path)}


def training_rows(
    forget_train: Sequence,
    normal_train: Sequence | None = None,
    data_dir: str | Path | None = None,
    benign_weight: float = 0.0,
    benign_correct_answers: bool = True,
    pyrit_fraction: float = 0.0,
    pyrit_seed: int = 0,
    pyrit_weight: float = 1.0,
    truncation_augment: Sequence[int] = (),
    truncation_weight: float = 1.0,
    truncation_sources: Sequence[str] = ("pku",),
) -> TrainingRows:
    """PKU train rows, then TruthfulQA train answers (safe), then the PyRIT training part, then
    the cut copies of :func:`truncated_copies` (none when ``truncation_augment`` is empty)."""
    from unlearn.data.pyrit_labels import load_pyrit_labels, split_by_objective

    rows = TrainingRows()
    for e in forget_train:
        rows.add("pku", e.prompt, e.response, bool(e.harmful), 1.0)
    if benign_weight < 0 or pyrit_weight < 0:
        raise DataError("judge.benign_weight and judge.pyrit_weight must be ≥ 0")
    if benign_weight > 0:
        if not normal_train:
            raise DataError("judge.benign_weight > 0 needs the normal set's train split (TruthfulQA answers as "
                            "safe examples); pass normal_train_examples, or set judge.benign_weight=0")
        correct = truthfulqa_correct_answers(data_dir) if benign_correct_answers else {}
        for e in normal_train:
            for answer in dict.fromkeys([e.response, *correct.get(e.prompt, [])]):
                rows.add("truthfulqa", e.prompt, answer, False, benign_weight)
    if pyrit_fraction > 0:
        labels = load_pyrit_labels(data_dir, needed_for="training the judge on PyRIT labels "
                                   "(judge.pyrit_fraction=0 trains without them)")
        for x in split_by_objective(labels, pyrit_fraction, pyrit_seed).train:
            rows.add("pyrit", x.prompt, x.answer, x.harmful, pyrit_weight)
    if truncation_augment and truncation_weight > 0:
        cut = truncated_copies(rows, truncation_augment, truncation_weight, tuple(truncation_sources))
        for s, p, a, y, w in zip(cut.sources, cut.prompts, cut.answers, cut.labels, cut.weights, strict=True):
            rows.add(s, p, a, y, w)
    return rows
