"""CUDA check of the update geometry (docs/geometry.md) on the suite's two model shapes.

Needs only torch, transformers and peft (what a bare GPU image has): random-init models and
random token batches, so no hub, data set or GGUF file is involved.

* ``smollm2``: SmolLM2-135M-Instruct's architecture (random init: the embedded GGUF does not
  travel), fp32, full fine-tuning, batch 4 + 4 × 128 tokens: the default run's shape.
* ``llama3_8b``: Llama-3-8B's architecture (random init, bf16), LoRA r=16 on q,k,v,o as in
  ``experiment=paper_llama3``, reference = the adapter disabled, batch 8 + 8 × 256 tokens.

For each: the KL gradient at step 0 must be exactly 0; then ``--steps`` steps per optimizer ×
aggregator (sgd, adamw, metric_adam with preconditioned aggregation × dual, mgda) report the
share of steps with any descent_update < 0 and the median cos(d, u); and interleaved timing
rounds give the dual / one-backward weighted-sum step ratio. Prints JSON lines; ``--out``
writes them to a file.

    python experiments/gpu_check.py --shapes smollm2 llama3_8b --steps 6 --out gpu_check.json
    python experiments/gpu_check.py --shapes tiny --steps 3 --device cpu      # a local dry run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SHAPES = {
    "tiny": dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                 dtype="float32", lora=False, batch=2, length=32),
    "smollm2": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
                    dtype="float32", lora=False, batch=4, length=128),
    "llama3_8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                      tie_word_embeddings=False, rope_theta=500000.0, dtype="bfloat16", lora=True,
                      batch=8, length=256),
}
LRS = {  # per (optimizer, shape kind): full fine-tuning vs LoRA
    "sgd": {False: 1e-2, True: 1.0}, "adamw": {False: 5e-5, True: 1e-4},
    "metric_adam": {False: 5e-5, True: 1e-4},
}


class RandomBatches:
    """Stands in for a BatchStream: fresh random (prompt, answer) token batches."""

    def __init__(self, vocab: int, batch: int, length: int, seed: int, device) -> None:
        self.vocab, self.batch, self.length, self.device = vocab, batch, length, device
        self.gen = torch.Generator().manual_seed(seed)
        self.examples, self.batch_size, self.seed, self.num_shards = [None] * 1000, batch, seed, 1

    def next_batch(self) -> dict[str, torch.Tensor]:
        ids = torch.randint(0, self.vocab, (self.batch, self.length), generator=self.gen)
        labels = ids.clone()
        labels[:, : self.length // 2] = -100  # the first half is the prompt
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


class Quiet:
    def log(self, record) -> None:
        pass


def build(shape: str, device: str, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = dict(SHAPES[shape])
    dtype, lora, batch, length = (getattr(torch, spec.pop("dtype")), spec.pop("lora"), spec.pop("batch"),
                                  spec.pop("length"))
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built directly in bf16 on the device: no fp32 copy of 8 B weights
    try:
        with torch.device(device):
            model = LlamaForCausalLM(LlamaConfig(max_position_embeddings=4096, **spec))
    finally:
        torch.set_default_dtype(default)
    from unlearn.training.reference import adapter_disabled_reference, frozen_copy_reference

    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
        reference = adapter_disabled_reference(model)
    else:
        reference = frozen_copy_reference(model)
    return model, reference, lora, batch, length, spec["vocab_size"]


def trainer_for(model, reference, aggregator, optimizer_name, lr, vocab, batch, length, steps, device):
    from unlearn.losses import UCE
    from unlearn.training.objectives import Objectives
    from unlearn.training.optimizers import MetricAdam
    from unlearn.training.trainer import UnlearningTrainer

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = {"sgd": lambda: torch.optim.SGD(params, lr=lr),
                 "adamw": lambda: torch.optim.AdamW(params, lr=lr, weight_decay=0.0),
                 "metric_adam": lambda: MetricAdam(params, lr=lr)}[optimizer_name]()
    return UnlearningTrainer(
        model=model, params=params, objectives=Objectives.mollm(model, params, UCE(), reference),
        aggregator=aggregator, optimizer=optimizer,
        streams={"forget": RandomBatches(vocab, batch, length, 1, device),
                 "normal": RandomBatches(vocab, batch, length, 2, device)}, tracker=Quiet(),
        max_steps=steps, progress_bar=False,
        aggregation_metric="preconditioned" if optimizer_name == "metric_adam" else "euclidean",
    )


def check_shape(shape: str, device: str, steps: int, rounds: int) -> list[dict]:
    from unlearn.aggregators import MGDA, DualSpace, WeightedSum
    from unlearn.training.objectives import OBJECTIVES

    out = []
    t0 = time.perf_counter()
    model, reference, lora, batch, length, vocab = build(shape, device)
    params = [p for p in model.parameters() if p.requires_grad]
    out.append({"shape": shape, "device": torch.cuda.get_device_name() if device == "cuda" else device,
                "trainable_params": sum(p.numel() for p in params), "lora": lora,
                "dtype": str(next(model.parameters()).dtype), "build_s": time.perf_counter() - t0})
    initial = [p.detach().clone() for p in params]

    # 1. the KL gradient at the reference is exactly zero
    probe = trainer_for(model, reference, DualSpace(), "adamw", 1e-5, vocab, batch, length, 1, device)
    values = probe.objectives.losses_and_grads(probe._batches())
    g_kl = values.grads[OBJECTIVES.index("kl")]
    out.append({"shape": shape, "check": "kl_gradient_at_step_0", "loss_kl": values.losses["kl"],
                "nonzero_entries": int(sum(int(torch.count_nonzero(g)) for g in g_kl))})
    del values, g_kl, probe

    # 2. descent of the real update, per optimizer × aggregator
    for optimizer_name in ("sgd", "adamw", "metric_adam"):
        for agg_name, aggregator in (("dual", DualSpace()), ("mgda", MGDA())):
            with torch.no_grad():
                for p, p0 in zip(params, initial):
                    p.copy_(p0)
            lr = LRS[optimizer_name][lora]
            trainer = trainer_for(model, reference, aggregator, optimizer_name, lr, vocab, batch, length,
                                  steps, device)
            records = []
            trainer.tracker.log = records.append
            trainer.train()
            ok = [r for r in records if not r.get("skipped")]
            out.append({
                "shape": shape, "optimizer": optimizer_name, "aggregator": agg_name, "lr": lr, "steps": len(ok),
                "skipped": len(records) - len(ok),
                "share_any_descent_update_negative":
                    sum(any(r[f"descent_update/{n}"] < 0 for n in OBJECTIVES) for r in ok) / max(1, len(ok)),
                "share_any_descent_negative":
                    sum(any(r[f"descent/{n}"] < 0 for n in OBJECTIVES) for r in ok) / max(1, len(ok)),
                "steps_with_negative_descent_update": {
                    n: sum(r[f"descent_update/{n}"] < 0 for r in ok) for n in OBJECTIVES},
                # g_i·u / (‖g_i‖ ‖u‖): how far below 0 the worst step went, on the scale of cosines
                "min_cos_gradient_update": min(
                    (r[f"descent_update/{n}"] / (r[f"grad_norm/{n}"] * r["update_norm"])
                     for r in ok for n in OBJECTIVES if r[f"grad_norm/{n}"] * r["update_norm"] > 0),
                    default=None),
                "median_cos_direction_update": statistics.median(r["cos/direction_update"] for r in ok),
                "first_step_weight_kl": ok[0]["weight/kl"] if ok else None,
                "first_step_direction_norm": ok[0]["direction_norm"] if ok else None,
                "median_step_s": statistics.median(r["time/step_s"] for r in ok),
                "loss_forget_first_last": [ok[0]["loss/forget"], ok[-1]["loss/forget"]] if ok else None,
            })
            print(json.dumps(out[-1]), flush=True)
            del trainer
            if device == "cuda":
                torch.cuda.empty_cache()

    # 3. step time: one-backward weighted sum vs dual (AdamW) vs dual preconditioned (MetricAdam)
    variants = {"weighted_sum_1bw": (WeightedSum(), "adamw", False), "dual": (DualSpace(), "adamw", True),
                "dual_preconditioned": (DualSpace(), "metric_adam", True)}
    trainers = {v: trainer_for(model, reference, a, o, 1e-9, vocab, batch, length, 10**9, device)
                for v, (a, o, _) in variants.items()}
    for v, (_, _, track) in variants.items():
        trainers[v].track_gradients = track
    times = {v: [] for v in variants}
    for r in range(rounds + 1):
        names = list(variants)
        names = names[r % 3:] + names[: r % 3]
        for v in names:
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            trainers[v].train_step()
            if device == "cuda":
                torch.cuda.synchronize()
            if r:
                times[v].append(time.perf_counter() - t)
    median = {v: statistics.median(ts) for v, ts in times.items()}
    out.append({"shape": shape, "timing_rounds": rounds, "median_step_s": median,
                "ratio_to_weighted_sum_1bw": {v: median[v] / median["weighted_sum_1bw"] for v in median},
                "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None})
    print(json.dumps(out[-1]), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["smollm2", "llama3_8b"], choices=list(SHAPES))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    results = []
    for shape in args.shapes:
        results += check_shape(shape, args.device, args.steps, args.rounds)
        if args.device == "cuda":
            torch.cuda.empty_cache()
    if args.out:
        Path(args.out).write_text("\n".join(json.dumps(r) for r in results) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
