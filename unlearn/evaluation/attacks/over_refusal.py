"""Over-refusal hook: benign prompts that look harmful (XSTest-style), from a user-supplied file.

No PyPI package we found ships a real XSTest copy (PyRIT 1.1.0 only has a downloader for it,
garak none), so there is no default data: pass ``path=`` to a JSONL file with a ``prompt`` field
per line or a CSV with a ``prompt`` column (e.g. XSTest's ``xstest_prompts.csv``, keeping only
its safe prompts via ``label_column=label label_value=safe``). Reported::

    attack/<name>/refusal_rate = mean_p refused(answer to p)

where refused is the evaluation's short-refusal rule (:func:`unlearn.evaluation.rules.rule_verdict`
gives ``refusal``). It is not an attack; it shares the hook so that it runs beside them.
"""

from __future__ import annotations

from pathlib import Path

from unlearn.evaluation.attacks.base import Attack, AttackContext, Outcome, Timer, prompt_subset, require


def read_prompts(path: Path, label_column: str | None = None, label_value: str | None = None) -> list[str]:
    """The ``prompt`` field of every JSONL line / CSV row (rows filtered by ``label_column``)."""
    from unlearn.data.records import read_csv, read_jsonl, require_text

    rows = read_csv(path) if path.suffix.lower() == ".csv" else read_jsonl(path)
    return [require_text(row, "prompt", f"{path}:{i}") for i, row in rows
            if label_column is None or str(row.get(label_column)) == str(label_value)]


class OverRefusal(Attack):
    """``<name>``: the share of benign-looking prompts the model refuses (module docstring)."""

    def __init__(self, path: str | None = None, n_prompts: int | None = None, label_column: str | None = None,
                 label_value: str | None = None, name: str = "over_refusal") -> None:
        self.name = name
        require(bool(path), name, "no data set ships in a PyPI package; pass path=<JSONL with a prompt field, "
                                  "or CSV with a prompt column> of benign prompts that look harmful (XSTest)")
        self.path = Path(str(path)).expanduser()
        require(self.path.is_file(), name, f"{self.path} is not a file; pass path=<your XSTest-style file>")
        self.prompts = read_prompts(self.path, label_column, label_value)
        require(len(self.prompts) > 0, name, f"{self.path} holds no prompt rows")
        self.n_prompts = n_prompts

    def run(self, model, ctx: AttackContext) -> list[Outcome]:
        from unlearn.evaluation.rules import rule_verdict

        prompts = prompt_subset(self.prompts, self.n_prompts, self.name)
        with Timer() as t:
            _, records = ctx.answer_and_judge(model, prompts, desc=self.name)
        refused = [float(rule_verdict(r["answer"]) == "refusal") for r in records]
        return [Outcome(self.name, f"over-refusal on {self.path.name}", prompts, refused, records,
                        time_s=t.seconds, metric="refusal_rate")]
