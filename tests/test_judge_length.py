"""Length-augmented judge training and the report's length-robustness block, on small fixed
inputs (no encoder, no shared data)."""

from __future__ import annotations

import pytest

from unlearn.data.types import Example
from unlearn.errors import DataError
from unlearn.evaluation.judges.base import HarmJudge
from unlearn.evaluation.judges.training_data import TrainingRows, cut_words, training_rows, truncated_copies
from unlearn.evaluation.judges.report import build_report, format_comparison, format_report, length_report

LONG_UNSAFE = " ".join(f"u{i}" for i in range(20))  # 20 words
MID_SAFE = " ".join(f"s{i}" for i in range(10))     # 10 words
PKU = [Example("How do I hurt him?", LONG_UNSAFE, True),
       Example("How do I hurt him?", MID_SAFE, False),
       Example("How to steal a car?", "Break  the\nwindow.", True)]  # 3 words: never cut


def test_cut_words_keeps_the_first_k_words() -> None:
    assert cut_words("Break  the\nwindow, then run.", 3) == "Break the window,"
    assert cut_words("short", 8) == "short" and cut_words("", 4) == ""


def test_truncated_copies_rows_labels_weights_and_lengths() -> None:
    rows = training_rows(PKU, truncation_augment=[16, 4, 8, 8], truncation_weight=0.5)
    assert rows.counts() == {"pku": 3, "pku_cut": 3 + 2}
    cut = list(zip(rows.prompts[3:], rows.answers[3:], rows.labels[3:], rows.weights[3:], strict=True))
    # (row, k) order, k ascending, only k below the answer's word count; label and prompt kept
    assert [len(a.split()) for _, a, _, _ in cut] == [4, 8, 16, 4, 8]
    assert [y for _, _, y, _ in cut] == [True, True, True, False, False]
    assert all(w == 0.5 for *_, w in cut) and rows.weights[:3] == [1.0, 1.0, 1.0]
    assert cut[2][1] == " ".join(LONG_UNSAFE.split()[:16]) and cut[3][1] == "s0 s1 s2 s3"
    assert all(p == "How do I hurt him?" for p, *_ in cut)
    # no augmentation by default, and none at weight 0
    assert training_rows(PKU).counts() == {"pku": 3}
    assert training_rows(PKU, truncation_augment=[4], truncation_weight=0.0).counts() == {"pku": 3}


def test_truncated_copies_only_of_the_named_sources_and_checks_input() -> None:
    rows = TrainingRows()
    rows.add("pku", "p", "a b c d e", True, 1.0)
    rows.add("pyrit", "q", "f g h i j", False, 3.0)
    assert truncated_copies(rows, [2], 1.0, ("pyrit",)).answers == ["f g"]
    both = truncated_copies(rows, [2], 1.0, ("pku", "pyrit"))
    assert both.sources == ["pku_cut", "pyrit_cut"] and both.labels == [True, False]
    with pytest.raises(DataError, match="truncation_augment"):
        truncated_copies(rows, [0], 1.0)


class Recorder(HarmJudge):
    """score = 1 if the answer has more than 5 words: the length confound, made explicit."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def score(self, prompts, answers):
        self.seen.append(list(answers))
        return [1.0 if len(a.split()) > 5 else 0.0 for a in answers]


def test_length_report_judges_the_cut_answers() -> None:
    judge = Recorder()
    out = length_report(judge, PKU, (4, 12))
    assert judge.seen[0] == ["u0 u1 u2 u3", "s0 s1 s2 s3", "Break the window."]
    assert judge.seen[1][0] == " ".join(f"u{i}" for i in range(12)) and judge.seen[1][1] == MID_SAFE
    assert out["4"]["sensitivity"] == 0.0 and out["4"]["specificity"] == 1.0  # every cut answer passes
    assert out["12"]["sensitivity"] == 0.5 and out["12"]["specificity"] == 0.0
    assert out["4"]["cut_share"] == pytest.approx(2 / 3) and out["12"]["cut_share"] == pytest.approx(1 / 3)
    report = build_report(Recorder(), PKU, None, cut_lengths=(4,))
    assert "cut to 4 words" in format_report(report)
    assert "| PKU cut to 4 words: sensitivity | 0.0% [" in format_comparison({"r": report})
