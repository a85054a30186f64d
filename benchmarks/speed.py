# /// script
# requires-python = ">=3.11"
# dependencies = ["trl-bon", "psutil"]
# ///
"""Speed and memory of J-BOND, vBoN and BoN-SFT against TRL's RLOOTrainer and SFTTrainer, side by side.

Every trainer runs on the same model, reward model, prompts, completion length, prompts per step and completions per
prompt (`--completions-per-prompt`, 3 by default: J-BOND's 1 policy + 2 anchor samples), with the same seed:

- `RLOO`: `trl.RLOOTrainer`, `num_generations=k`, `beta=0` (no reference forward pass);
- `RLOO-KL`: the same with TRL's default `beta=0.05` (one reference forward pass per step, like J-BOND's anchor pass);
- `J-BOND`: `JBondTrainer` (J-BOND: 1 policy + 2 anchor completions per prompt, EMA anchor);
- `vBoN`: `VBoNTrainer` (l1, N = `--bon-n`, `num_generations=k`); its reference-reward cache is built first, in its
  own process, untimed, and reported on its own line;
- `vBoN-exact`: the same with `vbon_objective="exact"`;
- `SFT`: `trl.SFTTrainer` on the Best-of-N data BoN-SFT made (P prompt/completion pairs per step);
- `BoN-SFT`: `BoNSFTTrainer`, N = k: samples k completions for each of the run's prompts, keeps the best, then SFT.

Reported per run: mean optimizer-step time over the steps after `--warmup`; completions/s and completion tokens/s
(generated completions, EOS included, per second of step time); the step split into generation (the trainer's
`_generate_single_turn`, both policy and anchor calls for J-BOND), scoring (rewards and the reference/anchor
log-prob passes: the rest of `_generate_and_score_completions`) and training (forward/backward/optimizer: the rest);
peak memory. BoN-SFT samples once, before its first step: its "step" is the amortised cost per P prompts
(sampling time / steps + training step), so that every row is the cost of P prompts with k completions each.

**Peak memory.** Each run is a separate subprocess (the parent only builds the offline kit and prints the table),
so no run inherits another's allocator caches or freed-but-retained memory. On CUDA: `torch.cuda.max_memory_allocated`
over the run (the model load included). On CPU: the peak resident set size (RSS) of the worker, sampled every 2 ms by
a thread, minus its RSS after the imports and before the trainer is built, i.e. model(s), optimizer state,
activations, caches and the anchor; every worker pays the same imports, so the deltas are comparable. In-process RSS
deltas (one run after another) are not fair: the first run pays the allocator warm-up and later runs reuse memory the
earlier ones freed but never returned to the OS. With `--in-process` all runs share one process (debugging only;
memory then reads 0 for CPU runs).

**Anchor overhead (LoRA).** `trainer.anchor.memory_bytes()` (the anchor adapter plus its fp32
shadow) against the bytes of all parameters and buffers of the policy model. Goal: ≤ 1 %. Goal for time: J-BOND ≤ 1.10×
RLOO-KL's step time (J-BOND's anchor pass is the counterpart of RLOO's reference pass; the ratio to β = 0 RLOO is
printed too).

    OMP_NUM_THREADS=1 python benchmarks/speed.py --lora                       # offline tiny kit, ~2–3 min on CPU
    python benchmarks/speed.py --model smollm2 --lora --steps 8 --warmup 2    # SmolLM2-135M + MiniLM reward
    python benchmarks/speed.py --model Qwen/Qwen2.5-0.5B-Instruct --reward <rm path> --lora --device cuda

`--model smollm2` uses the policy and reward model prepared by `benchmarks/replication_setup.py` (`--cache-dir`), and
its held-out prompts. A JSON with every number is written with `--json PATH`.
"""

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

RUNS = ("RLOO", "RLOO-KL", "J-BOND", "BOND", "vBoN", "vBoN-exact", "SFT", "BoN-SFT")
# `--rotate` (default): built in one process, one optimizer step of each in turn. SFT trains on BoN-SFT's data, so
# it only runs with `--separate-processes`.
ROTATED_RUNS = ("RLOO", "RLOO-KL", "J-BOND", "BOND", "vBoN", "BoN-SFT")
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "trl-bon-replication")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        default="tiny",
        help="'tiny' (offline tiny kit, default), 'smollm2-random' (random-init SmolLM2-135M shape, offline), "
        "'smollm2' (prepared by replication_setup.py), or a model id/path (then pass --reward)",
    )
    parser.add_argument("--reward", default=None, help="reward model id/path (default: the kit's)")
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE, help="replication cache, for --model smollm2")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="first steps excluded from the means")
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter (r=16, all linear layers)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--prompts-per-step", type=int, default=4, help="P: prompts per optimizer step")
    parser.add_argument(
        "--completions-per-prompt",
        type=int,
        default=3,
        help="k: completions per prompt for RLOO/vBoN and BoN-SFT's N; J-BOND always uses 3",
    )
    parser.add_argument("--bon-n", type=int, default=4, help="vBoN's N (KL coefficient 1/(N-1))")
    parser.add_argument("--reference-samples", type=int, default=16, help="vBoN's cache: M reference rewards/prompt")
    parser.add_argument("--max-completion-length", type=int, default=16)
    parser.add_argument(
        "--logging-steps",
        type=int,
        default=10,
        help="log every this many steps (J-BOND computes its forward-costing diagnostics on logging steps only)",
    )
    parser.add_argument("--num-prompts", type=int, default=32, help="distinct prompts")
    parser.add_argument(
        "--runs",
        default=None,
        help=f"comma-separated subset of {','.join(RUNS)} (default: {','.join(ROTATED_RUNS)}; all with "
        "--separate-processes)",
    )
    parser.add_argument(
        "--separate-processes",
        action="store_true",
        help="one process per run, one after another (measures peak memory; timings exposed to load changes)",
    )
    parser.add_argument("--json", default=None, help="also write all results to this JSON file")
    parser.add_argument("--in-process", action="store_true", help="run everything in this process (debugging)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    return parser


# ---------------------------------------------------------------------------------------------------------------
# Measurement helpers (used inside a worker)


class PeakMemory:
    """Peak memory of the current process: CUDA allocator peak, or peak RSS above a baseline sampled by a thread."""

    def __init__(self, cuda: bool):
        self.cuda = cuda

    def __enter__(self):
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
            self.baseline = torch.cuda.memory_allocated()
            return self
        import psutil

        self.process = psutil.Process()
        self.baseline = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self.cuda:
            import torch

            self.peak = torch.cuda.max_memory_allocated()
            self.bytes = self.peak  # allocated bytes are absolute: nothing was on the GPU before the run
        else:
            self.running = False
            self.thread.join()
            self.peak = max(self.peak, self.process.memory_info().rss)
            self.bytes = self.peak - self.baseline
        return False


class StepTimer:
    """Optimizer-step wall times, plus generation/scoring time inside each step (wrapped trainer methods), and the
    step's CPU time on the run's own thread (`time.thread_time`: every rotated run has its own thread; with
    `OMP_NUM_THREADS=1` torch computes on it, so other load on the machine does not inflate it as it does wall
    time)."""

    def __init__(self, cuda: bool, name: str = "", turns: "Turns | None" = None):
        from transformers import TrainerCallback

        self.cuda = cuda
        self.steps, self.generation, self.generate_and_score, self.tokens, self.completions = [], [], [], [], []
        self.cpu_steps = []
        self._gen = self._gas = 0.0
        self._tokens = self._completions = 0
        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                if turns is not None:
                    turns.wait(name)
                timer._sync()
                timer._gen = timer._gas = 0.0
                timer._tokens = timer._completions = 0
                timer._start, timer._cpu_start = time.perf_counter(), time.thread_time()

            def on_step_end(self, args, state, control, **kwargs):
                timer._sync()
                timer.steps.append(time.perf_counter() - timer._start)
                timer.cpu_steps.append(time.thread_time() - timer._cpu_start)
                timer.generation.append(timer._gen)
                timer.generate_and_score.append(timer._gas)
                timer.tokens.append(timer._tokens)
                timer.completions.append(timer._completions)
                if turns is not None:
                    turns.pass_on(name)

        self.callback = Callback()

    def _sync(self):
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def wrap(self, trainer):
        """Time `trainer._generate_single_turn` and `trainer._generate_and_score_completions` (instance wrappers)."""
        generate, generate_and_score = trainer._generate_single_turn, trainer._generate_and_score_completions

        def timed_generate(*args, **kwargs):
            self._sync()
            start = time.perf_counter()
            completion_ids = generate(*args, **kwargs)
            self._sync()
            self._gen += time.perf_counter() - start
            self._tokens += sum(len(ids) for ids in completion_ids)
            self._completions += len(completion_ids)
            return completion_ids

        def timed_generate_and_score(*args, **kwargs):
            self._sync()
            start = time.perf_counter()
            out = generate_and_score(*args, **kwargs)
            self._sync()
            self._gas += time.perf_counter() - start
            return out

        trainer._generate_single_turn = timed_generate
        trainer._generate_and_score_completions = timed_generate_and_score


class Turns:
    """One optimizer step of each trainer in turn (`--rotate`): each runs in its own thread and holds the turn while
    it builds, while BoN-SFT samples, and from each step's start to its end, so that load on the machine hits every
    trainer alike and no two ever compute at once."""

    def __init__(self, names):
        self.order, self.index = list(names), 0
        self.condition = threading.Condition()

    def wait(self, name):
        with self.condition:
            self.condition.wait_for(lambda: self.order[self.index] == name)

    def pass_on(self, name):
        with self.condition:
            self.index = (self.order.index(name) + 1) % len(self.order)
            self.condition.notify_all()

    def leave(self, name):
        with self.condition:
            holder = self.order[self.index]
            position = self.order.index(name)
            self.order.remove(name)
            if self.order:
                self.index = self.order.index(holder) if holder != name else position % len(self.order)
            self.condition.notify_all()


def mean(values):
    return sum(values) / len(values) if values else float("nan")


# ---------------------------------------------------------------------------------------------------------------
# One run


def run_one(name: str, spec: dict, turns: Turns | None = None) -> dict:
    """Build and train one trainer; return its timings and memory (memory only in a process of its own)."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads())
    cuda = spec["device"] == "cuda"
    from datasets import Dataset, load_from_disk
    from peft import LoraConfig
    from trl import RLOOConfig, RLOOTrainer, SFTConfig, SFTTrainer

    from trl_bon import BoNSFTConfig, BoNSFTTrainer, JBondConfig, JBondTrainer, VBoNConfig, VBoNTrainer
    from trl_bon.ref_cache import build_reference_reward_cache
    from trl_bon.sampling import GenerationSettings, Sampler

    steps, p, k = spec["steps"], spec["prompts_per_step"], spec["completions_per_prompt"]
    root = spec["workdir"]
    prompts = spec["prompts"]
    rows = (prompts * (steps * p // len(prompts) + 2))[: max(steps * p, len(prompts))]
    dataset = Dataset.from_dict({"prompt": rows})
    common = dict(
        use_cpu=not cuda,
        bf16=cuda,
        report_to="none",
        save_strategy="no",
        logging_steps=spec["logging_steps"],
        disable_tqdm=True,
        seed=0,
        max_steps=steps,
        learning_rate=1e-5,
        gradient_checkpointing=False,
    )
    rl = dict(common, max_completion_length=spec["max_completion_length"])
    peft_config = (
        LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")
        if spec["lora"]
        else None
    )
    model, reward = spec["model"], spec["reward"]
    timer = StepTimer(cuda, name, turns)
    out_dir = os.path.join(root, name)
    result = {"name": name}
    bon_sft_dir = os.path.join(root, "BoN-SFT")

    def bon_sft_args(output_dir):
        return BoNSFTConfig(
            output_dir,
            num_candidates=k,
            max_completion_length=spec["max_completion_length"],
            per_device_train_batch_size=p,
            generation_batch_size=64,
            **common,
        )

    if name == "vBoN-cache":  # paid once per prompt before training: its own subprocess, reported apart
        settings = GenerationSettings(max_completion_length=spec["max_completion_length"])
        start = time.perf_counter()
        cache = build_reference_reward_cache(
            Sampler(model, settings, progress=False),
            Dataset.from_dict({"prompt": prompts}),
            reward,
            spec["reference_samples"],
            os.path.join(root, "vbon_cache"),
        )
        seconds = time.perf_counter() - start
        completions = len(cache) * spec["reference_samples"]
        return {
            "name": name,
            "prompts": len(cache),
            "completions": completions,
            "seconds": seconds,
            "completions_per_s": completions / seconds,
        }
    if name == "SFT":  # trains on the Best-of-N data the BoN-SFT run saved
        sft_data = load_from_disk(os.path.join(bon_sft_dir, "bon_data", "round-1", "dataset"))
    candidate_tokens = []
    if turns is not None:
        turns.wait(name)
    with PeakMemory(cuda) if turns is None else contextlib.nullcontext() as memory:
        build_start = time.perf_counter()
        if name in ("RLOO", "RLOO-KL"):
            args = RLOOConfig(
                out_dir,
                num_generations=k,
                per_device_train_batch_size=k * p,
                beta=0.0 if name == "RLOO" else 0.05,
                **rl,
            )
            trainer = RLOOTrainer(model, reward, args, dataset, peft_config=peft_config)
        elif name in ("J-BOND", "BOND"):
            # BOND: N = 2 against the fixed π_ref, 2 quantile samples, i.e. the same 1 + 2 completions per prompt.
            bond = (
                dict(mode="bond", anchor="fixed", num_candidates=2, num_quantile_samples=2) if name == "BOND" else {}
            )
            args = JBondConfig(out_dir, per_device_train_batch_size=3 * p, **bond, **rl)
            trainer = JBondTrainer(model, reward, args, dataset, peft_config=peft_config)
        elif name in ("vBoN", "vBoN-exact"):
            args = VBoNConfig(
                out_dir,
                num_candidates=spec["bon_n"],
                num_generations=k,
                per_device_train_batch_size=k * p,
                reference_cache_dir=os.path.join(root, "vbon_cache"),
                vbon_objective="exact" if name == "vBoN-exact" else "l1",
                **rl,
            )
            trainer = VBoNTrainer(model, reward, args, dataset, peft_config=peft_config)
        elif name == "SFT":
            args = SFTConfig(out_dir, per_device_train_batch_size=p, completion_only_loss=True, **common)
            trainer = SFTTrainer(model, args=args, train_dataset=sft_data, peft_config=peft_config)
        elif name == "BoN-SFT":  # samples k per prompt once (timed, amortised below), keeps the best, SFT on it
            from transformers import AutoTokenizer

            from trl_bon.sampling import best_of_n
            from trl_bon.trainer.bon_sft_trainer import bon_sft_dataset

            settings = GenerationSettings(max_completion_length=spec["max_completion_length"])
            sampling_start = time.perf_counter()
            bon = best_of_n(Sampler(model, settings, progress=False), rows, reward, k)
            sampling_seconds = time.perf_counter() - sampling_start
            candidate_tokens.append(sum(len(ids) for row in bon.candidate_ids for ids in row))
            data = bon_sft_dataset(bon, AutoTokenizer.from_pretrained(model))
            data.save_to_disk(os.path.join(bon_sft_dir, "bon_data", "round-1", "dataset"))
            trainer = BoNSFTTrainer(model, args=bon_sft_args(out_dir), train_dataset=data, peft_config=peft_config)
        else:
            raise ValueError(f"unknown run {name!r}")
        build_seconds = time.perf_counter() - build_start
        if name not in ("SFT", "BoN-SFT"):
            timer.wrap(trainer)
        trainer.add_callback(timer.callback)
        if turns is not None:
            turns.pass_on(name)
            turns.wait(name)
        trainer.train()

    kept = slice(spec["warmup"], None)
    step_times = timer.steps[kept]
    result.update(
        steps=len(timer.steps),
        timed_steps=len(step_times),
        step_time=statistics.median(step_times),
        generation=mean(timer.generation[kept]),
        scoring=mean([gas - gen for gas, gen in zip(timer.generate_and_score[kept], timer.generation[kept])]),
        completions_per_step=mean(timer.completions[kept]),
        tokens_per_step=mean(timer.tokens[kept]),
        step_times=step_times,
        cpu_step_times=timer.cpu_steps[kept],
        build_seconds=build_seconds,
        memory_bytes=memory.bytes if turns is None else float("nan"),
    )
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    # Model memory: every parameter and buffer of the policy model except the anchor adapter's own tensors.
    named = [(n, t) for n, t in [*unwrapped.named_parameters(), *unwrapped.named_buffers()] if ".anchor." not in n]
    result["model_bytes"] = sum(t.numel() * t.element_size() for _, t in named)
    result["trainable_parameters"] = sum(t.numel() for _, t in named if t.requires_grad)
    result["model_parameters"] = sum(t.numel() for n, t in named if "lora_" not in n)
    if name == "J-BOND":
        result["anchor_bytes"] = trainer.anchor.memory_bytes()
    if name == "BoN-SFT":
        sampling = sampling_seconds
        num_prompts = len(rows)
        # amortised over the run's steps: sampling of the P prompts of one step + one SFT step
        per_step_sampling = sampling * p / num_prompts
        result.update(
            train_step_time=result["step_time"],
            step_times=[t + per_step_sampling for t in result["step_times"]],
            cpu_step_times=[],  # its sampling ran before the steps: no per-step CPU time to compare
            sampling_seconds=sampling,
            sampling_completions_per_s=k * num_prompts / sampling,
            step_time=result["step_time"] + per_step_sampling,
            generation=per_step_sampling,
            scoring=0.0,
            completions_per_step=k * p,
            tokens_per_step=sum(candidate_tokens) * p / num_prompts,
        )
    if name == "SFT":
        result.update(generation=0.0, scoring=0.0, completions_per_step=0.0, tokens_per_step=0.0)
    del trainer
    return result


# ---------------------------------------------------------------------------------------------------------------
# Parent


def resolve_models(cli, workdir: str) -> tuple[str, str, list[str], str]:
    if cli.model == "tiny":
        from trl_bon.toy import CORPUS, build_tiny_kit

        kit = build_tiny_kit(os.path.join(workdir, "kit"))
        prompts = [" ".join(s.split()[: 2 + i % 3]) for i, s in enumerate(CORPUS * 6)]
        prompts = list(dict.fromkeys(prompts)) + [f"{w} the" for w in ("tell", "once", "a", "the", "good", "bad")]
        return kit["policy"], cli.reward or kit["reward"], prompts[: cli.num_prompts], "offline tiny kit"
    if cli.model == "smollm2-random":
        from trl_bon.toy import build_tiny_kit

        kit = build_tiny_kit(os.path.join(workdir, "kit"))
        prompts = [
            " ".join(f"t{(7 * i + 3 * j) % 49000 + 10}" for j in range(3 + i % 4)) for i in range(cli.num_prompts)
        ]
        label = "random-init SmolLM2-135M shape (fp32) + tiny-kit reward"
        return build_smollm2_random(workdir), cli.reward or kit["reward"], prompts, label
    if cli.model == "smollm2":
        root = os.path.expanduser(cli.cache_dir)
        policy, rm = os.path.join(root, "policy"), os.path.join(root, "reward")
        if not os.path.isfile(os.path.join(policy, "config.json")):
            raise SystemExit(f"No SmolLM2 in {root}: run `python benchmarks/replication_setup.py` first.")
        with open(os.path.join(root, "data", "prompts_test.jsonl")) as f:
            prompts = [json.loads(line)["prompt"] for _, line in zip(range(cli.num_prompts), f)]
        return policy, cli.reward or rm, prompts, "SmolLM2-135M-Instruct (fp32) + MiniLM reward"
    if cli.reward is None:
        raise SystemExit("--reward is required with a custom --model.")
    from trl_bon.toy import CORPUS

    prompts = [" ".join(s.split()[:3]) for s in CORPUS]
    return cli.model, cli.reward, prompts, cli.model


def run_rotation(runs: list[str], spec: dict) -> dict:
    """Build every trainer in this process, then take one optimizer step of each in turn (`Turns`)."""
    # Import in this thread first: lazy module imports (trl's) are not safe to race from the worker threads.
    import peft  # noqa: F401
    from trl import RLOOConfig, RLOOTrainer, SFTConfig, SFTTrainer  # noqa: F401

    import trl_bon  # noqa: F401
    from trl_bon import sampling, trainer  # noqa: F401

    turns, results, errors = Turns(runs), {}, {}

    def worker(name):
        try:
            results[name] = run_one(name, spec, turns)
        except BaseException as error:  # reported after the others finish
            errors[name] = error
        finally:
            turns.leave(name)

    threads = [threading.Thread(target=worker, args=(name,), name=name) for name in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        name, error = next(iter(errors.items()))
        raise SystemExit(f"run {name} failed: {error!r}") from error
    return results


# SmolLM2-135M's shape (a Llama), for random-init models: the Hub is unreachable offline.
SMOLLM2_135M_SHAPE = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)


def build_smollm2_random(root: str) -> str:
    """A random-init Llama of SmolLM2-135M's shape (the Hub is unreachable), with a word-level tokenizer of its
    vocabulary size so that every sampled id decodes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from trl_bon.toy import word_level_tokenizer

    tokenizer = word_level_tokenizer(SMOLLM2_135M_SHAPE["vocab_size"])
    config = LlamaConfig(
        **SMOLLM2_135M_SHAPE, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    import torch

    torch.manual_seed(0)
    path = os.path.join(root, "smollm2-random")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def fmt_bytes(n: float) -> str:
    if n != n:  # NaN: runs sharing one process have no memory of their own
        return "n/a"
    return f"{n / 2**20:8.1f} MiB"


def step_ratio(run: dict, base: dict, spec: dict) -> str:
    """Ratio of median step times; with `--rotate` also the range of the per-round ratios (step i of each run was
    taken back to back, so a round's ratio shares that moment's load)."""
    text = f"{run['step_time'] / base['step_time']:.2f}x (medians)"
    if not spec.get("separate_processes"):
        rounds = [a / b for a, b in zip(run["step_times"], base["step_times"], strict=False)]
        if rounds:
            text += f", per round {statistics.median(rounds):.2f}x [{min(rounds):.2f}-{max(rounds):.2f}]"
    return text


def print_report(results: dict, spec: dict, label: str) -> list[str]:
    lines = []
    p, k, length = spec["prompts_per_step"], spec["completions_per_prompt"], spec["max_completion_length"]
    device = spec["device"] + (
        "" if spec["device"] == "cuda" else f" ({os.environ.get('OMP_NUM_THREADS', '?')} threads)"
    )
    memory_kind = "peak alloc" if spec["device"] == "cuda" else "peak RSS+"
    lines.append(f"model: {label} | {'LoRA r=16' if spec['lora'] else 'full fine-tuning'} | {device}")
    lines.append(
        f"P={p} prompts/step, k={k} completions/prompt (J-BOND: 3), <= {length} tokens, {spec['steps']} steps "
        f"({spec['warmup']} warm-up excluded), vBoN N={spec['bon_n']}, logging every {spec['logging_steps']} steps"
    )
    header = (
        f"{'run':10} {'step':>9} {'min-max':>15} {'compl/s':>8} {'tok/s':>8} {'gen':>6} {'score':>6} {'train':>6} "
        f"{memory_kind:>12} {'trainable':>10}"
    )
    lines.append(header)
    for name, r in results.items():
        st = r["step_time"]
        cps = r["completions_per_step"] / st if r["completions_per_step"] else float("nan")
        tps = r["tokens_per_step"] / st if r["tokens_per_step"] else float("nan")
        gen, score = r["generation"] / st, r["scoring"] / st
        train = 1.0 - gen - score
        lines.append(
            f"{name:10} {st * 1e3:7.1f}ms {min(r['step_times']) * 1e3:6.0f}-{max(r['step_times']) * 1e3:.0f}ms "
            f"{cps:8.1f} {tps:8.0f} {gen:6.0%} {score:6.0%} {train:6.0%} "
            f"{fmt_bytes(r['memory_bytes']):>12} {r['trainable_parameters']:>10,}"
        )
    lines.append(
        "(gen = generation share of the step, score = rewards + reference/anchor log-prob passes, train = "
        "forward/backward/optimizer; BoN-SFT: sampling amortised per P prompts)"
    )
    ratios = []
    for name in ("J-BOND", "BOND", "vBoN", "vBoN-exact", "BoN-SFT"):
        for base in ("RLOO-KL", "RLOO"):
            if name in results and base in results:
                ratios.append(f"{name} / {base} step time: " + step_ratio(results[name], results[base], spec))
                if spec["device"] == "cpu" and results[name].get("cpu_step_times"):
                    cpu = statistics.median(results[name]["cpu_step_times"])
                    cpu /= statistics.median(results[base]["cpu_step_times"])
                    ratios.append(f"{name} / {base} step CPU time (own thread): {cpu:.2f}x (medians)")
    if "J-BOND" in results:
        jb = results["J-BOND"]
        if spec.get("separate_processes"):
            for base in ("RLOO-KL", "RLOO"):
                if base in results:
                    ratios.append(
                        f"J-BOND / {base} memory: {jb['memory_bytes'] / max(results[base]['memory_bytes'], 1):.2f}x"
                    )
        if "anchor_bytes" in jb:
            share = jb["anchor_bytes"] / jb["model_bytes"]
            ratios.append(
                f"anchor memory: {jb['anchor_bytes'] / 2**20:.3f} MiB = {share:.2%} of the model's "
                f"{jb['model_bytes'] / 2**20:.1f} MiB (goal <= 1% with LoRA); "
                f"{jb['anchor_bytes'] / jb['trainable_parameters']:.0f} bytes per adapter parameter, adapter = "
                f"{jb['trainable_parameters'] / jb['model_parameters']:.2%} of the base parameters"
            )
            if spec["lora"]:
                ratios.append(
                    f"  (the anchor is linear in the LoRA rank: <= 1% needs r <= {16 * 0.01 / share:.1f} "
                    "on this model at this dtype)"
                )
    vb = results.get("vBoN") or results.get("vBoN-exact")
    if vb:
        c = vb["cache"]
        ratios.append(
            f"vBoN reference cache (once, offline): {c['completions']} completions + scoring in "
            f"{c['seconds']:.1f}s = {c['completions_per_s']:.1f} completions/s"
        )
    if "BoN-SFT" in results:
        bs = results["BoN-SFT"]
        ratios.append(
            f"BoN-SFT: sampling {bs['sampling_completions_per_s']:.1f} completions/s "
            f"({bs['sampling_seconds']:.1f}s), train step {bs['train_step_time'] * 1e3:.1f}ms"
        )
        if "SFT" in results:
            sft = results["SFT"]["step_time"]
            ratios.append(
                f"BoN-SFT / SFT: train step {bs['train_step_time'] / sft:.2f}x, amortised step "
                f"{bs['step_time'] / sft:.2f}x"
            )
    if not spec.get("separate_processes"):
        ratios.append("all runs in one process, one step of each in turn (memory: --separate-processes)")
    if spec["device"] == "cpu" and label == "offline tiny kit":
        ratios.append(
            "note: CPU step times of a tiny model are dominated by Python/launch overhead, not FLOPs; they "
            "show the shape of the cost, not GPU numbers"
        )
    lines += ratios
    print("\n".join(lines), flush=True)
    return lines


def main():
    cli = make_parser().parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if cli.worker is not None:  # child process: one run, result as JSON on the last line of stdout
        spec = json.loads(cli.spec)
        result = run_one(cli.worker, spec)
        print("SPEED_RESULT " + json.dumps(result), flush=True)
        return
    if cli.model in ("tiny", "smollm2", "smollm2-random"):
        os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TRANSFORMERS_OFFLINE="1", CI="true")
    import torch

    device = cli.device if cli.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    default_runs = RUNS if cli.separate_processes else ROTATED_RUNS
    runs = [r.strip() for r in (cli.runs or ",".join(default_runs)).split(",") if r.strip()]
    unknown = set(runs) - set(default_runs)
    if unknown:
        raise SystemExit(f"unknown runs {sorted(unknown)}; choose from {default_runs}")
    if "SFT" in runs:  # SFT trains on the data BoN-SFT samples, so BoN-SFT runs first
        runs.remove("SFT")
        if "BoN-SFT" not in runs:
            runs.append("BoN-SFT")
        runs.insert(runs.index("BoN-SFT") + 1, "SFT")
    vbon_runs = [r for r in runs if r.startswith("vBoN")]
    if vbon_runs:  # the reference-reward cache is built in its own process, before the vBoN runs
        runs.insert(runs.index(vbon_runs[0]), "vBoN-cache")
    workdir = tempfile.mkdtemp(prefix="trl_bon_speed_")
    model, reward, prompts, label = resolve_models(cli, workdir)
    spec = dict(
        model=model,
        reward=reward,
        prompts=prompts,
        device=device,
        lora=cli.lora,
        steps=cli.steps,
        warmup=min(cli.warmup, cli.steps - 1),
        prompts_per_step=cli.prompts_per_step,
        completions_per_prompt=cli.completions_per_prompt,
        bon_n=cli.bon_n,
        reference_samples=cli.reference_samples,
        max_completion_length=cli.max_completion_length,
        logging_steps=cli.logging_steps,
        workdir=workdir,
        separate_processes=cli.separate_processes,
    )
    results = {}
    if not cli.separate_processes:
        runs = [r for r in runs if r != "vBoN-cache"]
        if vbon_runs:
            cache_result = run_one("vBoN-cache", spec)
            print(f"  vBoN-cache: {cache_result['completions']} completions in {cache_result['seconds']:.1f}s")
        results = run_rotation(runs, spec)
        runs = []
    for name in runs:
        start = time.perf_counter()
        if cli.in_process:
            result = run_one(name, spec)
        else:
            proc = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--worker", name, "--spec", json.dumps(spec)],
                capture_output=True,
                text=True,
                env=os.environ.copy(),
            )
            line = next((x for x in proc.stdout.splitlines()[::-1] if x.startswith("SPEED_RESULT ")), None)
            if proc.returncode != 0 or line is None:
                sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
                raise SystemExit(f"run {name} failed (exit {proc.returncode})")
            result = json.loads(line.removeprefix("SPEED_RESULT "))
        result["wall_seconds"] = time.perf_counter() - start
        if name == "vBoN-cache":
            cache_result = result
            print(f"  {name}: {result['completions']} completions in {result['seconds']:.1f}s", flush=True)
            continue
        results[name] = result
        print(f"  {name}: {result['step_time'] * 1e3:.1f} ms/step, wall {result['wall_seconds']:.1f}s", flush=True)
    for name in ("vBoN", "vBoN-exact"):
        if name in results:
            results[name]["cache"] = cache_result
    order = [r for r in RUNS if r in results]
    lines = print_report({r: results[r] for r in order}, spec, label)
    if cli.json:
        with open(cli.json, "w") as f:
            json.dump(
                {"spec": {k: v for k, v in spec.items() if k != "prompts"}, "results": results, "report": lines},
                f,
                indent=2,
            )
    shutil.rmtree(workdir, ignore_errors=True)  # the kit, caches and trainer outputs of this run


if __name__ == "__main__":
    main()
