"""Float32 against bfloat16 autocast on the embedded model, one thread: a forward + backward at
batch 4 × 128 tokens (mean of 4 after one warm-up) and greedy decoding of 25 random prompts of 40
tokens × 32 new tokens (one run each after a warm-up). Prints both times and their ratio.

    UNLEARN_DATA_DIR=../shared/data OMP_NUM_THREADS=1 python experiments/bench_precision.py
"""

from __future__ import annotations

import contextlib
import time

import torch
from harness import DEFAULT_DATA_DIR, compose_config, load_model


def main() -> None:
    torch.set_num_threads(1)
    model = load_model(compose_config(f"data_dir={DEFAULT_DATA_DIR}")).model
    model.train()
    ids = torch.randint(0, 40000, (4, 128))

    def step() -> None:
        model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)

    def timed_step(ctx, n: int = 4) -> float:
        with ctx:
            step()
        start = time.perf_counter()
        for _ in range(n):
            with ctx:
                step()
        return (time.perf_counter() - start) / n

    full, half = timed_step(contextlib.nullcontext()), timed_step(torch.autocast("cpu", dtype=torch.bfloat16))
    print(f"fp32 {full:.2f}s  autocast-bf16 {half:.2f}s  ratio {half / full:.2f}")
    model.eval()
    prompts = torch.randint(0, 40000, (25, 40))

    def generate() -> None:
        with torch.no_grad():
            model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=32,
                           min_new_tokens=32, do_sample=False, pad_token_id=0)

    def timed_generate(ctx) -> float:
        start = time.perf_counter()
        with ctx:
            generate()
        return time.perf_counter() - start

    generate()
    full, half = timed_generate(contextlib.nullcontext()), timed_generate(torch.autocast("cpu", dtype=torch.bfloat16))
    print(f"gen fp32 {full:.2f}s  autocast-bf16 {half:.2f}s  ratio {half / full:.2f}")


if __name__ == "__main__":
    main()
