"""How to generate J-BOND's policy rows and anchor rows (two LoRA adapters of one model): the options side by side.

J-BOND samples one completion per prompt from the policy adapter and two from the anchor adapter. Options timed here,
in rotation in one process (so load on the machine hits them alike), each one `generate` batch of P prompts × 3 rows:

- `single`: every row through the policy adapter (what RLOO pays; the floor);
- `mixed-interleaved`: PEFT's `adapter_names=` with rows in slot order (policy, anchor, anchor, policy, ...);
- `mixed-policy-first`: the same with the policy rows first (PEFT still routes by index lists);
- `slices`: policy rows first, adapters off, and each LoRA layer adds its adapters' outputs to contiguous row slices
  (`trl_bon.anchor.lora_adapters_by_row_slices`, what `JBondTrainer` uses);
- `two-passes`: one `generate` per adapter (P rows, then 2P rows).

    OMP_NUM_THREADS=1 python benchmarks/adapter_routing.py                      # random-init SmolLM2-135M shape
    OMP_NUM_THREADS=1 python benchmarks/adapter_routing.py --model tiny --rounds 20
"""

import argparse
import statistics
import time

import torch


def build_model(name: str):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    if name == "smollm2-random":
        config = LlamaConfig(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
        )
    else:
        config = LlamaConfig(
            vocab_size=320,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
        )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0, init_lora_weights=False)
    model = get_peft_model(model, lora)
    model.add_adapter("anchor", lora)
    return model.eval(), config.vocab_size


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("smollm2-random", "tiny"), default="smollm2-random")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6)
    cli = parser.parse_args()
    from trl_bon.anchor import lora_adapters_by_row_slices

    model, vocab = build_model(cli.model)
    generator = torch.Generator().manual_seed(1)
    lengths = [5 + 3 * i for i in range(cli.prompts)]
    prompts = [torch.randint(3, vocab, (n,), generator=generator) for n in lengths]
    width = max(lengths)

    def batch(order):
        ids = torch.zeros(len(order), width, dtype=torch.long)
        mask = torch.zeros(len(order), width, dtype=torch.long)
        for row, p in enumerate(order):
            ids[row, width - lengths[p] :] = prompts[p]
            mask[row, width - lengths[p] :] = 1
        return ids, mask

    interleaved = [p for p in range(cli.prompts) for _ in range(3)]
    policy_first = list(range(cli.prompts)) + [p for p in range(cli.prompts) for _ in range(2)]
    P = cli.prompts

    def generate(order, **kwargs):
        ids, mask = batch(order)
        model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            max_new_tokens=cli.tokens,
            min_new_tokens=cli.tokens,
            pad_token_id=0,
            **kwargs,
        )

    def single():
        generate(interleaved)

    def mixed_interleaved():
        generate(interleaved, adapter_names=["default" if i % 3 == 0 else "anchor" for i in range(3 * P)])

    def mixed_policy_first():
        generate(policy_first, adapter_names=["default"] * P + ["anchor"] * (2 * P))

    def slices():
        with lora_adapters_by_row_slices(model, [("default", slice(0, P)), ("anchor", slice(P, None))]):
            generate(policy_first)

    def two_passes():
        generate(policy_first[:P])
        model.set_adapter("anchor")
        try:
            generate(policy_first[P:])
        finally:
            model.set_adapter("default")
            model.base_model.model.requires_grad_(False)

    options = {
        "single": single,
        "mixed-interleaved": mixed_interleaved,
        "mixed-policy-first": mixed_policy_first,
        "slices": slices,
        "two-passes": two_passes,
    }
    times = {name: [] for name in options}
    with torch.no_grad():
        for fn in options.values():  # warm-up
            fn()
        for _ in range(cli.rounds):
            for name, fn in options.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["single"])
    print(
        f"model: {cli.model} + LoRA r=16 (all linear) x 2 adapters | {P} prompts x 3 rows x {cli.tokens} tokens | "
        f"{torch.get_num_threads()} thread(s) | {cli.rounds} rounds in rotation"
    )
    print(f"{'option':20} {'median':>9} {'min':>9} {'max':>9} {'/ single':>9}")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:20} {median * 1e3:7.1f}ms {min(values) * 1e3:7.1f}ms {max(values) * 1e3:7.1f}ms "
            f"{median / base:8.2f}x"
        )


if __name__ == "__main__":
    main()
