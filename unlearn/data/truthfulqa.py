"""TruthfulQA (generation) as normal data: question → best answer."""

from __future__ import annotations

from unlearn.data.records import local_file, read_csv, require_text, rows_from
from unlearn.data.split import Split, split_by_prompt
from unlearn.data.types import Example

LOCAL_FILE = "truthfulqa/TruthfulQA.csv"


def load_truthfulqa(
    data_dir: str | None = None,
    hub_id: str = "truthfulqa/truthful_qa",
    hub_config: str = "generation",
    hub_split: str = "validation",
    local_path: str = LOCAL_FILE,
    eval_fraction: float = 0.25,
    split_seed: int = 0,
    hub_revision: str | None = None,
) -> Split[Example]:
    """Question/best-answer pairs split by question. Local CSV when ``data_dir`` is set, else the
    hub at ``hub_revision`` (None: the commit pinned in :mod:`unlearn.data.layout` for this
    ``hub_id``); both hold the same 817 questions."""
    if data_dir:
        path = local_file(data_dir, local_path, "TruthfulQA")
        rows = ((f"{path}:{n}", row) for n, row in read_csv(path))
        q_key, a_key = "Question", "Best Answer"
    else:
        from unlearn.data.layout import pinned_revision
        from unlearn.hub import load_hub_dataset

        revision = hub_revision or pinned_revision(hub_id)
        source = f"{hub_id}@{revision[:12]}" if revision else hub_id
        rows = rows_from(load_hub_dataset(hub_id, hub_split, hub_config, revision=revision), source)
        q_key, a_key = "question", "best_answer"
    examples = [
        Example(require_text(r, q_key, w), require_text(r, a_key, w), harmful=False)
        for w, r in rows
    ]
    return split_by_prompt(examples, eval_fraction, split_seed)
