"""Utility on FreshQA (:mod:`unlearn.data.freshqa`), short factual questions no run trains on:

    freshqa_loss = Σ_i nll_i / Σ_i n_i   (nats per answer token of ``answer_0`` given the question)

under the model itself, as the TruthfulQA utility (:mod:`.utility`). Per question:
``freshqa.jsonl`` (``index``, ``nll``, ``n_tokens`` and ``value`` = nll_i · N / Σ_j n_j, whose
mean is the loss), so the tables give seeds × questions intervals and pair methods on them.
Not a default: the data's licence is unstated by its authors (see :mod:`unlearn.data.freshqa`).
"""

from __future__ import annotations

from unlearn.evaluation.metrics.base import EvalContext, Metric, MetricOutput, require
from unlearn.evaluation.metrics.columns import Column


class FreshQAUtility(Metric):
    name = "freshqa"
    columns = (Column("freshqa_loss", "FreshQA loss (nats/token)", "lower", 3, examples="freshqa"),)

    def __init__(self, n_questions: int | None = 150, split: str = "TEST", path: str | None = None) -> None:
        require(n_questions is None or int(n_questions) >= 1, self.name,
                f"n_questions must be ≥ 1 or null, got {n_questions}")
        require(split in ("TEST", "DEV"), self.name, f"split must be TEST or DEV, got {split!r}")
        self.n_questions, self.split, self.path = n_questions, split, path
        self._pairs: list[tuple[str, str]] | None = None

    def pairs(self) -> list[tuple[str, str]]:
        if self._pairs is None:
            from unlearn.data.freshqa import read_freshqa

            self._pairs = read_freshqa(self.path, self.split, self.n_questions)
        return self._pairs

    def compute(self, ctx: EvalContext) -> MetricOutput:
        from unlearn.evaluation.perplexity import answer_nll, model_logits_fn, utility_intervals

        pairs = self.pairs()
        model = ctx.model
        was = model.training
        model.eval()
        try:
            nll = answer_nll(model_logits_fn(model), ctx.tokenizer, pairs, ctx.device, ctx.max_length,
                             ctx.template, ctx.batch_size, ctx.progress_bar, desc="freshqa")
        finally:
            model.train(was)
        total = sum(k for _, k in nll)
        require(total > 0, self.name, "no FreshQA answer token was scored (check dataset.max_length)")
        rows = [{"index": i, "nll": n, "n_tokens": k, "value": n * len(nll) / total}
                for i, (n, k) in enumerate(nll)]
        interval = utility_intervals(nll, **ctx.bootstrap)["utility_loss"]
        return MetricOutput(intervals={"freshqa_loss": interval}, values={"freshqa_n": len(pairs)},
                            files={"freshqa": rows})

    def settings(self) -> dict[str, object]:
        """A hash of the questions and answers used (another CSV version is another result)."""
        import hashlib
        import json

        return {"freshqa_sha256": hashlib.sha256(json.dumps(self.pairs()).encode()).hexdigest()}
