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

    def state_dict(self) -> dict:
        """Without the per-step buffers (P and the uncommitted v, recomputed at the next step):
        checkpoints hold v and the step count only, like RMSprop's."""
        packed = super().state_dict()
        packed["state"] = {k: {n: t for n, t in v.items() if n in ("v", "step")}
                           for k, v in packed["state"].items()}
        return packed

    def _buffer(self, p: torch.Tensor, name: str) -> torch.Tensor:
        state = self.state[p]
        if state.get(name) is None:
            state[name] = torch.zeros_like(p, dtype=torch.promote_types(p.dtype, torch.float32))
        return state[name]

    def _propose(self, p: torch.Tensor, group: dict) -> torch.Tensor:
        """From the new squares in ``state['precond']``: the candidate v (``state['pending']``,
        not yet committed) and P = 1/(√v̂ + ε) in ``state['precond']``. In place, no allocation."""
        state = self.state[p]
        squares, v, pending = self._buffer(p, "precond"), self._buffer(p, "v"), self._buffer(p, "pending")
        torch.mul(v, group["beta2"], out=pending).add_(squares, alpha=1.0 - group["beta2"])
        bias = 1.0 - group["beta2"] ** (state.get("step", 0) + 1)
        return torch.div(pending, bias, out=squares).sqrt_().add_(group["eps"]).reciprocal_()

    @torch.no_grad()
    def preconditioners(
        self, params: Sequence[torch.Tensor], grads: Sequence[Sequence[torch.Tensor]]
    ) -> list[torch.Tensor]:
        """P_p (fp32) of the coming step for each of ``params``; ``grads[i][k]`` is objective i's
        gradient for ``params[k]``. Call once per step, before choosing the direction. Nothing is
        committed until :meth:`step`: a step the trainer skips leaves the state untouched."""
        groups = {id(p): g for g in self.param_groups for p in g["params"]}
        out = []
        for k, p in enumerate(params):
            squares, first = self._buffer(p, "precond"), grads[0][k]
            if first.dtype == squares.dtype:  # one pass; the same values as copy then square
                torch.mul(first, first, out=squares)
            else:
                squares.copy_(first).square_()
            for g in grads[1:]:
                squares.addcmul_(g[k], g[k])
            squares.div_(len(grads))
            self.state[p]["fresh"] = True
            out.append(self._propose(p, groups[id(p)]))
        return out

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state.pop("fresh", False):  # no per-objective gradients this step: v from d²
                    self._buffer(p, "precond").copy_(p.grad).square_()
                    self._propose(p, group)
                state["v"], state["pending"] = state["pending"], state["v"]  # commit
                state["step"] = state.get("step", 0) + 1
                precond = state["precond"]
                if p.dtype == precond.dtype:
                    p.addcmul_(p.grad, precond, value=-group["lr"])
                else:
                    p.add_((p.grad.float() * precond).to(p.dtype), alpha=-group["lr"])
        return loss
