"""What limits Best-of-N distillation on the convergence task: one change at a time, on a pool of training prompts.

    python benchmarks/distillation_limits.py --runs trainer minimal --seeds 0 1        # train (resumable)
    python benchmarks/distillation_limits.py --runs trainer minimal --seeds 0 1 --eval # + evaluate every checkpoint
    python benchmarks/distillation_limits.py --runs trainer minimal --seeds 0 1 --report \
        --export benchmarks/data/limits                                                  # the evidence, committed

Every run trains on the same P prompts (`--pool`, default 64, drawn once with seed 0 from the task's training split
into `<task>/pool<P>/`) and is evaluated on those same prompts, so prompt generalisation is out of the question: a
policy that stays short of its Best-of-N target there is limited by optimisation or by what it can represent. Each
run is the fixed-anchor J-BOND recipe (`recipes/jbond/convergence_gpt2_tiny.yaml` with `anchor: fixed`), whose
target is exactly Best-of-2 of π_ref, with ONE change (`RUNS`). `minimal` is the plain-PyTorch control
(`minimal_jbond_pool.py`, the same maths without TRL): if it goes further than `trainer`, the difference is ours.

The evaluation (`trl-bon eval`, the eval recipe on the pool: M reference samples per prompt, BoN N = 2 and 4) scores
each checkpoint with the run's own reward and evaluates π_ref as a checkpoint too, so every KL(π‖BoN-2) estimate
sits next to the estimator's value on π_ref, whose exact value is 1 − log 2 = 0.307 nats.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import convergence  # noqa: E402  (the convergence driver: recipes, `execute`, the task folder)


REPO = convergence.REPO
CHAR_WEIGHTS = "recipes.rewards.char_weights.char_weights"
VADER = "recipes.rewards.vader_judge.compound"

#: A policy twice as wide (256; 3.7M parameters against 1.1M), pretrained the same way, for the capacity run:
#: `python benchmarks/convergence_setup.py --cache-dir ~/.cache/trl-bon-convergence-w256 --width 256` (its own reward
#: model is not used: every run is scored by the task's reward). Relative to the task folder.
WIDE_POLICY = "../trl-bon-convergence-w256/policy"
#: Twice as deep (8 layers × 128; 1.9M parameters) and four times as wide (512; 13M), pretrained the same way
#: (`--layers 8` / `--width 512` into `-d8` / `-w512`). Their setups can reuse the task's data, tokenizer and reward
#: steps (copy `wheels site data reward policy/tokenizer*` and those `steps/*.json`): only pretraining differs.
DEEP_POLICY = "../trl-bon-convergence-d8/policy"
WIDE4_POLICY = "../trl-bon-convergence-w512/policy"

#: name → (trainer, changes to the fixed-anchor J-BOND recipe, the reward functions if not the task's reward model)
RUNS = {
    "trainer": ("jbond", {}, None),
    "minimal": ("minimal", {}, None),
    "trainer_lr3e-4": ("jbond", {"learning_rate": 3e-4}, None),
    "trainer_dense": ("jbond", {}, CHAR_WEIGHTS),
    "trainer_dense_lr3e-4": ("jbond", {"learning_rate": 3e-4}, CHAR_WEIGHTS),
    # the dense run's KL plateau above Best-of-2's: does a smaller step (less SGD noise) lower it?
    "trainer_dense_lr5e-5": ("jbond", {"learning_rate": 5e-5}, CHAR_WEIGHTS),
    "trainer_wide": ("jbond", {"model_name_or_path": WIDE_POLICY}, None),
    "trainer_deep": ("jbond", {"model_name_or_path": DEEP_POLICY}, None),
    "trainer_wide4": ("jbond", {"model_name_or_path": WIDE4_POLICY}, None),
    "trainer_vader": ("jbond", {}, VADER),
    "trainer_vader_half_ties": ("jbond", {"jbond_ties": "half"}, VADER),  # ties count half a loss in r_J
    # BOND N = 2 against π_ref with k = 8 anchor samples per prompt for its quantile: lower-variance signal, 16 prompts
    # of 1 + 8 completions per step (1.5x the J-BOND step's completions)
    # ties on VADER: BOND's quantile from k = 8 anchor samples (ties counted by the estimator), without / with the
    # tie correction log B̂ (eq. 4)
    "trainer_vader_bond_k8": (
        "jbond",
        {"mode": "bond", "num_candidates": 2, "num_quantile_samples": 8, "per_device_train_batch_size": 144},
        VADER,
    ),
    "trainer_vader_bond_k8_tie_corrected": (
        "jbond",
        {
            "mode": "bond",
            "num_candidates": 2,
            "num_quantile_samples": 8,
            "per_device_train_batch_size": 144,
            "include_tie_correction": True,
        },
        VADER,
    ),
    "trainer_bond_k8": (
        "jbond",
        {"mode": "bond", "num_candidates": 2, "num_quantile_samples": 8, "per_device_train_batch_size": 144},
        None,
    ),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=["trainer", "minimal"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--pool", type=int, default=64, help="number of training prompts trained and evaluated on")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--save-steps", type=int, default=300)
    parser.add_argument("--reference-samples", type=int, default=64, help="M of the evaluation")
    parser.add_argument("--policy-samples", type=int, default=16, help="samples per prompt of each checkpoint")
    parser.add_argument("--task-dir", type=Path, default=Path.home() / convergence.TASKS["gpt2_tiny"][0])
    parser.add_argument("--eval", action="store_true", help="evaluate every finished run")
    parser.add_argument("--report", action="store_true", help="print the table of what was evaluated")
    parser.add_argument("--export", type=Path, help="copy each evaluated run's training log and evaluation here")
    return parser.parse_args(argv)


#: Prompts in one step of the recipe (96 rows of 1 policy + 2 anchor completions); a smaller pool is repeated in the
#: training split so that a step keeps its shape (a prompt then gets two groups of three completions in a step).
STEP_PROMPTS = 32


def write_pool(task: Path, size: int) -> str:
    """`<task>/pool<size>/{train,test}.jsonl`: the same `size` training prompts (seed 0) in both splits; the training
    split repeats them up to `STEP_PROMPTS` rows when the pool is smaller than a step."""
    import random

    folder = task / f"pool{size}"
    if not (folder / "test.jsonl").is_file() or not (folder / "train.jsonl").is_file():
        rows = (task / "prompts" / "train.jsonl").read_text().splitlines()
        random.Random(0).shuffle(rows)
        pool = rows[:size]
        folder.mkdir(exist_ok=True)
        repeats = -(-STEP_PROMPTS // size)  # ceil
        (folder / "train.jsonl").write_text("\n".join(pool * repeats) + "\n")
        (folder / "test.jsonl").write_text("\n".join(pool) + "\n")
    return folder.name


def run_dir(task: Path, pool: str, name: str, seed: int) -> Path:
    return task / "runs" / "limits" / pool / f"{name}_s{seed}"


def train_config(name: str, seed: int, pool: str, steps: int, save_steps: int, folder: Path) -> dict:
    """The fixed-anchor J-BOND recipe on the pool with the run's one change."""
    _, changes, reward = RUNS[name]
    config = {**convergence.recipe("jbond"), "anchor": "fixed", "dataset_name": pool, "max_steps": steps}
    config.update(save_steps=save_steps, logging_steps=20, seed=seed, output_dir=str(folder), **changes)
    if reward is not None:
        config.pop("reward_model_name_or_path")
        config["reward_funcs"] = [reward]
    return config


def train(name: str, seed: int, pool: str, args) -> None:
    folder = run_dir(args.task_dir, pool, name, seed)
    if (folder / "done.json").is_file():
        return
    convergence.log(f"{name} seed {seed}: training {args.steps} steps on {pool}")
    if RUNS[name][0] == "minimal":
        start = time.perf_counter()
        command = [
            sys.executable,
            str(REPO / "benchmarks" / "minimal_jbond_pool.py"),
            "--task-dir",
            str(args.task_dir),
        ]
        command += ["--pool", pool, "--output-dir", str(folder), "--steps", str(args.steps)]
        command += ["--save-steps", str(args.save_steps), "--seed", str(seed)]
        env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
        subprocess.run(command, check=True, env=env, cwd=args.task_dir)
        seconds = {"wall": time.perf_counter() - start}
    else:
        config = train_config(name, seed, pool, args.steps, args.save_steps, folder)
        seconds = convergence.execute(convergence.COMMANDS["jbond"], config, folder, args.task_dir)
    (folder / "done.json").write_text(json.dumps({"run": name, "seed": seed, "seconds": seconds}))


def evaluate(name: str, seed: int, pool: str, args) -> Path:
    """`trl-bon eval` of the run's checkpoints and of π_ref itself, on the pool, with the run's reward."""
    folder = run_dir(args.task_dir, pool, name, seed)
    out = folder / "eval"
    if (out / "results.json").is_file():
        return out / "results.json"
    reward = RUNS[name][2]
    policy = RUNS[name][1].get("model_name_or_path", "policy")  # π_ref of the run, relative to the task folder
    config = {**convergence.recipe("eval"), "dataset_name": pool, "num_prompts": args.pool, "seed": seed}
    config["model_name_or_path"] = policy
    config.update(bon_ns=[2, 4], num_reference_samples=args.reference_samples, no_progress=True)
    config.update(num_policy_samples=args.policy_samples, output_dir=str(out))
    config["checkpoints"] = [f"pi_ref={(args.task_dir / policy).resolve()}", f"{name}={folder}"]
    if reward is not None:
        config.pop("reward_model_name_or_path")
        config["reward_funcs"] = [reward]
    convergence.log(f"{name} seed {seed}: evaluating")
    convergence.execute(convergence.COMMANDS["eval"], config, out, args.task_dir)
    return out / "results.json"


def export(name: str, seed: int, pool: str, args, dest: Path) -> None:
    """Copy what the results page cites into the repository: the run's per-step training log as JSON lines (the
    trainer's `log_history` from its last checkpoint, or the control's `metrics.jsonl`) and its evaluation."""
    folder = run_dir(args.task_dir, pool, name, seed)
    out = dest / pool / f"{name}_s{seed}"
    out.mkdir(parents=True, exist_ok=True)
    if (folder / "metrics.jsonl").is_file():
        log = (folder / "metrics.jsonl").read_text()
    else:
        last = max(folder.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
        history = json.loads((last / "trainer_state.json").read_text())["log_history"]
        log = "".join(json.dumps(entry) + "\n" for entry in history)
    (out / "train_log.jsonl").write_text(log)
    (out / "eval.json").write_text((folder / "eval" / "results.json").read_text())


def report(results: dict[tuple[str, int], dict]) -> str:
    """One row per checkpoint: reward, KL(π‖π_ref), win rate against BoN-2 (± standard error), KL(π‖BoN-2) estimate,
    and the share of Best-of-2's reward gain over π_ref reached."""
    lines = [
        "| run | seed | checkpoint | reward | share of BoN-2 gain | KL(π‖π_ref) | win vs BoN-2 | KL(π‖BoN-2) est. |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (name, seed), result in sorted(results.items()):
        ref, bon2 = result["reference"], next(b for b in result["bon"] if b["n"] == 2)
        gain = bon2["reward"] - ref["reward"]
        lines.append(f"| BoN-2 | {seed} | – | {bon2['reward']:.3f} | 1 | ≤ {bon2['kl_bound']:.3f} | 0.5 | 0 |")
        for row in result["checkpoints"]:
            share = (row["reward"] - ref["reward"]) / gain if gain else float("nan")
            lines.append(
                f"| {name} | {seed} | {row['name']} | {row['reward']:.3f} | {share:.2f} | {row['kl_k1']:.3f} | "
                f"{row['win_rate_vs_bon2']:.3f} ± {row['win_rate_vs_bon2_sem']:.3f} | "
                f"{row['kl_to_bon2_backward']:.3f} |"
            )
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    args.task_dir = args.task_dir.expanduser()
    pool = write_pool(args.task_dir, args.pool)
    results = {}
    for name in args.runs:
        for seed in args.seeds:
            if not args.report:
                train(name, seed, pool, args)
            done = (run_dir(args.task_dir, pool, name, seed) / "done.json").is_file()
            if args.eval and done:
                evaluate(name, seed, pool, args)
            path = run_dir(args.task_dir, pool, name, seed) / "eval" / "results.json"
            if path.is_file():
                results[(name, seed)] = json.loads(path.read_text())
                if args.export:
                    export(name, seed, pool, args, args.export)
    if results:
        print(report(results))


if __name__ == "__main__":
    main()
