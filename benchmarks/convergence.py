# /// script
# requires-python = ">=3.11"
# dependencies = ["trl-bon[plot]"]
# ///
"""Convergence benchmark: every method's recipe × seeds through the project's CLI, then the comparison tables.

Runs, for each seed, each variant below as `trl-bon <method> --config <run>/config.yaml` (TRL's RLOO as
`python -m trl.scripts.rloo`, the same script as `trl rloo`), where `config.yaml` is the method's recipe
(`recipes/<method>/<task recipe>.yaml`) with the variant's changes, written into the run folder before the run. Each
run saves checkpoints along the way (`save_steps`); then one `trl-bon eval` per seed evaluates every checkpoint of
that seed on the held-out prompts (reference samples, Best-of-N points, KL, win rates), with the VADER judge
(`recipes.rewards.vader_judge`, `--judge_funcs`) scoring the very same samples. The tables pool the seeds.

    python benchmarks/convergence_setup.py                         # once: builds the task (minutes)
    OMP_NUM_THREADS=1 python benchmarks/convergence.py --seeds 0 1 2 --jobs 2   # the protocol (13 variants × 3 seeds)
    python benchmarks/convergence.py --seeds 0 --variants jbond_eta0.02 rloo_beta0.03   # a subset
    python benchmarks/convergence.py --seeds 0 1 2 --report        # print the tables of what finished
    python benchmarks/convergence.py --seeds 0 --name sweeps --variants jbond_fixed_forward jbond_lr3e-5   # SWEEPS
    python benchmarks/convergence.py --smoke                       # ~2 min: one tiny run per method, 1 seed

Resumable run by run: a run is finished when its `done.json` exists; a run folder without it (interrupted) is
deleted and the run redone; an evaluation is redone when the set of finished checkpoints of its seed changed.
Outputs: `<task>/runs/<protocol>/seed<S>/<variant>/` (checkpoints, config.yaml, done.json, log.txt),
`seed<S>/eval/` (`results.json` of `trl-bon eval`), `report.json` (the tables' numbers).
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml


REPO = Path(__file__).resolve().parents[1]
# --task: recipes/<method>/convergence_<task>.yaml (and recipes/eval/...), the folder its setup script builds, and the
# setup steps that must have finished
TASKS = {
    "gpt2_tiny": (".cache/trl-bon-convergence", "convergence_setup.py", ("pretrain", "prompts", "reward", "judge")),
    "smollm2": (".cache/trl-bon-replication", "replication_setup.py", ("policy", "prompts", "reward", "judge")),
}
DEFAULT_TASK = "gpt2_tiny"


def bon_sft(n: int) -> tuple[str, dict]:  # its prompts: see run_config (the online runs' sampling budget / N)
    return "bon_sft", {"num_candidates": n}


VARIANTS = {
    "jbond_eta0.02": ("jbond", {}),
    "jbond_eta0.1": ("jbond", {"anchor_ema_rate": 0.1}),
    "jbond_periodic50": ("jbond", {"anchor": "periodic", "anchor_update_period": 50}),
    "jbond_fixed": ("jbond", {"anchor": "fixed"}),
    "vbon_n4": ("vbon", {"num_candidates": 4}),
    "vbon_n8": ("vbon", {"num_candidates": 8}),
    "bon_sft_n4": bon_sft(4),
    "bon_sft_n8": bon_sft(8),
    "bon_sft_n16": bon_sft(16),
    **{f"rloo_beta{b:g}": ("rloo", {"beta": b}) for b in (0.01, 0.03, 0.1, 0.3)},
}
# Sweeps: not part of the protocol (`--variants` runs them, best into their own `--name` folder). Each changes J-BOND's
# recipe to test one explanation of the policies' distance to the Best-of-N curve. With the fixed anchor the target is
# exactly Best-of-2 of π_ref, so the distance to it is measured directly: gradient noise (a lower learning rate, twice
# the prompts per step), the estimator (forward term only, Jeffreys β = 0: maximum likelihood on Best-of-2 samples;
# backward term only, β = 1), the pull to the anchor (γ = anchor_kl_coef, eq. 19). And RLOO without dropout.
SWEEPS = {
    "jbond_fixed_lr3e-5": ("jbond", {"anchor": "fixed", "learning_rate": 3e-5}),
    "jbond_fixed_forward": ("jbond", {"anchor": "fixed", "jeffreys_beta": 0.0}),
    "jbond_fixed_backward": ("jbond", {"anchor": "fixed", "jeffreys_beta": 1.0}),
    "jbond_lr3e-5": ("jbond", {"learning_rate": 3e-5}),
    "jbond_batch64": ("jbond", {"per_device_train_batch_size": 192}),
    "jbond_gamma0.1": ("jbond", {"anchor_kl_coef": 0.1}),
    # TRL's RLOO keeps the policy's dropout on by default (J-BOND and vBoN force it off): what does that cost RLOO?
    **{f"rloo_beta{b:g}_nodropout": ("rloo", {"beta": b, "disable_dropout": True}) for b in (0.03, 0.1)},
}
RUNNABLE = {**VARIANTS, **SWEEPS}
SMOKE_VARIANTS = ("jbond_eta0.02", "vbon_n4", "bon_sft_n4", "rloo_beta0.03")
# Smoke size: a few steps of a few prompts, 8-token completions; applied on top of every variant.
SMOKE = {
    "train": {
        "max_completion_length": 8,
        "max_steps": 2,
        "save_steps": 1,
        "logging_steps": 1,
        "datasets": [{"path": "prompts", "split": "train[:12]"}],
    },
    "jbond": {"per_device_train_batch_size": 6},
    "vbon": {"per_device_train_batch_size": 4, "num_reference_samples": 3},
    "rloo": {"per_device_train_batch_size": 4},
    "bon_sft": {"per_device_train_batch_size": 4, "num_train_epochs": 1, "max_steps": -1},
    "eval": {"num_prompts": 6, "num_reference_samples": 9, "bon_ns": [2, 4, 8], "max_completion_length": 8},
}
COMMANDS = {
    "jbond": ["-m", "trl_bon.scripts.cli", "jbond"],
    "vbon": ["-m", "trl_bon.scripts.cli", "vbon"],
    "bon_sft": ["-m", "trl_bon.scripts.cli", "bon-sft"],
    "rloo": ["-m", "trl.scripts.rloo"],
    "eval": ["-m", "trl_bon.scripts.cli", "eval"],
    "cache": ["-m", "trl_bon.scripts.cli", "cache-ref-rewards"],
}
JUDGE = "vader"  # evaluation-only judge: `trl-bon eval --judge_funcs vader=recipes.rewards.vader_judge.compound`


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--task",
        default=DEFAULT_TASK,
        choices=tuple(TASKS),
        help="gpt2_tiny: convergence_setup.py's 1.1M-parameter GPT-2; smollm2: replication_setup.py's SmolLM2-135M",
    )
    parser.add_argument("--task-dir", default=None, help="the folder the task's setup script built (default ~/<its>)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--variants",
        nargs="+",
        default=None,
        choices=tuple(RUNNABLE),
        help="default: the protocol's 13 (sweeps only when named)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny runs of one variant per method (tests)")
    parser.add_argument("--name", default=None, help="output folder under <task>/runs (default: protocol / smoke)")
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop every online run after this many optimizer steps, with as many prompts as they use (the vBoN "
        "cache shrinks to match); BoN-SFT gets the completions a J-BOND run of as many steps samples; output folder "
        "steps<N>",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs trained at the same time (with OMP_NUM_THREADS=1, one per core); a seed's vBoN runs share its "
        "reference cache, so they run one after the other",
    )
    parser.add_argument("--skip-eval", action="store_true", help="only train")
    parser.add_argument("--report", action="store_true", help="only print the tables of finished evaluations")
    parser.add_argument(
        "--from",
        dest="sources",
        nargs="+",
        default=None,
        help="with --report: pool each seed's evaluations from these folders under <task>/runs (a seed's evaluations "
        "share its prompts and reference samples), keeping only --variants if named; the tables, pooled.json and "
        "figures go to --name",
    )
    args = parser.parse_args(argv)
    if args.sources and not args.report:
        parser.error("--from only works with --report")
    return args


def log(message: str) -> None:
    print(f"[convergence {time.strftime('%H:%M:%S')}] {message}", flush=True)


def recipe(method: str, task_name: str = DEFAULT_TASK) -> dict:
    return yaml.safe_load((REPO / "recipes" / method / f"convergence_{task_name}.yaml").read_text())


def run_config(
    variant: str, seed: int, run_dir: Path, smoke: bool, max_steps: int | None = None, task_name: str = DEFAULT_TASK
) -> dict:
    """The method's recipe with the variant's changes (and the smoke size or a step cap), for one seed and run."""
    method, changes = RUNNABLE[variant]
    config = {**recipe(method, task_name), **changes, "seed": seed, "output_dir": str(run_dir)}
    if method == "bon_sft":  # what a J-BOND run of as many steps samples (steps x batch), on budget / N prompts
        online = recipe("jbond", task_name)
        steps = online["max_steps"] if max_steps is None else max_steps
        prompts = steps * online["per_device_train_batch_size"] // config["num_candidates"]
        config["datasets"] = [{"path": "prompts", "split": f"train[:{prompts}]"}]
    if smoke:
        config.update({**SMOKE["train"], **SMOKE[method]})
    if max_steps is not None and method != "bon_sft":
        config["max_steps"] = max_steps
        prompts = max_steps * config["per_device_train_batch_size"] // completions_per_prompt(method, config)
        config["datasets"] = [{"path": "prompts", "split": f"train[:{prompts}]"}]
    if "datasets" in config:
        config.pop("dataset_name", None)
    if method == "vbon":  # one reference-reward cache per seed, shared by every N (it does not depend on N)
        config["reference_cache_dir"] = str(run_dir.parent / "vbon_reference_rewards")
    return config


def execute(command: list[str], config: dict, folder: Path, task: Path, extra=()) -> dict:
    """Write `config.yaml` into `folder`, run `python <command> --config it` from the task folder; return its wall
    and CPU seconds (CPU time, user + system, is what an idle machine would spend; wall time depends on the load)
    and peak memory."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = dict(os.environ, TRL_BON_LAUNCH="0", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_DISABLED="true")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), str(task / "site"), env.get("PYTHONPATH")) if p)
    argv = [sys.executable, *command, "--config", str(folder / "config.yaml"), *extra]
    start = time.perf_counter()
    with open(folder / "log.txt", "a") as out:
        out.write("$ " + " ".join(argv) + "\n")
        out.flush()
        proc = subprocess.Popen(argv, cwd=task, env=env, stdout=out, stderr=subprocess.STDOUT)
        # this child's own CPU time: RUSAGE_CHILDREN would also count the other jobs' runs that end meanwhile
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        tail = (folder / "log.txt").read_text().splitlines()[-30:]
        raise SystemExit(
            f"{' '.join(argv)} failed (exit {proc.returncode}); log {folder / 'log.txt'}:\n" + "\n".join(tail)
        )
    # ru_maxrss: the run's peak resident memory (KiB on Linux), what a recipe's "expected peak memory" should say
    return {
        "wall": time.perf_counter() - start,
        "cpu": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,
    }


def train(
    variant: str,
    seed: int,
    out: Path,
    task: Path,
    smoke: bool,
    max_steps: int | None = None,
    task_name: str = DEFAULT_TASK,
) -> dict:
    run_dir = out / f"seed{seed}" / variant
    done = run_dir / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    if run_dir.exists():
        log(f"{run_dir} was interrupted: deleting it and running again")
        shutil.rmtree(run_dir)
    method = RUNNABLE[variant][0]
    config = run_config(variant, seed, run_dir, smoke, max_steps, task_name)
    log(f"seed {seed} {variant}: training")
    seconds = {}
    if method == "vbon":
        seconds["reference_cache"] = execute(COMMANDS["cache"], config, run_dir, task)
    seconds["train"] = execute(COMMANDS[method], config, run_dir, task)
    info = {"variant": variant, "method": method, "seed": seed, "seconds": seconds, "budget": budget(method, config)}
    done.write_text(json.dumps(info, indent=2))
    log(f"seed {seed} {variant}: {seconds}")
    return info


def train_all(
    seeds,
    variants,
    out: Path,
    task: Path,
    smoke: bool,
    max_steps: int | None,
    jobs: int,
    task_name: str = DEFAULT_TASK,
) -> dict:
    """Every (seed, variant) run, `jobs` at a time; a seed's vBoN variants form one chain (they share the seed's
    reference cache, which the first one builds). Returns {"seed<S>/<variant>": done.json}."""
    vbon = [v for v in variants if RUNNABLE[v][0] == "vbon"]
    chains = []
    for variant in variants:  # variant by variant, each over all seeds: a stopped protocol has whole variants
        if variant not in vbon:
            chains += [[(seed, variant)] for seed in seeds]
        elif variant == vbon[0]:
            chains += [[(seed, v) for v in vbon] for seed in seeds]

    def run_chain(chain):
        return {f"seed{seed}/{v}": train(v, seed, out, task, smoke, max_steps, task_name) for seed, v in chain}

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        done = [future.result() for future in [pool.submit(run_chain, chain) for chain in chains]]
    return {key: info for part in done for key, info in part.items()}


def budget(method: str, config: dict) -> dict:
    """Completions sampled per optimizer step and prompts per step, from the run's config."""
    if method == "bon_sft":
        split = config["datasets"][0]["split"]
        prompts = int(split.split(":")[1].rstrip("]"))
        return {
            "prompts_per_step": config["per_device_train_batch_size"],
            "completions_sampled": prompts * config["num_candidates"],
        }
    batch = config["per_device_train_batch_size"]
    prompts = batch // completions_per_prompt(method, config)
    return {"prompts_per_step": prompts, "completions_per_step": batch, "steps": config["max_steps"]}


def completions_per_prompt(method: str, config: dict) -> int:
    """Completions in a training batch per prompt: J-BOND's 1 policy + 2 anchor samples, BoN-SFT's one best
    sample, vBoN's and RLOO's `num_generations`."""
    return {"jbond": 3, "bon_sft": 1}.get(method, config.get("num_generations", 2))


def evaluate(
    seed: int, variants: list[str], out: Path, task: Path, smoke: bool, task_name: str = DEFAULT_TASK
) -> dict | None:
    """`trl-bon eval` of every finished checkpoint of one seed, the judge scoring the same samples."""
    entries = [f"{v}={out / f'seed{seed}' / v}" for v in variants if (out / f"seed{seed}" / v / "done.json").is_file()]
    if not entries:
        return None
    config = {**recipe("eval", task_name), "seed": seed}
    config["no_progress"] = True
    if smoke:
        config.update(SMOKE["eval"])
    config["checkpoints"] = entries
    config["judge_funcs"] = [f"{JUDGE}=recipes.rewards.vader_judge.compound"]
    folder = out / f"seed{seed}" / "eval"
    marker = folder / "results.json"
    if not (marker.is_file() and json.loads((folder / "checkpoints.json").read_text()) == entries):
        log(f"seed {seed}: trl-bon eval of {len(entries)} runs")
        execute(COMMANDS["eval"], {**config, "output_dir": str(folder)}, folder, task)
        (folder / "checkpoints.json").write_text(json.dumps(entries))
    return json.loads(marker.read_text())


# ---------------------------------------------------------------------------------------------------------------
# Tables: mean ± standard error over seeds


def load_evaluations(folders: list[Path], seed: int, variants: list[str] | None) -> dict | None:
    """One seed's finished `trl-bon eval` results from one or more run folders, as one: their checkpoints pooled
    (only the named variants' if given). Pooling is only sound against the same reference samples: the same recorded
    settings (seed, M, generation, reward model, judges) and, since the prompt split is not among them, the same
    reference reward."""
    found = [f / f"seed{seed}" / "eval" / "results.json" for f in folders]
    results = [json.loads(path.read_text()) for path in found if path.is_file()]
    if not results:
        return None
    if len({json.dumps([r["settings"], r["reference"]["reward"]], sort_keys=True) for r in results}) > 1:
        raise SystemExit(
            f"seed {seed}: the evaluations in {', '.join(map(str, folders))} used different reference "
            "samples (another eval recipe or task), so they cannot be pooled"
        )
    rows = [
        row for r in results for row in r["checkpoints"] if not variants or row["name"].rsplit("@", 1)[0] in variants
    ]
    return {**results[0], "checkpoints": rows}


def mean_sem(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sem = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else None  # one seed: no spread
    return mean, sem


def fmt(values: list[float]) -> str:
    mean, sem = mean_sem(values)
    return f"{mean:6.3f}±{sem:5.3f}" if sem is not None else f"{mean:6.3f}      "


def points_of(results: dict) -> dict:
    """{checkpoint name: row} of one seed's evaluation, with the judge's mean score and win rate as `judge` and
    `judge_win`."""
    return {
        row["name"]: {**row, "judge": row[JUDGE], "judge_win": row[f"{JUDGE}_win_rate_vs_ref"]}
        for row in results["checkpoints"]
    }


def pareto(points: list[tuple[str, float, float]]) -> set[str]:
    """Names of the points not dominated in (lower KL, higher y)."""
    return {
        name for name, kl, y in points if not any((k <= kl and v >= y) and (k < kl or v > y) for _, k, v in points)
    }


def step_of(name: str) -> int:
    step = name.rsplit("@", 1)[1]
    return 10**9 if step == "final" else int(step)


def tables(per_seed: dict) -> tuple[str, dict]:
    """The printed report and its numbers, from {seed: results.json of the seed's evaluation}."""
    seeds = sorted(per_seed)
    points = {s: points_of(per_seed[s]) for s in seeds}
    names = sorted({n for s in seeds for n in points[s]}, key=lambda n: (n.split("@")[0], step_of(n)))
    ns = per_seed[seeds[0]]["settings"]["bon_ns"]
    lines = [f"seeds {seeds}; mean ± standard error over seeds (KL k1 = KL(π‖π_ref) on completion tokens)", ""]
    header = f"{'point':26} {'seeds':>5} {'KL':>12} {'reward':>12} {'win/ref':>12} {'judge win':>12} {'gap':>12}"
    lines += ["Reward, win rate and judge vs KL (gap = reward win rate − judge win rate, both vs π_ref)", header]
    report = {"points": {}, "bon": {}}
    ref = [per_seed[s]["reference"] for s in seeds]
    ref_judge = [per_seed[s]["reference"][f"{JUDGE}_win_rate_vs_ref"] for s in seeds]
    lines.append(
        f"{'π_ref':26} {len(seeds):5} {fmt([0.0] * len(seeds)):>12} {fmt([r['reward'] for r in ref])} "
        f"{fmt([r['win_rate_vs_ref'] for r in ref])} {fmt(ref_judge)}"
    )
    for n in ns:
        bon = [next(b for b in per_seed[s]["bon"] if b["n"] == n) for s in seeds]
        report["bon"][n] = {"kl_bound": bon[0]["kl_bound"], "reward": mean_sem([b["reward"] for b in bon])}
        lines.append(
            f"{f'BoN-{n}':26} {len(seeds):5} {fmt([b['kl_bound'] for b in bon])} {fmt([b['reward'] for b in bon])} "
            f"{fmt([b['win_rate_vs_ref'] for b in bon])}"
        )
    for name in names:
        rows = [points[s][name] for s in seeds if name in points[s]]
        cols = {k: [r[k] for r in rows] for k in ("kl_k1", "reward", "win_rate_vs_ref", "judge_win")}
        gap = [r["win_rate_vs_ref"] - r["judge_win"] for r in rows]
        report["points"][name] = {k: mean_sem(v) for k, v in {**cols, "gap": gap}.items()}
        lines.append(f"{name:26} {len(rows):5} " + " ".join(fmt(v) for v in (*cols.values(), gap)))

    lines += [
        "",
        "Win rate against BoN_N at matched KL: each variant's last checkpoint with KL ≤ KL(BoN_N) "
        "(the bound log N − (N−1)/N), per seed; 0.5 = as good as BoN_N; '-' = none that close",
    ]
    table_ns = [n for n in ns if n in (2, 4, 8, 16)]
    lines.append(f"{'variant':26} " + " ".join(f"{f'vs BoN-{n}':>17}" for n in table_ns))
    variants = sorted({n.split("@")[0] for n in names})
    report["matched"] = {}
    for variant in variants:
        cells = []
        for n in table_ns:
            bound = math.log(n) - (n - 1) / n
            wins, steps = [], []
            for s in seeds:
                ok = [
                    (step_of(k), r) for k, r in points[s].items() if k.split("@")[0] == variant and r["kl_k1"] <= bound
                ]
                if ok:
                    step, row = max(ok, key=lambda item: item[0])
                    wins.append(row[f"win_rate_vs_bon{n}"])
                    steps.append(step)
            report["matched"][f"{variant}/{n}"] = {"win": wins, "steps": steps}
            cells.append(f"{fmt(wins)} ({len(wins)})" if wins else f"{'-':>17}")
        lines.append(f"{variant:26} " + " ".join(f"{c:>17}" for c in cells))

    lines += [
        "",
        "Pareto front (lower KL, higher y; pooling π_ref, BoN_N at its bound and every checkpoint), per seed: "
        "share of each variant's points on the front",
    ]
    front_share = {}
    for key in ("reward", "win_rate_vs_ref"):
        for s in seeds:
            pool = [("π_ref", 0.0, per_seed[s]["reference"][key])]
            pool += [(f"BoN-{b['n']}", b["kl_bound"], b[key]) for b in per_seed[s]["bon"]]
            pool += [(k, max(r["kl_k1"], 0.0), r[key]) for k, r in points[s].items()]
            front = pareto(pool)
            for name, _, _ in pool:
                group = name.split("@")[0] if "@" in name else ("BoN" if name.startswith("BoN") else name)
                on, total = front_share.get(group, (0, 0))
                front_share[group] = (on + (name in front), total + 1)
    report["pareto"] = front_share
    lines.append(", ".join(f"{g} {on}/{total}" for g, (on, total) in sorted(front_share.items())))
    return "\n".join(lines), report


POOLED = ("reward", "win_rate_vs_ref", "kl_k1", "kl_k3", "kl_estimate", JUDGE, f"{JUDGE}_win_rate_vs_ref")
FIGURES = (
    ("reward", "mean reward (reward model)", "reward_vs_kl.png"),
    ("win_rate_vs_ref", "win rate vs π_ref (reward model, ties ½)", "win_rate_vs_kl.png"),
    # (key, y label, file, title): the judge's figure says in its title that it is not the reward model's win rate
    (f"{JUDGE}_win_rate_vs_ref", "win rate vs π_ref (VADER, ties ½)", "judge_vs_kl.png", "VADER judge vs KL"),
)


def pooled(per_seed: dict) -> dict:
    """One evaluation result (`trl-bon eval`'s results.json schema) averaging the seeds: each number is the mean over
    the seeds that have it, and its `<key>_sem` the standard error over seeds (with one seed, the evaluation's own
    standard error over prompts), so `trl_bon.plotting.plot_pareto` and `trl-bon plot` draw it with error bars."""

    def pool(rows: list[dict]) -> dict:
        out = {k: v for k, v in rows[0].items() if not isinstance(v, float)}
        for key in POOLED:
            values = [r[key] for r in rows if key in r]
            if values:
                mean, sem = mean_sem(values)
                out[key] = mean
                out[f"{key}_sem"] = sem if sem is not None else rows[0].get(f"{key}_sem", 0.0)
        out.update({k: rows[0][k] for k in ("n", "kl_bound") if k in rows[0]})
        return out

    seeds = sorted(per_seed)
    names = sorted({row["name"] for s in seeds for row in per_seed[s]["checkpoints"]})
    by_name = {s: {row["name"]: row for row in per_seed[s]["checkpoints"]} for s in seeds}
    ns = per_seed[seeds[0]]["settings"]["bon_ns"]
    return {
        "checkpoints": [pool([by_name[s][n] for s in seeds if n in by_name[s]]) for n in names],
        "bon": [pool([next(b for b in per_seed[s]["bon"] if b["n"] == n) for s in seeds]) for n in ns],
        "reference": pool([per_seed[s]["reference"] for s in seeds]),
        "settings": {**per_seed[seeds[0]]["settings"], "seeds": seeds},
    }


def figures(per_seed: dict, out: Path) -> dict:
    """The pooled results (`pooled.json`) and their reward / win-rate / judge vs KL figures in `out/figures/`."""
    from trl_bon.plotting import plot_pareto

    results = pooled(per_seed)
    (out / "pooled.json").write_text(json.dumps(results, indent=2))
    return plot_pareto(results, out / "figures", metrics=FIGURES, log_x=True)


def main(argv=None):
    args = parse_args(argv)
    home, setup, steps = TASKS[args.task]
    task = Path(args.task_dir or Path.home() / home).expanduser().resolve()
    for step in steps:
        if not (task / "steps" / f"{step}.json").is_file():
            raise SystemExit(f"{task} is not a built task (step {step!r} missing): run benchmarks/{setup}")
    variants = list(args.variants or (SMOKE_VARIANTS if args.smoke else VARIANTS))
    default_name = "smoke" if args.smoke else f"steps{args.max_steps}" if args.max_steps else "protocol"
    out = task / "runs" / (args.name or default_name)
    per_seed, timings = {}, {}
    if not args.report:
        timings = train_all(args.seeds, variants, out, task, args.smoke, args.max_steps, args.jobs, args.task)
    if args.report:
        folders = [task / "runs" / name for name in args.sources] if args.sources else [out]
        loaded = {seed: load_evaluations(folders, seed, args.variants) for seed in args.seeds}
        per_seed = {seed: results for seed, results in loaded.items() if results}
    elif not args.skip_eval:  # the seeds' evaluations run `jobs` at a time, like the training runs
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            evaluations = pool.map(lambda seed: evaluate(seed, variants, out, task, args.smoke, args.task), args.seeds)
            per_seed = {seed: results for seed, results in zip(args.seeds, evaluations) if results}
    if not per_seed:
        log("no finished evaluation to report")
        return None
    text, report = tables(per_seed)
    budgets = {v: t["budget"] for v, t in timings.items()}
    if budgets:
        text += "\n\nSampling budget per run: " + "; ".join(f"{v}: {b}" for v, b in budgets.items())
        text += "\nSeconds per run (wall, CPU): " + "; ".join(f"{v}: {t['seconds']}" for v, t in timings.items())
    print(text, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    for name, path in figures(per_seed, out).items():
        log(f"figure {name}: {path}")
    (out / "report.json").write_text(
        json.dumps({"report": report, "runs": timings, "text": text}, indent=2, default=str)
    )
    return report


if __name__ == "__main__":
    main()
