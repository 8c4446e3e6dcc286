"""Documents of the ``mmlu_dev_offline`` task: MMLU's dev split, as the installed lm-eval ships it.

lm-eval's ``mmlu_flan_cot_fewshot_<subject>.yaml`` task files carry MMLU's dev questions
(Hendrycks et al., MIT licence) as their few-shot exemplars: the question, the lettered options
on its last line and a rationale ending "The answer is (X)". This module reads them from the
installed package (nothing is copied into this repository) and drops the rationale, so the task
works offline. Questions are kept verbatim, upstream typos included.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

LETTERS = "ABCDEFGHIJ"
_OPTION = re.compile(r"\(([A-J])\) ")
_ANSWER = re.compile(r"answer is \(([A-J])\)")


def _parse(question: str, target: str) -> tuple[str, list[str], int] | None:
    """(stem, options, gold index), or None when the exemplar is not in the expected form."""
    stem, sep, options = question.rpartition("\n(A) ")
    parts = _OPTION.split("(A) " + options)
    letters, texts = parts[1::2], [t.strip() for t in parts[2::2]]
    answers = _ANSWER.findall(target)
    if not sep or parts[0] or len(letters) < 2 or letters != list(LETTERS[: len(letters)]):
        return None
    if not all(texts) or not answers or answers[-1] not in letters:
        return None
    return stem.strip(), texts, letters.index(answers[-1])


def rows() -> list[dict[str, Any]]:
    """One row per parseable exemplar, in subject order then file order."""
    import lm_eval
    import yaml

    folder = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "flan_cot_fewshot"
    out: list[dict[str, Any]] = []
    for path in sorted(folder.glob("mmlu_*.yaml")):
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
        subject = cfg["dataset_name"]
        for sample in cfg.get("fewshot_config", {}).get("samples", []):
            parsed = _parse(sample["question"], sample["target"])
            if parsed is None:
                continue
            stem, options, gold = parsed
            out.append({"subject": subject, "subject_text": subject.replace("_", " "),
                        "question": stem, "choices": options,
                        "letters": list(LETTERS[: len(options)]), "answer": gold})
    if not out:
        raise FileNotFoundError(f"no MMLU dev exemplars under {folder}; is lm-eval installed?")
    return out


def load(**_: Any):
    """lm-eval ``custom_dataset`` hook: a DatasetDict with one ``test`` split (kwargs unused)."""
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows())})
