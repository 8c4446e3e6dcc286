"""Answer length and truncation: ``answer_tokens_mean`` (new tokens per answer) and
``unfinished_rate`` (the share that hit ``max_new_tokens`` without an end-of-sequence)."""

from __future__ import annotations

from unlearn.evaluation.metrics.base import EvalContext, Metric, MetricOutput
from unlearn.evaluation.metrics.columns import Column


class AnswerStats(Metric):
    name = "answers"
    columns = (Column("answer_tokens_mean", "Answer tokens", display=False),
               Column("unfinished_rate", "Unfinished answers", display=False))

    def compute(self, ctx: EvalContext) -> MetricOutput:
        from unlearn.uncertainty import mean_interval

        gens = ctx.generations
        return MetricOutput(intervals={
            "answer_tokens_mean": mean_interval([float(g.n_tokens) for g in gens], **ctx.bootstrap),
            "unfinished_rate": mean_interval([float(not g.finished) for g in gens], **ctx.bootstrap)})
