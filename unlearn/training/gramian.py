"""Gramian of per-objective gradients and their weighted combination, tensor by tensor.

With ``grads[i][p]`` the gradient of objective i w.r.t. parameter tensor p,

    K_ij = Σ_p ⟨grads[i][p], grads[j][p]⟩        (fp32 partials over short chunks, summed
                                                  in float64),
    K^P_ij = Σ_p ⟨grads[i][p], P_p grads[j][p]⟩  (the same in the metric of a diagonal
                                                  preconditioner P: rows scaled by √P),
    p.grad = Σ_i w_i grads[i][p]                 (summed in fp32 or wider, cast at the end).

No n-dimensional concatenation is ever formed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Grads = list[list[torch.Tensor]]  # [objective][parameter tensor]


CHUNK = 4096  # fp32 partial sums run over at most this many products
SEGMENT = 1 << 22  # entries of one tensor stacked at a time (a multiple of CHUNK)


class GramianWorkspace:
    """A reusable m × SEGMENT fp32 buffer that the gradients are stacked into.

    Stacking into fresh memory on every step cost more than the products themselves (page
    faults on ~m × 28M floats for SmolLM2's embedding); a buffer reused across tensors and steps
    cut the Gramian's time by ~20 % (measured on SmolLM2 shapes, 2 CPU cores). Its size is
    bounded by SEGMENT whatever the model: 64 MiB for m = 3 (the update check's fourth row, or
    the scratch row of √P under a preconditioner).
    """

    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None

    def get(self, m: int, n: int, device: torch.device) -> torch.Tensor:
        """At least ``m`` rows of ``min(n, SEGMENT)`` floats."""
        size = m * min(n, SEGMENT)
        if self.buffer is None or self.buffer.numel() < size or self.buffer.device != device:
            self.buffer = torch.empty(size, dtype=torch.float32, device=device)
        return self.buffer


def accumulate_gramian(
    grads: Grads, chunk: int = CHUNK, workspace: GramianWorkspace | None = None
) -> torch.Tensor:
    """m×m float64 Gramian of the objectives' gradients (rows may mix dtypes).

    Per tensor (in segments of at most SEGMENT entries), the m gradients are stacked in fp32
    (bf16/fp16 upcast) and cut into chunks of ``chunk`` entries; one batched GEMM gives the
    fp32 m×m block of every chunk, and the blocks are summed in float64. Short fp32 sums keep
    the error near 1e-8 relative, where a single fp32 GEMM over a 28M-entry embedding gradient
    was off by ~1e-3, and this is 4× faster than that GEMM and ~7× faster than a float64 copy
    of every gradient (measured on the SmolLM2 shapes, 2 CPU cores; tests/test_gramian.py
    checks the accuracy). :func:`accumulate_gramians` also gives K_P = G P Gᵀ.
    """
    return accumulate_gramians(grads, None, chunk, workspace)[0]


def accumulate_gramians(
    grads: Grads,
    metric: Sequence[torch.Tensor] | None,
    chunk: int = CHUNK,
    workspace: GramianWorkspace | None = None,
    subtract: Sequence[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(K, K^P)`` from one stacking pass (K^P is None without ``metric``).

    ``metric``: one tensor P_p ≥ 0 per parameter (the diagonal of a preconditioner). The stacked
    segment gives K, is scaled by √P_p in place (√P_p computed into the workspace's scratch row,
    no allocation per segment) and gives ``K^P = G P Gᵀ``: the gradients are read once.

    ``subtract``: one tensor per parameter subtracted from the last row as it is stacked (that
    row is ``grads[-1][k] − subtract[k]``): a difference such as the update θ_before − θ_after
    costs no pass of its own. The inputs are left unchanged."""
    m = len(grads)
    workspace = workspace or GramianWorkspace()
    # summed on the gradients' device and moved to the CPU once: no synchronisation per tensor
    device = grads[0][0].device if grads and grads[0] else torch.device("cpu")
    plain = torch.zeros(m, m, dtype=torch.float64, device=device)
    scaled = None if metric is None else torch.zeros(m, m, dtype=torch.float64, device=device)
    for k, per_param in enumerate(zip(*grads)):
        flat = [g.reshape(-1) for g in per_param]
        weight = None if metric is None else metric[k].reshape(-1)
        minus = None if subtract is None else subtract[k].reshape(-1)
        n = flat[0].numel()
        buffer = workspace.get(m + (weight is not None), n, flat[0].device)  # + √P's scratch row
        for start in range(0, n, SEGMENT):
            length = min(SEGMENT, n - start)
            jac = buffer[: m * length].view(m, length)
            for i, f in enumerate(flat):
                if minus is not None and i == m - 1:
                    end = start + length
                    _difference_into(jac[i], f[start:end], minus[start:end])
                else:
                    jac[i].copy_(f[start : start + length])
            plain += _chunked_products(jac, chunk)
            if weight is not None:
                part = weight[start : start + length]
                if part.dtype == torch.float32:
                    root = torch.sqrt(part, out=buffer[m * length : (m + 1) * length])
                else:
                    root = part.float().sqrt()
                jac.mul_(root)
                scaled += _chunked_products(jac, chunk)
    return plain.cpu(), None if scaled is None else scaled.cpu()


def _difference_into(row: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``row ← a − b``, rounded in a's and b's dtype before it is widened (as ``a − b`` then a
    copy would be)."""
    if a.dtype == row.dtype and b.dtype == row.dtype:
        torch.sub(a, b, out=row)
    else:
        row.copy_(a - b)


def _chunked_products(jac: torch.Tensor, chunk: int) -> torch.Tensor:
    """``jac @ jac.T`` in float64 on jac's device, from fp32 GEMMs over ``chunk``-long blocks."""
    m, n = jac.shape
    full = (n // chunk) * chunk
    out = torch.zeros(m, m, dtype=torch.float64, device=jac.device)
    if full:
        # (C, m, chunk) view of the first ``full`` columns, no copy: block k, row i at i·n + k·chunk
        blocks = jac.as_strided((full // chunk, m, chunk), (chunk, jac.stride(0), 1))
        out += torch.bmm(blocks, blocks.transpose(1, 2)).to(torch.float64).sum(0)
    if full < n:
        tail = jac[:, full:].to(torch.float64)
        out += tail @ tail.T
    return out


def combine_into_grad(
    params: Sequence[torch.Tensor],
    grads: Grads,
    weights: Sequence[float],
    consume: bool = True,
    out: Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Write ``d_p = Σ_i w_i grads[i][p]`` into ``p.grad`` and return the d_p.

    The sum runs in fp32 (float64 gradients stay float64) whatever the gradients' dtype and is
    cast to the parameter's dtype once, at the end: summed in bf16, two nearly parallel
    gradients with large opposite weights lose the direction (38 % off, g_i·d of the wrong
    sign, measured). ``consume=True`` may reuse ``grads[0]``'s buffers (they are overwritten);
    ``consume=False`` leaves every gradient intact; ``out`` (one wide buffer per parameter,
    reused across steps) then holds the sums, sparing a fresh allocation per step.
    """
    directions = []
    for k, param in enumerate(params):
        first = grads[0][k]
        wide = torch.promote_types(first.dtype, torch.float32)
        if out is not None and first.dtype == wide:
            acc = torch.mul(first, float(weights[0]), out=out[k])
        elif out is not None:  # upcast first: a bf16 product would round before the sum
            acc = out[k].copy_(first).mul_(float(weights[0]))
        elif consume and first.dtype == wide:
            acc = first.mul_(float(weights[0]))
        else:
            acc = first.to(wide, copy=True).mul_(float(weights[0]))
        for i in range(1, len(grads)):
            if weights[i] != 0.0:
                acc.add_(grads[i][k].to(wide), alpha=float(weights[i]))
        param.grad = acc.to(param.dtype)
        directions.append(param.grad)
    return directions


def add_into(acc: Grads | None, grads: Grads) -> Grads:
    """Sum of gradient lists (gradient accumulation over micro-batches)."""
    if acc is None:
        return grads
    for acc_i, g_i in zip(acc, grads):
        for a, g in zip(acc_i, g_i):
            a.add_(g)
    return acc


def cosines(gramian: torch.Tensor) -> torch.Tensor:
    """``K_ij / (‖g_i‖ ‖g_j‖)``, with 0 where a gradient is zero."""
    norms = torch.diagonal(gramian).clamp_min(0).sqrt()
    denom = torch.outer(norms, norms)
    return torch.where(denom > 0, gramian / denom.clamp_min(1e-300), torch.zeros_like(gramian))
