"""GPU check: J-BOND with LoRA against TRL's RLOO on randomly initialised Llama models built locally (no network).

For each model size (`--sizes`: Llama-3.2-1B and Llama-3.1-8B shapes) and base precision (`--bases`: a bf16 base and
an 8-bit bitsandbytes base), the script trains `JBondTrainer` and `trl.RLOOTrainer` side by side, each in its own
subprocess, with the same LoRA adapter (r = 16, all linear layers), prompts, seed and completions: k = 3 completions
per prompt (J-BOND's 1 policy + 2 anchor samples; RLOO's `num_generations=3`, `beta=0`), every completion exactly
`--completion-length` tokens long (`min_new_tokens` = max), rewards from a cheap function of the token ids. It prints,
per run: peak GPU memory (`torch.cuda.max_memory_allocated`, model load included), mean optimizer-step time after
`--warmup` steps, completion tokens/s, and J-BOND/RLOO ratios of time and memory.

The models are random (weights from the config's initialiser), so quality means nothing here; only speed and memory.
The vocabulary has the real 128 256 entries (the LM head dominates the 1B model's memory); prompts come from a small
local BPE tokenizer, and the completions' ids beyond it decode to nothing, which the reward function ignores.

    python benchmarks/gpu_check.py                      # 1b and 8b, bf16 and 8bit: aimed at <= 8 min on one H100/H200
    python benchmarks/gpu_check.py --sizes 1b --bases bf16
    python benchmarks/gpu_check.py --sizes tiny --bases fp32 --device cpu --steps 2 --warmup 0 --in-process  # CPU

Wheels it needs besides torch (to carry to an offline GPU machine: `pip download` them on a connected one): trl,
transformers, peft, accelerate, datasets, bitsandbytes (8-bit base), safetensors, tokenizers, huggingface_hub, and
datasets' dependencies that a bare CUDA image lacks: pyarrow, dill, multiprocess, xxhash, pandas, fsspec, psutil;
plus trl-bon itself (this repository). `benchmarks/speed.py` provides the timers (imported, not copied).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).parent))
from speed import PeakMemory, StepTimer, mean  # noqa: E402


# Shapes of Llama-3.2-1B and Llama-3.1-8B; `tiny` is for the CPU test.
SIZES = {
    "tiny": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1
    ),
    "1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=True,
    ),
    "8b": dict(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8
    ),
}
VOCAB = {"tiny": 512}  # the real models' 128 256 otherwise
RUNS = ("RLOO", "J-BOND")
PROMPTS = ["the cat sat on", "tell me a story about", "once upon a time", "the movie was", "the food here is"]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1b,8b", help=f"comma-separated subset of {','.join(SIZES)}")
    parser.add_argument("--bases", default="bf16,8bit", help="comma-separated subset of bf16, 8bit, fp32")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="first steps excluded from the means")
    parser.add_argument("--prompts-per-step", type=int, default=8)
    parser.add_argument("--completion-length", type=int, default=64)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--in-process", action="store_true", help="run every trainer in this process (CPU test)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser


def build_model(size: str, directory: str, device: str) -> str:
    """Save a randomly initialised Llama of `size` with the local tokenizer to `directory`; return the path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from trl_bon.toy import build_bpe_tokenizer

    tokenizer = build_bpe_tokenizer()
    config = LlamaConfig(
        vocab_size=VOCAB.get(size, 128256),
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        **SIZES[size],
    )
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise in bf16 on the GPU directly: no fp32 copy of an 8B model
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default_dtype)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    del model
    return directory


def token_reward(completion_ids, **kwargs):
    return [float(sum(ids) % 97) / 97.0 for ids in completion_ids]


def run_one(spec: dict) -> dict:
    """Train one trainer of one configuration; return its step time, tokens/s and peak memory."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig
    from trl import RLOOConfig, RLOOTrainer

    from trl_bon import JBondConfig, JBondTrainer

    cuda = spec["device"] == "cuda"
    p, k, length = spec["prompts_per_step"], 3, spec["completion_length"]
    dataset = Dataset.from_dict({"prompt": (PROMPTS * (spec["steps"] * p))[: spec["steps"] * p]})
    common = dict(
        output_dir=os.path.join(spec["workdir"], spec["name"]),
        use_cpu=not cuda,
        bf16=spec["base"] != "fp32",
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
        max_steps=spec["steps"],
        learning_rate=1e-5,
        gradient_checkpointing=False,
        per_device_train_batch_size=p * k,
        max_completion_length=length,
        generation_kwargs={"min_new_tokens": length},  # the same number of completion tokens for both trainers
        model_init_kwargs={"dtype": "float32" if spec["base"] == "fp32" else "bfloat16"},
    )
    quantization = BitsAndBytesConfig(load_in_8bit=True) if spec["base"] == "8bit" else None
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")
    timer = StepTimer(cuda)
    with PeakMemory(cuda) as memory:
        if spec["trainer"] == "RLOO":
            args = RLOOConfig(**common, num_generations=k, beta=0.0)
            trainer = RLOOTrainer(
                spec["model"], token_reward, args=args, train_dataset=dataset, peft_config=lora,
                quantization_config=quantization,
            )  # fmt: skip
        else:
            args = JBondConfig(**common)
            trainer = JBondTrainer(
                spec["model"], token_reward, args, dataset, peft_config=lora, quantization_config=quantization
            )
        timer.wrap(trainer)
        trainer.add_callback(timer.callback)
        trainer.train()
    kept = slice(spec["warmup"], None)
    step_time = mean(timer.steps[kept])
    tokens = mean(timer.tokens[kept])
    return {
        **{key: spec[key] for key in ("size", "base", "trainer")},
        "step_time": step_time,
        "tokens_per_step": tokens,
        "tokens_per_s": tokens / step_time,
        "peak_memory_bytes": memory.bytes,
        "steps": len(timer.steps),
    }


def print_report(results: list[dict]) -> list[str]:
    lines = [
        f"{'size':>5} {'base':>5} {'trainer':>7} {'peak mem':>10} {'step':>9} {'tok/step':>9} {'tok/s':>9} "
        f"{'time ×RLOO':>10} {'mem ×RLOO':>9}"
    ]
    rloo = {(r["size"], r["base"]): r for r in results if r["trainer"] == "RLOO"}
    for r in results:
        base = rloo.get((r["size"], r["base"]))
        time_ratio = r["step_time"] / base["step_time"] if base else float("nan")
        memory_ratio = r["peak_memory_bytes"] / base["peak_memory_bytes"] if base and base["peak_memory_bytes"] else 0
        lines.append(
            f"{r['size']:>5} {r['base']:>5} {r['trainer']:>7} {r['peak_memory_bytes'] / 2**30:>6.2f} GiB "
            f"{r['step_time']:>7.3f} s {r['tokens_per_step']:>9.0f} {r['tokens_per_s']:>9.1f} {time_ratio:>10.3f} "
            f"{memory_ratio:>9.3f}"
        )
    print("\n".join(lines), flush=True)
    return lines


def main(argv: list[str] | None = None) -> list[dict]:
    cli = make_parser().parse_args(argv)
    os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TRANSFORMERS_OFFLINE="1", CI="true")
    if cli.worker is not None:  # child process: one run, result as JSON on the last line of stdout
        print("GPU_CHECK_RESULT " + json.dumps(run_one(json.loads(cli.worker))), flush=True)
        return []
    sizes, bases = cli.sizes.split(","), cli.bases.split(",")
    if unknown := set(sizes) - set(SIZES):
        raise SystemExit(f"unknown sizes {sorted(unknown)}; choose from {sorted(SIZES)}")
    if "8bit" in bases and cli.device != "cuda":
        raise SystemExit("The 8-bit base needs CUDA (bitsandbytes); use --bases bf16 or fp32 on CPU.")
    workdir = tempfile.mkdtemp(prefix="trl_bon_gpu_check_")
    results, start = [], time.perf_counter()
    for size in sizes:
        built = time.perf_counter()
        model = build_model(size, os.path.join(workdir, size), cli.device)
        print(f"built {size} in {time.perf_counter() - built:.0f} s", flush=True)
        for base in bases:
            for trainer in RUNS:
                spec = dict(
                    vars(cli), size=size, base=base, trainer=trainer, model=model, workdir=workdir,
                    name=f"{size}-{base}-{trainer}", warmup=min(cli.warmup, cli.steps - 1),
                )  # fmt: skip
                if cli.in_process:
                    result = run_one(spec)
                else:
                    command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
                    proc = subprocess.run(command, capture_output=True, text=True)
                    line = next((x for x in proc.stdout.splitlines()[::-1] if x.startswith("GPU_CHECK_RESULT ")), None)
                    if proc.returncode != 0 or line is None:
                        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
                        raise SystemExit(f"run {spec['name']} failed (exit {proc.returncode})")
                    result = json.loads(line.removeprefix("GPU_CHECK_RESULT "))
                results.append(result)
                print(f"  {spec['name']}: {result['step_time']:.3f} s/step", flush=True)
    lines = print_report(results)
    print(f"total {time.perf_counter() - start:.0f} s")
    if cli.json:
        Path(cli.json).write_text(json.dumps({"results": results, "report": lines}, indent=2))
    return results


if __name__ == "__main__":
    main()
