"""Toxicity and obscenity: the scorer's mean probability over the answers (:mod:`..toxicity`;
the ``scorer`` group picks Detoxify or the offline scorer, whose name is recorded).

Per prompt (generations.jsonl): ``toxicity``, ``obscene``.
"""

from __future__ import annotations

from unlearn.evaluation.metrics.base import EvalContext, Metric, MetricOutput
from unlearn.evaluation.metrics.columns import Column


class Toxicity(Metric):
    name = "toxicity"
    columns = (Column("toxicity", "Toxicity", "lower", 3, field="toxicity"),
               Column("obscene", "Obscenity", "lower", 3, field="obscene"))

    def compute(self, ctx: EvalContext) -> MetricOutput:
        from unlearn.uncertainty import mean_interval

        scorer = ctx.scorer
        _, per = scorer.summarise(ctx.answers)
        return MetricOutput(
            intervals={k: mean_interval(per[k], **ctx.bootstrap) for k in ("toxicity", "obscene")},
            per_prompt={"toxicity": per["toxicity"], "obscene": per["obscene"]},
            labels={"eval/scorer": scorer.name, "eval/labels/toxicity": scorer.labels["toxicity"],
                    "eval/labels/obscene": scorer.labels["obscene"]},
        )
