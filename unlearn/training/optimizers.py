"""Optimizers beyond torch's: one whose preconditioner is known before the direction is chosen.

:class:`MetricAdam` is Adam with β1 = 0 (no momentum) whose second moment tracks the
*objectives'* gradients instead of the combined direction d:

    v_t = β2 v_{t-1} + (1 - β2) · (1/m) Σ_i g_{i,t}²,    v̂_t = v_t / (1 - β2^t),
    P_t = 1 / (√v̂_t + ε),                             u_t = lr · P_t ⊙ d_t .

P_t does not depend on the aggregator's weights w, so the trainer can aggregate in its metric
(``trainer.aggregation_metric=preconditioned``): with ``K_P = G P Gᵀ`` and w = A(K_P),
``g_j · u_t = lr (K_P w)_j``, which every common-descent aggregator makes ≥ 0. AdamW's v_t contains
d_t², so its P depends on w and no aggregator controls g_j·u. A first design used Adam's v̂_{t-1}
of d (one step late): on the tiny test model it exploded at step 3 (coordinates where d_{t-1}
nearly cancelled got P ≈ 1/ε), which is why v follows the objectives' gradients here.

The trainer calls :meth:`preconditioners` once per step with the per-objective gradients, then
:meth:`step`. Used alone (no such call), a step falls back to v from d² (RMSprop with bias
correction).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class MetricAdam(torch.optim.Optimizer):
    def __init__(
        self,
        params,
        lr: float = 5e-5,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if not lr > 0 or not 0 <= beta2 < 1 or not eps > 0 or weight_decay != 0:
            raise ValueError(
                f"MetricAdam needs lr > 0, 0 ≤ beta2 < 1, eps > 0 and weight_decay = 0 "
                f"(decay would add a direction no aggregator chose), got lr={lr}, beta2={beta2}, "
                f"eps={eps}, weight_decay={weight_decay}"
            )
        super().__init__(params, dict(lr=lr, beta2=beta2, eps=eps, weight_decay=weight_decay))

    @staticmethod
    def _observe(state: dict, squares: torch.Tensor, group: dict) -> torch.Tensor:
        """Fold ``squares`` into v and return P = 1/(√v̂ + ε) for the coming step."""
        v = state.setdefault("v", torch.zeros_like(squares))
        state["step"] = state.get("step", 0) + 1
        v.mul_(group["beta2"]).add_(squares, alpha=1.0 - group["beta2"])
        v_hat = v / (1.0 - group["beta2"] ** state["step"])
        return 1.0 / (v_hat.sqrt_() + group["eps"])

    @torch.no_grad()
    def preconditioners(
        self, params: Sequence[torch.Tensor], grads: Sequence[Sequence[torch.Tensor]]
    ) -> list[torch.Tensor]:
        """P_p (fp32) of the coming step for each of ``params``; ``grads[i][k]`` is objective i's
        gradient for ``params[k]``. Call once per step, before choosing the direction."""
        groups = {id(p): g for g in self.param_groups for p in g["params"]}
        out = []
        for k, p in enumerate(params):
            squares = sum(g[k].float().square() for g in grads) / len(grads)
            state = self.state[p]
            state["precond"] = self._observe(state, squares, groups[id(p)])
            out.append(state["precond"])
        return out

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad.float()
                state = self.state[p]
                precond = state.pop("precond", None)
                if precond is None:  # no per-objective gradients this step: v from d²
                    precond = self._observe(state, d.square(), group)
                p.add_((d * precond).to(p.dtype), alpha=-group["lr"])
        return loss
