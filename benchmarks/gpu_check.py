"""GPU check: J-BOND with LoRA against TRL's RLOO on randomly initialised Qwen2.5-shaped models built locally.

For each model size (`--sizes`: the Qwen2.5-0.5B and Qwen2.5-1.5B shapes, real 151 936-token vocabulary) and base
precision (`--bases`: a bf16 base, and an 8-bit bitsandbytes base), the script trains `JBondTrainer`, `trl.RLOOTrainer`
with a KL penalty (`RLOO-KL`, beta = 0.05: the reference is the base with the adapter disabled) and without (`RLOO`,
beta = 0), each in its own subprocess, with the same LoRA adapter (r = 16, all linear layers), prompts, seed and
completions: k = 3 completions per prompt (J-BOND's 1 policy + 2 anchor samples; RLOO's `num_generations=3`), every
completion exactly `--completion-length` tokens long (`min_new_tokens` = max), rewards from a cheap function of the
token ids. It prints, per run: peak GPU memory (`torch.cuda.max_memory_allocated`, model load included), mean
optimizer-step time after `--warmup` steps, completion tokens/s, and the time and memory ratios to RLOO-KL. Runs that
would start after `--budget` seconds are skipped and listed (the default aims the whole check at 8 minutes on one
H100; not yet run on one).

The models are random (weights from the config's initialiser), so quality means nothing here; only speed and memory.
Prompts come from a small local BPE tokenizer; completion ids beyond it decode to nothing, which the reward ignores.

On a GPU machine (offline; its image has torch, transformers 5.17, accelerate, huggingface_hub, safetensors,
tokenizers, pyarrow, pandas, psutil and xxhash, but not trl, datasets or bitsandbytes): on a connected machine, from
the repository root, fetch the missing wheels, and peft at the version the tests use (about 46 MB; transformers stays
the image's, the version the vLLM engines tier pins too):

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        trl==1.16.0 peft==0.21.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 bitsandbytes==0.50.2

then carry `.whl` with the repository and run there, from the repository root:

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --json gpu_check.json

Before any model is built the script checks that these imports work and names the wheel to carry if one does not.
Other invocations:

    python benchmarks/gpu_check.py --sizes 0.5b --bases bf16            # one configuration
    python benchmarks/gpu_check.py --sizes tiny --bases fp32 --device cpu --steps 2 --in-process  # CPU smoke

`benchmarks/speed.py` provides the timers (imported, not copied).
"""

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).parent))
from speed import PeakMemory, StepTimer, mean  # noqa: E402


# Shapes of Qwen2.5-0.5B and Qwen2.5-1.5B (tied embeddings, biased q/k/v); `tiny` is for the CPU smoke test.
SIZES = {
    "tiny": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1
    ),
    "0.5b": dict(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2
    ),
    "1.5b": dict(
        hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2
    ),
}
VOCAB = {"tiny": 512}  # the real models' 151 936 otherwise
TRAINERS = {"RLOO-KL": 0.05, "RLOO": 0.0, "J-BOND": None}  # RLOO's beta; J-BOND uses none
BASELINE = "RLOO-KL"
PROMPTS = ["the cat sat on", "tell me a story about", "once upon a time", "the movie was", "the food here is"]
# What the runs import beyond torch (the wheels to carry to a GPU image that lacks them: see the docstring).
NEEDED = ("trl", "peft", "transformers", "accelerate", "datasets")


def check_imports(bases: list[str]) -> None:
    """Fail in one line, before any model is built, when a package the runs need cannot be imported."""
    missing = []
    for module in NEEDED + (("bitsandbytes",) if "8bit" in bases else ()):
        try:
            importlib.import_module(module)
        except Exception as error:  # a wheel missing, or one of its own dependencies (dill, multiprocess, ...)
            missing.append(f"{module} ({type(error).__name__}: {error})")
    if missing:
        raise SystemExit(f"Cannot import {'; '.join(missing)}: carry the wheels listed in this script's docstring.")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.5b,1.5b", help=f"comma-separated subset of {','.join(SIZES)}")
    parser.add_argument("--bases", default="bf16,8bit", help="comma-separated subset of bf16, 8bit, fp32")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="first steps excluded from the means")
    parser.add_argument("--prompts-per-step", type=int, default=8)
    parser.add_argument("--completion-length", type=int, default=64)
    parser.add_argument(
        "--trainers", default=",".join(TRAINERS), help="comma-separated subset of " + ",".join(TRAINERS)
    )
    parser.add_argument("--budget", type=float, default=360.0, help="start no run after this many seconds")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--in-process", action="store_true", help="run every trainer in this process (CPU test)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser


def build_model(size: str, directory: str, device: str) -> str:
    """Save a randomly initialised Qwen2 of `size` with the local tokenizer to `directory`; return the path."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from trl_bon.toy import build_bpe_tokenizer

    tokenizer = build_bpe_tokenizer()
    config = Qwen2Config(
        vocab_size=VOCAB.get(size, 151936),
        max_position_embeddings=4096,
        tie_word_embeddings=True,
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
            model = Qwen2ForCausalLM(config)
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
        if spec["trainer"] != "J-BOND":
            args = RLOOConfig(**common, num_generations=k, beta=TRAINERS[spec["trainer"]])
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
    header = (
        f"{'size':>5} {'base':>5} {'trainer':>7} {'peak mem':>10} {'step':>9} {'tok/step':>9} {'tok/s':>9} "
        f"{'time ×' + BASELINE:>13} {'mem ×' + BASELINE:>12}"
    )
    lines = [header]
    baselines = {(r["size"], r["base"]): r for r in results if r["trainer"] == BASELINE and "error" not in r}
    for r in results:
        if "error" in r:
            lines.append(f"{r['size']:>5} {r['base']:>5} {r['trainer']:>7} failed: {r['error']}")
            continue
        base = baselines.get((r["size"], r["base"]))
        time_ratio = r["step_time"] / base["step_time"] if base else float("nan")
        memory_ratio = r["peak_memory_bytes"] / base["peak_memory_bytes"] if base and base["peak_memory_bytes"] else 0
        lines.append(
            f"{r['size']:>5} {r['base']:>5} {r['trainer']:>7} {r['peak_memory_bytes'] / 2**30:>6.2f} GiB "
            f"{r['step_time']:>7.3f} s {r['tokens_per_step']:>9.0f} {r['tokens_per_s']:>9.1f} {time_ratio:>13.3f} "
            f"{memory_ratio:>12.3f}"
        )
    print("\n".join(lines), flush=True)
    return lines


def run_in_subprocess(spec: dict) -> dict:
    """One run in a fresh process (its own CUDA peak memory); a failed run is reported, the check goes on."""
    command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    proc = subprocess.run(command, capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines()[::-1] if x.startswith("GPU_CHECK_RESULT ")), None)
    if proc.returncode != 0 or line is None:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return {**{key: spec[key] for key in ("size", "base", "trainer")}, "error": f"exit {proc.returncode}: {last}"}
    return json.loads(line.removeprefix("GPU_CHECK_RESULT "))


def main(argv: list[str] | None = None) -> list[dict]:
    cli = make_parser().parse_args(argv)
    os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TRANSFORMERS_OFFLINE="1", CI="true")
    if cli.worker is not None:  # child process: one run, result as JSON on the last line of stdout
        print("GPU_CHECK_RESULT " + json.dumps(run_one(json.loads(cli.worker))), flush=True)
        return []
    sizes, bases, trainers = cli.sizes.split(","), cli.bases.split(","), cli.trainers.split(",")
    if unknown := set(sizes) - set(SIZES):
        raise SystemExit(f"unknown sizes {sorted(unknown)}; choose from {sorted(SIZES)}")
    if unknown := set(trainers) - set(TRAINERS):
        raise SystemExit(f"unknown trainers {sorted(unknown)}; choose from {sorted(TRAINERS)}")
    if "8bit" in bases and cli.device != "cuda":
        raise SystemExit("The 8-bit base needs CUDA (bitsandbytes); use --bases bf16 or fp32 on CPU.")
    check_imports(bases)
    if cli.device == "cuda":
        import torch

        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    workdir = tempfile.mkdtemp(prefix="trl_bon_gpu_check_")
    results, skipped, start = [], [], time.perf_counter()
    for size in sizes:
        model = None
        for base in bases:
            for trainer in trainers:
                name = f"{size}-{base}-{trainer}"
                if time.perf_counter() - start > cli.budget:
                    skipped.append(name)
                    continue
                if model is None:
                    built = time.perf_counter()
                    model = build_model(size, os.path.join(workdir, size), cli.device)
                    print(f"built {size} in {time.perf_counter() - built:.0f} s", flush=True)
                spec = dict(
                    vars(cli), size=size, base=base, trainer=trainer, model=model, workdir=workdir, name=name,
                    warmup=min(cli.warmup, cli.steps - 1),
                )  # fmt: skip
                result = run_one(spec) if cli.in_process else run_in_subprocess(spec)
                results.append(result)
                print(f"  {name}: {result.get('error') or format(result['step_time'], '.3f') + ' s/step'}", flush=True)
    lines = print_report(results)
    if skipped:
        lines.append(f"skipped (past the {cli.budget:.0f} s budget): {', '.join(skipped)}")
        print(lines[-1])
    print(f"total {time.perf_counter() - start:.0f} s")
    if cli.json:
        Path(cli.json).write_text(json.dumps({"results": results, "report": lines, "skipped": skipped}, indent=2))
    return results


if __name__ == "__main__":
    main()
