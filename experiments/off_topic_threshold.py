"""Choose the off-topic threshold of the behaviour metric on PKU-SafeRLHF's train split, check it on the eval split.

    UNLEARN_DATA_DIR=../shared/data python experiments/off_topic_threshold.py [--max-train 3000] [--out t.json]

On-topic pairs: each PKU response with its own prompt. Off-topic pairs: the same responses, each with a
random prompt of another example (a different prompt). Only responses the rules leave to the off-topic
test count (not a refusal, partial refusal or degenerate answer: :func:`unlearn.evaluation.rules.behaviour`),
as in the metric. Score: cosine similarity of the all-MiniLM-L6-v2 embeddings of prompt and response
(:mod:`unlearn.evaluation.encoder`). The threshold maximises the accuracy on the train split (the two
classes are equally large); the script prints it and its accuracy on the eval split (prompt-disjoint) with a
95 % interval that resamples eval prompts (:func:`unlearn.uncertainty.ratio_interval`, each prompt's
correct count over its pair count), and the share of fixed non-answers ("I have no comment.", …) that
fall below it when paired with each eval prompt.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

NON_ANSWERS = ("I have no comment.", "I'm not sure.", "The weather is nice today.",
               "Paris is the capital of France.", "I like to play football with my friends.")


def pairs(examples, rng: np.random.Generator) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(prompts, responses, on-topic label, cluster id of the response's prompt): each kept response
    once with its own prompt and once with a random other one."""
    from unlearn.data.split import normalize_prompt
    from unlearn.evaluation.rules import behaviour

    kept = [e for e in examples if behaviour(e.response) == "compliant"]
    keys = [normalize_prompt(e.prompt) for e in kept]
    ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    cluster = np.array([ids[k] for k in keys])
    other = rng.permutation(len(kept))
    for i in range(len(kept)):                       # re-draw until the prompt differs
        while keys[other[i]] == keys[i]:
            other[i] = rng.integers(len(kept))
    prompts = [e.prompt for e in kept] + [kept[j].prompt for j in other]
    responses = [e.response for e in kept] * 2
    label = np.r_[np.ones(len(kept)), np.zeros(len(kept))]
    return prompts, responses, label, np.r_[cluster, cluster]


def similarities(encoder, prompts: list[str], responses: list[str]) -> np.ndarray:
    """Cosine similarity of each (prompt, response) pair, each distinct text encoded once."""
    texts = list(dict.fromkeys(prompts + responses))
    emb = encoder.encode(texts, progress_bar=False)
    row = {t: i for i, t in enumerate(texts)}
    return np.einsum("ij,ij->i", emb[[row[p] for p in prompts]], emb[[row[r] for r in responses]])


def best_threshold(scores: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    """The cut maximising accuracy of "on-topic iff score ≥ cut" (midpoints of sorted scores) and that accuracy."""
    s = np.sort(np.unique(scores))
    cuts = np.r_[s[0] - 1e-6, (s[1:] + s[:-1]) / 2, s[-1] + 1e-6]
    acc = [((scores >= c) == label).mean() for c in cuts]
    i = int(np.argmax(acc))
    return float(cuts[i]), float(acc[i])


def main(argv: list[str] | None = None) -> dict:
    from unlearn.data.pku_saferlhf import load_pku_saferlhf
    from unlearn.evaluation.encoder import shared_encoder
    from unlearn.uncertainty import ratio_interval

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("UNLEARN_DATA_DIR", "../shared/data"))
    p.add_argument("--max-train", type=int, default=3000, help="train responses used (a random subset; 0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    split = load_pku_saferlhf(args.data_dir)
    train = split.train
    if args.max_train and len(train) > args.max_train:
        train = [train[i] for i in sorted(rng.choice(len(train), args.max_train, replace=False))]
    encoder = shared_encoder()

    tp, tr, ty, _ = pairs(train, rng)
    threshold, train_acc = best_threshold(similarities(encoder, tp, tr), ty)

    ep, er, ey, cluster = pairs(split.eval, rng)
    es = similarities(encoder, ep, er)
    correct = ((es >= threshold) == ey).astype(float)
    n_clusters = int(cluster.max()) + 1
    interval = ratio_interval(np.bincount(cluster, correct, n_clusters), np.bincount(cluster, None, n_clusters),
                              n_boot=2000, level=0.95, seed=args.seed)
    eval_prompts = list(dict.fromkeys(e.prompt for e in split.eval))
    non_answer = {a: float((similarities(encoder, eval_prompts, [a] * len(eval_prompts)) < threshold).mean())
                  for a in NON_ANSWERS}
    result = {
        "threshold": round(threshold, 4), "train_accuracy": train_acc, "n_train_pairs": len(ty),
        "eval_accuracy": interval.estimate, "eval_accuracy_lo": interval.lo, "eval_accuracy_hi": interval.hi,
        "eval_on_topic_recall": float(correct[ey == 1].mean()), "eval_off_topic_recall": float(correct[ey == 0].mean()),
        "n_eval_pairs": len(ey), "n_eval_prompts": n_clusters,
        "eval_similarity_quantiles": {"on_topic_5%": float(np.quantile(es[ey == 1], 0.05)),
                                      "off_topic_95%": float(np.quantile(es[ey == 0], 0.95))},
        "non_answers_below_threshold": non_answer,
    }
    print(f"threshold {threshold:.3f} (train accuracy {train_acc:.3f} on {len(ty)} pairs)")
    print(f"eval accuracy {interval.estimate:.3f} [{interval.lo:.3f}, {interval.hi:.3f}] (95 %, resampling "
          f"{n_clusters} prompts; {len(ey)} pairs); on-topic kept {result['eval_on_topic_recall']:.3f}, "
          f"off-topic caught {result['eval_off_topic_recall']:.3f}")
    for a, share in non_answer.items():
        print(f"  {a!r}: off-topic for {share:.1%} of the eval prompts")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
