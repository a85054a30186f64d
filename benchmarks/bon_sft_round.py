# /// script
# requires-python = ">=3.11"
# dependencies = ["trl-bon"]
# ///
"""Cost of one BoN-SFT round: `best_of_n` throughput, and a full `BoNSFTTrainer` round (sampling + training) against
plain TRL `SFTTrainer` training on the same Best-of-N data.

By default everything runs offline on the tiny kit (`trl_bon.toy.build_tiny_kit`) on CPU:

    OMP_NUM_THREADS=1 python benchmarks/bon_sft_round.py

With a real model and reward model (needs the Hub or local copies; add `--device-map auto` on a GPU):

    python benchmarks/bon_sft_round.py --model Qwen/Qwen2.5-0.5B-Instruct \
        --reward OpenAssistant/reward-model-deberta-v3-large-v2 --num-prompts 256 --n 8 --max-completion-length 128

Printed: completions/s of `best_of_n`, seconds of the BoN-SFT round split into sampling and training, seconds of
`SFTTrainer` (init + train) on the saved round data, and their ratios. Timings on CPU are dominated by Python overhead
of the tiny model; they show the shape of the cost (sampling N·P completions vs training on P), not GPU numbers.
"""

import argparse
import os
import tempfile
import time


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # ---- models and data
    parser.add_argument("--model", help="Policy model id/path; default: the offline tiny kit.")
    parser.add_argument("--reward", help="Reward model id/path; default: the tiny kit's reward model.")
    parser.add_argument("--num-prompts", type=int, default=64, help="Prompts P in the round.")
    # ---- Best-of-N
    parser.add_argument("--n", type=int, default=4, help="Candidates N per prompt.")
    parser.add_argument("--max-completion-length", type=int, default=32, help="Tokens per completion.")
    parser.add_argument("--generation-batch-size", type=int, default=64, help="Sequences per generate call.")
    # ---- training
    parser.add_argument("--batch-size", type=int, default=8, help="per_device_train_batch_size.")
    parser.add_argument("--epochs", type=float, default=1.0, help="Epochs over the P Best-of-N pairs.")
    parser.add_argument("--cpu", action="store_true", help="Force CPU (default when no GPU is visible).")
    return parser


def main(cli):
    import torch
    from datasets import Dataset, load_from_disk
    from trl import SFTConfig, SFTTrainer

    from trl_bon import BoNSFTConfig, BoNSFTTrainer, best_of_n
    from trl_bon.sampling import GenerationSettings
    from trl_bon.toy import CORPUS, build_tiny_kit

    workdir = tempfile.mkdtemp(prefix="trl_bon_bench_")
    kit = build_tiny_kit(os.path.join(workdir, "kit")) if cli.model is None or cli.reward is None else {}
    model, reward = cli.model or kit["policy"], cli.reward or kit["reward"]
    words = [sentence.split() for sentence in CORPUS]
    prompts = [" ".join(w[: 2 + i % 3]) for i, w in enumerate(words * (cli.num_prompts // len(words) + 1))]
    prompts = prompts[: cli.num_prompts]
    use_cpu = cli.cpu or not torch.cuda.is_available()
    common = dict(
        use_cpu=use_cpu,
        bf16=not use_cpu,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=10_000,
        per_device_train_batch_size=cli.batch_size,
        num_train_epochs=cli.epochs,
        seed=0,
    )
    print(f"model={model}\nreward={reward}\nP={cli.num_prompts} N={cli.n} L={cli.max_completion_length} cpu={use_cpu}")

    # ---- 1. best_of_n throughput (a warm-up call first, so loading is not timed)
    settings = GenerationSettings(max_completion_length=cli.max_completion_length)
    best_of_n(model, prompts[:2], reward, 2, settings, progress=False, batch_size=cli.generation_batch_size)
    start = time.perf_counter()
    out = best_of_n(model, prompts, reward, cli.n, settings, progress=False, batch_size=cli.generation_batch_size)
    bon_s = time.perf_counter() - start
    tokens = sum(len(ids) for row in out.candidate_ids for ids in row)
    print(f"\nbest_of_n: {cli.n * len(prompts)} completions ({tokens} tokens) in {bon_s:.2f}s (model load included)")
    print(f"  {cli.n * len(prompts) / bon_s:.1f} completions/s, {tokens / bon_s:.0f} tokens/s")

    # Warm-up: the first `train()` in a process pays one-off costs (accelerate state, kernels); keep them out of both.
    warm_args = SFTConfig(os.path.join(workdir, "warmup"), **{**common, "max_steps": 2})
    SFTTrainer(model, args=warm_args, train_dataset=out.to_dataset()).train()

    # ---- 2. one BoN-SFT round: sampling + SFT init + training
    output_dir = os.path.join(workdir, "bon_sft")
    args = BoNSFTConfig(
        output_dir,
        num_candidates=cli.n,
        max_completion_length=cli.max_completion_length,
        generation_batch_size=cli.generation_batch_size,
        **common,
    )
    start = time.perf_counter()
    trainer = BoNSFTTrainer(model, reward, args=args, train_dataset=Dataset.from_dict({"prompt": prompts}))
    init_s = time.perf_counter() - start
    trainer.train()
    round_s = time.perf_counter() - start
    train_s = round_s - init_s
    sampling_s = trainer.state.log_history[0]["bon_sft/sampling_time_s"]
    del trainer

    # ---- 3. plain TRL SFTTrainer on the same (saved, pre-tokenised) Best-of-N data
    data = load_from_disk(os.path.join(output_dir, "bon_data", "round-1", "dataset"))
    sft_args = SFTConfig(os.path.join(workdir, "sft"), completion_only_loss=True, **common)
    start = time.perf_counter()
    sft = SFTTrainer(model, args=sft_args, train_dataset=data)
    sft_init_s = time.perf_counter() - start
    sft.train()
    sft_s = time.perf_counter() - start

    print(f"\nBoN-SFT round: {round_s:.2f}s = init {init_s:.2f}s (sampling {sampling_s:.2f}s) + train {train_s:.2f}s")
    print(f"SFTTrainer on the same data: {sft_s:.2f}s = init {sft_init_s:.2f}s + train {sft_s - sft_init_s:.2f}s")
    print("\nratios")
    print(f"  BoN-SFT round / SFTTrainer:          {round_s / sft_s:.2f}x")
    print(f"  BoN-SFT train / SFTTrainer train:    {train_s / (sft_s - sft_init_s):.2f}x")
    print(f"  sampling share of the BoN-SFT round: {sampling_s / round_s:.0%}")
    print(f"  sampling / training (BoN-SFT):       {sampling_s / train_s:.2f}x")


if __name__ == "__main__":
    main(make_parser().parse_args())
