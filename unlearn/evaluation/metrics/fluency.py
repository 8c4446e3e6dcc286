"""Fluency: the mean perplexity of the answers under a fixed reference LM (the original model
unless ``eval.fluency_reference`` names another), ``PPL(a) = exp(−(1/|a|) Σ_t log p_ref(a_t | p, a_<t))``
(:mod:`..perplexity`). An answer with no scored token is left out and counted
(``fluency_ppl_n_missing``), never read as 0.

Per prompt (generations.jsonl): ``fluency_ppl`` (null without a scored token).
"""

from __future__ import annotations

import math

from unlearn.evaluation.metrics.base import EvalContext, Metric, MetricOutput
from unlearn.evaluation.metrics.columns import Column


class Fluency(Metric):
    name = "fluency"
    columns = (Column("fluency_ppl", "Fluency (PPL)", "lower", 2, field="fluency_ppl", tradeoff="cost"),)

    def compute(self, ctx: EvalContext) -> MetricOutput:
        from unlearn.evaluation import perplexity
        from unlearn.models.precision import compute_precision

        ref = ctx.reference
        with ref.use() as ref_logits, compute_precision(ctx.compute_dtype, ref.device):
            nll = perplexity.answer_nll(
                ref_logits, ref.tokenizer, list(zip(ctx.prompts, ctx.answers, strict=True)), ref.device,
                max_length=ctx.max_length + ctx.max_new_tokens + 8, template=ctx.template,
                batch_size=ctx.batch_size, progress_bar=ctx.progress_bar, desc="fluency",
                with_eos=[g.finished for g in ctx.generations])
        ppl = perplexity.answer_perplexities(nll)
        return MetricOutput(
            intervals={"fluency_ppl": perplexity.fluency_interval(nll, **ctx.bootstrap)},
            per_prompt={"fluency_ppl": [None if math.isnan(v) else v for v in ppl]},
            labels={"eval/fluency_reference": ref.name},
        )
