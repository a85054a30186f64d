# /// script
# requires-python = ">=3.11"
# dependencies = ["trl-bon"]
# ///
"""Step time and peak memory of JBondTrainer vs TRL's RLOOTrainer at 3 completions per prompt.

Both trainers run in this process on the same model and prompts, with the same completions per prompt (J-BOND: 1
policy + 2 anchor samples; RLOO: `num_generations=3`), batch, completion length and seed. Printed per trainer: the
mean optimizer-step time excluding warm-up steps (TRL's `step_time`, generation included), J-BOND's generation time,
and the peak memory of the run: on CUDA `torch.cuda.max_memory_allocated`, on CPU the peak resident set size (RSS)
above the RSS at the start of that run, sampled every 2 ms. J-BOND's extra cost is the anchor (a second LoRA adapter
with an fp32 shadow, or a second model for full fine-tuning), one anchor log-prob forward pass over the policy completions,
and, with LoRA, a KL(π‖π_ref) logging forward pass over the policy completions.

    OMP_NUM_THREADS=1 python benchmarks/jbond_vs_rloo.py                  # offline tiny kit, full fine-tuning
    OMP_NUM_THREADS=1 python benchmarks/jbond_vs_rloo.py --lora --steps 30
    python benchmarks/jbond_vs_rloo.py --model Qwen/Qwen2.5-0.5B-Instruct --lora   # needs the Hub (or a local path)
"""

import argparse
import os
import tempfile
import threading
import time


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[4])
    parser.add_argument("--model", default=None, help="model id or path (default: the offline tiny kit)")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per trainer")
    parser.add_argument("--warmup", type=int, default=3, help="steps excluded from the mean")
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter instead of the full model")
    parser.add_argument("--prompts-per-step", type=int, default=4, help="prompt groups per optimizer step")
    parser.add_argument("--max-completion-length", type=int, default=16)
    return parser.parse_args()


def distinct_token_reward(completion_ids, **kwargs):
    """A cheap, model-free reward: the number of distinct tokens in the completion."""
    return [float(len(set(ids))) for ids in completion_ids]


class PeakMemory:
    """Peak memory of a block: CUDA allocator peak, or the peak RSS increase on CPU (sampled by a thread)."""

    def __init__(self):
        import torch

        self.cuda = torch.cuda.is_available()

    def __enter__(self):
        import torch

        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
            return self
        import psutil

        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        import torch

        if self.cuda:
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self.running = False
            self.thread.join()
            self.peak = max(self.peak, self.process.memory_info().rss)
        self.bytes = self.peak - self.start if not self.cuda else self.peak
        return False


def main():
    cli = parse_args()
    if cli.model is None:  # offline run: no Hub access needed
        os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TRANSFORMERS_OFFLINE="1", CI="true")

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import RLOOConfig, RLOOTrainer

    from trl_bon import JBondConfig, JBondTrainer
    from trl_bon.anchor import anchor_memory_bytes
    from trl_bon.toy import CORPUS, build_tiny_kit

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    root = tempfile.mkdtemp(prefix="jbond_bench_")
    model = cli.model or build_tiny_kit(os.path.join(root, "kit"))["policy"]
    prompts = [" ".join(sentence.split()[:3]) for sentence in CORPUS]
    dataset = Dataset.from_dict({"prompt": prompts * (cli.steps * cli.prompts_per_step // len(prompts) + 1)})
    common = dict(
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
        max_steps=cli.steps,
        max_completion_length=cli.max_completion_length,
        per_device_train_batch_size=3 * cli.prompts_per_step,
        learning_rate=1e-5,
        gradient_checkpointing=False,
    )

    def peft_config():
        return LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0) if cli.lora else None

    results = {}
    for name in ("RLOO", "J-BOND"):
        output_dir = os.path.join(root, name)
        if name == "RLOO":
            args = RLOOConfig(output_dir=output_dir, num_generations=3, beta=0.0, **common)
            trainer = RLOOTrainer(model, distinct_token_reward, args, dataset, peft_config=peft_config())
        else:
            args = JBondConfig(output_dir=output_dir, **common)
            trainer = JBondTrainer(model, distinct_token_reward, args, dataset, peft_config=peft_config())
        with PeakMemory() as memory:
            start = time.perf_counter()
            trainer.train()
            wall = time.perf_counter() - start
        logs = [log for log in trainer.state.log_history if "step_time" in log][cli.warmup :]
        results[name] = {
            "step_time": sum(log["step_time"] for log in logs) / len(logs),
            "generation": sum(log.get("jbond/time/generation", float("nan")) for log in logs) / len(logs),
            "memory": memory.bytes,
            "wall": wall,
            "anchor": anchor_memory_bytes(trainer.anchor) if name == "J-BOND" else 0,
        }
        del trainer

    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    memory_kind = "peak allocated" if torch.cuda.is_available() else "peak RSS increase"
    print(f"model: {cli.model or 'offline tiny kit'} | {'LoRA' if cli.lora else 'full fine-tuning'} | {device}")
    print(
        f"{cli.prompts_per_step} prompts x 3 completions per step, max {cli.max_completion_length} tokens, "
        f"{cli.steps} steps ({cli.warmup} warm-up steps excluded)"
    )
    print(f"{'trainer':8} {'step time':>12} {'generation':>12} {memory_kind:>20} {'anchor':>12}")
    for name, r in results.items():
        generation = f"{r['generation'] * 1e3:9.1f} ms" if name == "J-BOND" else f"{'-':>12}"
        print(
            f"{name:8} {r['step_time'] * 1e3:9.1f} ms {generation} {r['memory'] / 2**20:17.1f} MiB "
            f"{r['anchor'] / 2**20:9.3f} MiB"
        )
    rloo, jbond = results["RLOO"], results["J-BOND"]
    print(
        f"ratio J-BOND/RLOO: step time {jbond['step_time'] / rloo['step_time']:.2f}x, "
        f"memory {jbond['memory'] / max(rloo['memory'], 1):.2f}x"
    )
    if not torch.cuda.is_available():
        print(
            "note: on CPU the RSS increase of a tiny model is dominated by allocator and import warm-up (the first "
            "run pays it); compare memory on CUDA or with a real model."
        )


if __name__ == "__main__":
    main()
