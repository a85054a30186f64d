# /// script
# requires-python = ">=3.11"
# dependencies = ["trl-bon"]
# ///
"""Step time of VBoNTrainer vs TRL's RLOOTrainer, and the throughput of the reference-reward cache build.

In one run, on the offline tiny kit (2-layer Llama policy + 2-layer Llama reward model, built from scratch):

1. builds vBoN's reference-reward cache for the training prompts and reports completions/s (and the same on the
   one-token task, where generation is a single token);
2. trains `RLOOTrainer` and `VBoNTrainer` (`l1`, then `exact`) with the same model, prompts, completions per prompt
   and KL coefficient (1/(N−1)), and prints the mean optimizer-step time excluding warm-up steps, and the ratios.

vBoN's per-step overhead is the CDF lookup (l1) plus, for `exact`, one more reference forward pass; its real cost is
the M reference completions per prompt, paid once by the cache build.

    OMP_NUM_THREADS=1 python benchmarks/vbon_step_time.py
    OMP_NUM_THREADS=1 python benchmarks/vbon_step_time.py --steps 30 --num-reference-samples 64
"""

import argparse
import os
import tempfile
import time


os.environ.update(
    HF_HUB_OFFLINE="1",
    HF_HUB_DISABLE_TELEMETRY="1",
    TRANSFORMERS_OFFLINE="1",
    CI="true",
    TOKENIZERS_PARALLELISM="false",
    TRANSFORMERS_VERBOSITY="error",
)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per trainer")
    parser.add_argument("--warmup", type=int, default=3, help="steps excluded from the mean")
    parser.add_argument("--num-candidates", type=int, default=4, help="N of Best-of-N")
    parser.add_argument("--num-generations", type=int, default=4, help="completions per prompt (both trainers)")
    parser.add_argument("--batch-size", type=int, default=16, help="completions per step")
    parser.add_argument("--max-completion-length", type=int, default=16)
    parser.add_argument("--num-prompts", type=int, default=8, help="distinct training prompts")
    parser.add_argument("--num-reference-samples", type=int, default=64, help="M for the cache build")
    return parser.parse_args()


def main():
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import RLOOConfig, RLOOTrainer

    from trl_bon import VBoNConfig, VBoNTrainer
    from trl_bon.ref_cache import build_reference_reward_cache
    from trl_bon.sampling import GenerationSettings
    from trl_bon.toy import CORPUS, build_one_token_task, build_tiny_kit

    cli = parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    root = tempfile.mkdtemp(prefix="vbon_bench_")
    kit = build_tiny_kit(os.path.join(root, "kit"))
    prompts = [" ".join(s.split()[:3]) for s in CORPUS] + ["the dog", "a robot"]
    dataset = Dataset.from_dict({"prompt": (prompts[: cli.num_prompts] * 64)[:256]})

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.start)

    common = dict(
        max_completion_length=cli.max_completion_length,
        num_generations=cli.num_generations,
        per_device_train_batch_size=cli.batch_size,
        max_steps=cli.steps,
        learning_rate=1e-3,
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_steps=cli.steps,
        disable_tqdm=True,
        seed=0,
    )
    settings = GenerationSettings(max_completion_length=cli.max_completion_length)

    # 1. Cache build throughput
    m = cli.num_reference_samples
    start = time.perf_counter()
    build_reference_reward_cache(
        kit["policy"], dataset, kit["reward"], m, os.path.join(root, "cache"), settings=settings, progress=False
    )
    seconds = time.perf_counter() - start
    n_prompts = len(set(dataset["prompt"]))
    print(
        f"cache build, tiny kit: {n_prompts} prompts x M={m} = {n_prompts * m} completions "
        f"(<= {cli.max_completion_length} tokens) + RM scoring in {seconds:.2f} s -> "
        f"{n_prompts * m / seconds:.0f} completions/s"
    )
    task = build_one_token_task(os.path.join(root, "one_token"))
    start = time.perf_counter()
    build_reference_reward_cache(
        task.model_path,
        task.dataset(1),
        task.reward_func,
        2000,
        os.path.join(root, "cache_1tok"),
        settings=GenerationSettings(max_completion_length=1),
        batch_size=500,
        progress=False,
    )
    seconds = time.perf_counter() - start
    print(f"cache build, one-token task: 1 prompt x M=2000 in {seconds:.2f} s -> {2000 / seconds:.0f} completions/s")

    # 2. Step times
    beta = 1.0 / (cli.num_candidates - 1)
    results = {}
    runs = [
        ("RLOOTrainer", RLOOTrainer, RLOOConfig(os.path.join(root, "rloo"), beta=beta, **common)),
        (
            "VBoNTrainer l1",
            VBoNTrainer,
            VBoNConfig(
                os.path.join(root, "vbon_l1"),
                num_candidates=cli.num_candidates,
                reference_cache_dir=os.path.join(root, "cache"),
                **common,
            ),
        ),
        (
            "VBoNTrainer exact",
            VBoNTrainer,
            VBoNConfig(
                os.path.join(root, "vbon_exact"),
                num_candidates=cli.num_candidates,
                vbon_objective="exact",
                reference_cache_dir=os.path.join(root, "cache"),
                **common,
            ),
        ),
    ]
    for name, trainer_cls, args in runs:
        timer = StepTimer()
        trainer = trainer_cls(kit["policy"], kit["reward"], args=args, train_dataset=dataset, callbacks=[timer])
        trainer.train()
        steady = timer.times[cli.warmup :]
        results[name] = sum(steady) / len(steady)
        print(
            f"{name:18s} mean step {1000 * results[name]:7.1f} ms over {len(steady)} steps "
            f"({cli.batch_size} completions/step, {cli.num_generations}/prompt)"
        )
    base = results["RLOOTrainer"]
    for name in ("VBoNTrainer l1", "VBoNTrainer exact"):
        print(f"ratio {name} / RLOOTrainer: {results[name] / base:.3f}")


if __name__ == "__main__":
    main()
