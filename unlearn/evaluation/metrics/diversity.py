"""Diversity of the answers (:mod:`..diversity`): distinct-1 and distinct-2 (distinct word
n-grams over all n-grams of all answers, a ratio) and the mean per-answer unique-token ratio.
Distinct-2 collapses when a model repeats itself."""

from __future__ import annotations

from unlearn.evaluation.metrics.base import EvalContext, Metric, MetricOutput
from unlearn.evaluation.metrics.columns import Column


class Diversity(Metric):
    name = "diversity"
    columns = (Column("distinct_2", "Diversity (distinct-2)", "higher", 3),
               Column("distinct_1", "Distinct-1", "higher", display=False),
               Column("unique_token_ratio", "Unique-token ratio", "higher", display=False))

    def compute(self, ctx: EvalContext) -> MetricOutput:
        from unlearn.evaluation.diversity import diversity_intervals

        return MetricOutput(intervals=diversity_intervals(ctx.answers, **ctx.bootstrap))
