"""Utility on the held-out normal answers (TruthfulQA's eval split by default):

    utility_loss = Σ_i nll_i / Σ_i n_i   (nats per answer token),   utility_ppl = exp(utility_loss)

with the trained model itself (:mod:`..perplexity`). The retain loss trains on the same
distribution, so a benign set the run never trains on belongs beside it (``freshqa``, ``lm_eval``).

File (run dir): ``utility.jsonl``, one line per example: ``index``, ``prompt``, ``nll`` (summed
over the answer's tokens), ``n_tokens``; the results module pairs methods on these.
"""

from __future__ import annotations

from unlearn.evaluation.metrics.base import EvalContext, Metric, MetricOutput
from unlearn.evaluation.metrics.columns import Column


class Utility(Metric):
    name = "utility"
    columns = (Column("utility_ppl", "Utility (PPL)", "lower", 2, tradeoff="cost"),
               Column("utility_loss", "Utility loss (nats/token)", "lower", 3, display=False))

    def compute(self, ctx: EvalContext) -> MetricOutput:
        from unlearn.evaluation.perplexity import answer_nll, model_logits_fn, utility_intervals
        from unlearn.models.precision import compute_precision

        model = ctx.model
        was = model.training
        model.eval()
        try:
            with compute_precision(ctx.compute_dtype, ctx.device):
                nll = answer_nll(model_logits_fn(model), ctx.tokenizer, ctx.normal_pairs, ctx.device, ctx.max_length,
                                 ctx.template, ctx.batch_size, ctx.progress_bar, desc="utility")
        finally:
            model.train(was)
        rows = [{"index": i, "prompt": p, "nll": n, "n_tokens": k}
                for i, ((p, _), (n, k)) in enumerate(zip(ctx.normal_pairs, nll, strict=True))]
        return MetricOutput(intervals=utility_intervals(nll, **ctx.bootstrap),
                            values={"n_utility": len(ctx.normal_pairs)}, files={"utility": rows})
