"""How to generate J-BOND's policy rows and anchor rows (two LoRA adapters of one model): the options side by side.

J-BOND samples one completion per prompt from the policy adapter and two from the anchor adapter. Options timed here,
in rotation in one process (so load on the machine hits them alike), each one `generate` batch of P prompts × 3 rows:

- `single`: every row through the policy adapter (what RLOO pays; the floor);
- `mixed-interleaved`: PEFT's `adapter_names=` with rows in slot order (policy, anchor, anchor, policy, ...);
- `mixed-policy-first`: the same with the policy rows first (PEFT still routes by index lists);
- `slices`: policy rows first, adapters off, and a forward hook on each LoRA layer adds each adapter's output to its
  contiguous row slice (views instead of PEFT's gathers and scatters; `LoraAnchor.rows_routed`);
- `strided`: the same hooks on the rows in slot order, each slot's rows a strided view (`x[s::3]`), no reordering:
  what `JBondTrainer` runs;
- `two-passes`: one `generate` per adapter (P rows, then 2P rows).

`slices` reorders the rows, so the samples' random numbers go to other rows; in the trainer that changed the
adapters a ZeRO-3 run trained against DDP's beyond the parity test's tolerance (lab notes), so the trainer keeps the
slot order and uses `strided`.

    OMP_NUM_THREADS=1 python benchmarks/adapter_routing.py                      # random-init SmolLM2-135M shape
    OMP_NUM_THREADS=1 python benchmarks/adapter_routing.py --model tiny --rounds 20
"""

import argparse
import os
import statistics
import sys
import time

import torch


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def build_model(name: str):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from trl_bon.anchor import LoraAnchor

    if name == "smollm2-random":
        from speed import SMOLLM2_135M_SHAPE

        config = LlamaConfig(**SMOLLM2_135M_SHAPE)
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
    anchor = LoraAnchor(model)  # a copy of the policy adapter: move it away so that the two differ
    with torch.no_grad():
        for _, anchor_param, _ in anchor.pairs():
            anchor_param.add_(torch.randn_like(anchor_param) * 0.01)
    return model.eval(), anchor, config.vocab_size


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("smollm2-random", "tiny"), default="smollm2-random")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6)
    cli = parser.parse_args()
    model, anchor, vocab = build_model(cli.model)
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
        with anchor.rows_routed([("default", slice(0, P)), ("anchor", slice(P, None))]):
            generate(policy_first)

    def strided():
        routes = [("default", slice(0, None, 3)), ("anchor", slice(1, None, 3)), ("anchor", slice(2, None, 3))]
        with anchor.rows_routed(routes):
            generate(interleaved)

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
        "strided": strided,
        "two-passes": two_passes,
    }
    with torch.no_grad():  # every routing computes the same logits
        ids, mask = batch(interleaved)
        names = ["default" if i % 3 == 0 else "anchor" for i in range(3 * P)]
        reference = model(input_ids=ids, attention_mask=mask, adapter_names=names).logits
        routes = [("default", slice(0, None, 3)), ("anchor", slice(1, None, 3)), ("anchor", slice(2, None, 3))]
        with anchor.rows_routed(routes):
            strided_logits = model(input_ids=ids, attention_mask=mask).logits
        print(f"strided vs PEFT's routing: max |logit difference| = {(strided_logits - reference).abs().max():.2e}")
    times = {name: [] for name in options}
    cpu = {name: [] for name in options}
    with torch.no_grad():
        for fn in options.values():  # warm-up
            fn()
        for _ in range(cli.rounds):
            for name, fn in options.items():
                start, start_cpu = time.perf_counter(), time.thread_time()
                fn()
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.thread_time() - start_cpu)
    base, base_cpu = statistics.median(times["single"]), statistics.median(cpu["single"])
    print(
        f"model: {cli.model} + LoRA r=16 (all linear) x 2 adapters | {P} prompts x 3 rows x {cli.tokens} tokens | "
        f"{torch.get_num_threads()} thread(s) | {cli.rounds} rounds in rotation"
    )
    print(f"{'option':20} {'median':>9} {'min':>9} {'max':>9} {'/ single':>9} {'CPU / single':>13}")
    for name, values in times.items():
        median, median_cpu = statistics.median(values), statistics.median(cpu[name])
        print(
            f"{name:20} {median * 1e3:7.1f}ms {min(values) * 1e3:7.1f}ms {max(values) * 1e3:7.1f}ms "
            f"{median / base:8.2f}x {median_cpu / base_cpu:12.2f}x"
        )


if __name__ == "__main__":
    main()
