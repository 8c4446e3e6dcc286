"""Optimizers beyond torch's: one whose preconditioner is known before the step.

:class:`LaggedAdam` is Adam with β1 = 0 (no momentum) whose step divides by the second moment
of the *previous* steps:

    u_t = lr · d_t / (√v̂_{t-1} + ε),     v_t = β2 v_{t-1} + (1 - β2) d_t²,     v̂_t = v_t / (1 - β2^t)

so the diagonal preconditioner ``P_t = 1/(√v̂_{t-1} + ε)`` is fixed before the direction d_t is
chosen. That is what lets the trainer aggregate in the optimizer's metric
(``trainer.aggregation_metric=preconditioned``): with ``K_P = G P Gᵀ`` and w = A(K_P),
``g_j · u_t = lr (K_P w)_j``, which every common-descent aggregator makes ≥ 0. Adam's own step
uses v̂_t, which contains d_t², so its P depends on w and no aggregator can control g_j·u.

Step 1 has no history: :meth:`preconditioners` then primes v̂_0 with ``mean_i g_i²`` over the
objectives' gradients, which does not depend on w (used for step 1 only).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class LaggedAdam(torch.optim.Optimizer):
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
                f"LaggedAdam needs lr > 0, 0 ≤ beta2 < 1, eps > 0 and weight_decay = 0 "
                f"(decay would add a direction no aggregator chose), got lr={lr}, beta2={beta2}, "
                f"eps={eps}, weight_decay={weight_decay}"
            )
        super().__init__(params, dict(lr=lr, beta2=beta2, eps=eps, weight_decay=weight_decay))

    def _preconditioner(self, p: torch.Tensor, group: dict) -> torch.Tensor | None:
        state = self.state[p]
        step = state.get("step", 0)
        if step == 0:
            return state.get("primed")
        v_hat = state["v"] / (1.0 - group["beta2"] ** step)
        return 1.0 / (v_hat.sqrt() + group["eps"])

    @torch.no_grad()
    def preconditioners(
        self, params: Sequence[torch.Tensor], grads: Sequence[Sequence[torch.Tensor]]
    ) -> list[torch.Tensor]:
        """P_p for the next step, per parameter of ``params`` (fp32; ``grads[i][k]`` is objective
        i's gradient for ``params[k]``, used only to prime step 1)."""
        groups = {id(p): g for g in self.param_groups for p in g["params"]}
        out = []
        for k, p in enumerate(params):
            group = groups[id(p)]
            precond = self._preconditioner(p, group)
            if precond is None:  # step 1: prime v̂_0 = mean_i g_i², independent of the weights
                v0 = sum(g[k].float().square() for g in grads) / len(grads)
                precond = 1.0 / (v0.sqrt() + group["eps"])
                self.state[p]["primed"] = precond
            out.append(precond)
        return out

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad.float()
                precond = self._preconditioner(p, group)
                if precond is None:  # used without priming: Adam's first step, v̂ = d²
                    precond = 1.0 / (d.abs() + group["eps"])
                state = self.state[p]
                state.pop("primed", None)
                p.add_((d * precond).to(p.dtype), alpha=-group["lr"])
                v = state.setdefault("v", torch.zeros_like(d))
                v.mul_(group["beta2"]).addcmul_(d, d, value=1.0 - group["beta2"])
                state["step"] = state.get("step", 0) + 1
        return loss
