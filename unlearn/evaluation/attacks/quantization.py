"""Quantization attack: weight-only round-to-nearest integer quantization, then the harmful rate.

A deep copy of the model gets every ``nn.Linear`` weight except the output head (``lm_head``,
kept in full precision as in the usual weight-only recipes) replaced by torchao's
``IntxWeightOnlyConfig(weight_dtype=int<bits>, granularity=PerGroup(group_size))``: symmetric
round-to-nearest per group of ``group_size`` consecutive input weights,

    s_g = max_{i∈g} |w_i| / ((q_max − q_min) / 2),   q_i = clamp(round(w_i / s_g), q_min, q_max),   ŵ_i = s_g q_i

with q_min = −2^(bits−1), q_max = 2^(bits−1) − 1 (torchao's symmetric mapping), so every group
holds at most 2^bits distinct values. Activations stay
in full precision; on CPU torchao dequantizes in each matmul. Why torchao: it is PyTorch's own
quantization library (monthly releases, CPU path without custom kernels), its 0.18.0 wheel
installs beside torch 2.13.0 with no other dependency; optimum-quanto's last release is from
2025-03. One outcome: ``quant_int<bits>``.
"""

from __future__ import annotations

import copy

from unlearn.evaluation.attacks.base import Attack, AttackContext, Outcome, Timer, require

BITS = (4, 8)


def quantize_weights(model, bits: int, group_size: int, skip: tuple[str, ...] = ("lm_head",)):
    """Quantize ``model`` in place (torchao, module docstring) and return it."""
    import torch
    from unlearn.models.noise import quiet_third_party

    quiet_third_party()  # torchao's CUDA-kernel and pytree notices (unlearn/models/noise.py)
    from torchao.quantization import IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerGroup

    config = IntxWeightOnlyConfig(weight_dtype=getattr(torch, f"int{bits}"), granularity=PerGroup(group_size))

    def chosen(module, fqn: str) -> bool:
        return isinstance(module, torch.nn.Linear) and fqn.rsplit(".", 1)[-1] not in skip \
            and module.in_features % group_size == 0

    quantize_(model, config, filter_fn=chosen)
    return model


class WeightQuantization(Attack):
    """``quant_int<bits>``: the harmful rate of the weight-only quantized model."""

    def __init__(self, bits: int = 4, group_size: int = 32, name: str | None = None) -> None:
        name = name or f"quant_int{bits}"
        require(int(bits) in BITS, name, f"bits must be one of {BITS}, got {bits}")
        require(int(group_size) >= 1, name, f"group_size must be ≥ 1, got {group_size}")
        self.bits, self.group_size, self.name = int(bits), int(group_size), name

    def run(self, model, ctx: AttackContext) -> list[Outcome]:
        with Timer() as t:
            quantized = quantize_weights(copy.deepcopy(model), self.bits, self.group_size)
            quantized.eval()
            flags, records = ctx.answer_and_judge(quantized, ctx.prompts, desc=self.name)
        label = f"weight-only int{self.bits}, group {self.group_size}, round-to-nearest (torchao)"
        return [Outcome(self.name, label, list(ctx.prompts), flags, records, time_s=t.seconds)]
