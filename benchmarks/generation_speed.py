# /// script
# requires-python = ">=3.11"
# dependencies = ["trl-bon"]
# ///
"""Sampling speed of policies side by side: completions per second on the same prompts, same length, same threads.

    python benchmarks/generation_speed.py --policy tiny=~/.cache/trl-bon-convergence/policy \\
        --policy smollm2=~/.cache/trl-bon-replication/policy --prompts ~/.cache/trl-bon-convergence/prompts/test.jsonl

Each policy samples `--completions` completions of exactly `--tokens` new tokens (EOS suppressed by
`min_new_tokens`, so every model does the same work) at temperature 1, in batches of `--batch-size` left-padded
prompts, after one warm-up batch; policies alternate over `--repeats` rounds and the best round counts (the machine
may be shared). Prints completions/s, tokens/s and each policy's ratio to the last one.
"""

import argparse
import json
import os
import time
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", action="append", required=True, metavar="NAME=PATH", help="repeatable")
    parser.add_argument("--prompts", required=True, help="jsonl file with a `prompt` field per line")
    parser.add_argument("--completions", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def sample_rate(model, tokenizer, prompts: list[str], tokens: int, batch_size: int) -> float:
    """Seconds to sample one completion of `tokens` new tokens for each prompt."""
    import torch

    start = time.perf_counter()
    for i in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True, padding_side="left")
        with torch.no_grad():
            model.generate(
                **enc,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
    return time.perf_counter() - start


def main(argv=None):
    args = parse_args(argv)
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with open(Path(args.prompts).expanduser()) as f:
        prompts = [json.loads(line)["prompt"] for _, line in zip(range(args.completions), f)]
    models = {}
    for entry in args.policy:
        name, _, path = entry.partition("=")
        path = str(Path(path).expanduser())
        tokenizer = AutoTokenizer.from_pretrained(path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        sample_rate(model, tokenizer, prompts[: args.batch_size], args.tokens, args.batch_size)  # warm-up
        models[name] = (model, tokenizer, sum(p.numel() for p in model.parameters()))
    best = {name: float("inf") for name in models}
    for _ in range(args.repeats):
        for name, (model, tokenizer, _) in models.items():
            best[name] = min(best[name], sample_rate(model, tokenizer, prompts, args.tokens, args.batch_size))
    last = list(models)[-1]
    print(f"{len(prompts)} completions x {args.tokens} tokens, batch {args.batch_size}, {args.threads} threads")
    print(f"{'policy':10} {'params':>12} {'seconds':>8} {'compl/s':>8} {'tok/s':>8} {'speed-up':>9}")
    rows = {}
    for name, (_, _, params) in models.items():
        rate = len(prompts) / best[name]
        rows[name] = {"parameters": params, "seconds": best[name], "completions_per_s": rate}
        print(
            f"{name:10} {params:12,} {best[name]:8.2f} {rate:8.1f} {rate * args.tokens:8.0f} "
            f"{best[last] / best[name]:8.1f}x"
        )
    return rows


if __name__ == "__main__":
    main()
