# /// script
# requires-python = ">=3.11"
# dependencies = ["trl-bon", "matplotlib"]
# ///
"""Offline quality replication: Best-of-N sampling vs J-BOND, vBoN, BoN-SFT and TRL RLOO on review continuation.

The papers' sentiment setup (GPT-2 IMDB policy, DistilBERT IMDB reward, 2–8-token review prefixes) rebuilt from PyPI
files by `benchmarks/replication_setup.py` (run it first): SmolLM2-135M-Instruct as π_ref, a MiniLM fresh/rotten
classifier as the reward (1-logit head: reward = log-odds of "fresh"), 2–8-token prefixes of Rotten Tomatoes snippets
as prompts, VADER as an independent judge used only in evaluation.

Every method trains a LoRA adapter (r=16, all linear layers) from π_ref on the training prompts, with the same
completion length, temperature 1, top-k 0, and the same number of completions per optimizer step (12 at `cpu` size):

| method (plot label) | what | points |
|---|---|---|
| `BoN` | Best-of-N sampling from π_ref, N = 2, 4, 8 (, 16): the target | one per N, KL log N − (N−1)/N |
| `jbond@S` | `JBondTrainer` (J-BOND, EMA anchor), 4 prompts × (1 policy + 2 anchor) per step | at steps S |
| `vbon@N` | `VBoNTrainer` (l1, KL coef 1/(N−1)), 6 prompts × 2 completions per step | one per N |
| `bon_sft@N` | `BoNSFTTrainer` (one round, N candidates per training prompt) | one per N |
| `rloo@β` | `trl.RLOOTrainer` on the raw reward, KL coef β, 6 prompts × 2 completions per step | one per β |

Evaluation (`trl_bon.evaluation.evaluate_checkpoints`, docs/maths.md §7) on held-out prompts (other movies than
training): mean reward, KL(π‖π_ref) (k1 and k3, completion tokens), win rate vs π_ref samples and vs BoN_N (ties ½),
KL to π_BoN; plus, here, the VADER judge (mean compound score of prompt + completion, and its win rate vs the π_ref
samples), the Pareto front of the pooled points (which method is non-dominated how often), and the figures
`reward_vs_kl.png`, `win_rate_vs_kl.png` (from trl_bon.plotting), `judge_vs_kl.png`, `win_rate_vs_bon.png`.

    python benchmarks/replication_setup.py                  # once (~16 min)
    python benchmarks/replication.py --size smoke           # minutes: proves the pipeline end to end
    python benchmarks/replication.py --size cpu             # ~1 h 40 min on 2 idle CPU cores
    python benchmarks/replication.py --size gpu --device cuda   # paper-size protocol, for one H100/H200 (untested)

Outputs go to `<cache-dir>/runs/<size>/` (or `--output-dir`), outside the repository: `replication.json` (all
metrics, settings, stage wall times, training logs), `eval/results.{json,csv}` and the PNGs. Stages are resumable: a
finished training run (`train/<run>/done.json`) is skipped on the next invocation; `--force` redoes everything.
"""

import argparse
import gc
import json
import os
import sys
import time
import warnings
from pathlib import Path


os.environ.update(
    HF_HUB_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    HF_HUB_DISABLE_TELEMETRY="1",
    CI="true",
    TOKENIZERS_PARALLELISM="false",
    HF_DATASETS_DISABLE_PROGRESS_BARS="1",
)
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5.23: gradient_checkpointing rename
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "trl-bon-replication")

# Sizes. Steps and batches keep the completions per optimizer step equal across the online methods:
# J-BOND: P_jb prompts x 3; vBoN / RLOO: P_rl prompts x 2 (REINFORCE-RLOO with 2 samples, as in BOND Fig. 7).
SIZES = {
    "smoke": dict(
        train_prompts=16,
        test_prompts=12,
        max_completion_length=12,
        eval_reference_samples=9,
        bon_ns=(2, 4, 8),
        policy_samples=1,
        lr=1e-4,
        jbond_prompts=2,
        jbond_steps=4,
        jbond_checkpoints=(2, 4),
        jbond_ema=0.05,
        rl_prompts=3,
        rl_steps=3,
        vbon_ns=(4,),
        vbon_reference_samples=8,
        rloo_betas=(0.05, 0.5),
        bon_sft_ns=(4,),
        bon_sft_epochs=1,
        bon_sft_batch=4,
        batch_size=64,
    ),
    "cpu": dict(
        train_prompts=256,
        test_prompts=128,
        max_completion_length=24,
        eval_reference_samples=16,
        bon_ns=(2, 4, 8),
        policy_samples=1,
        lr=1e-4,
        jbond_prompts=4,
        jbond_steps=64,
        jbond_checkpoints=(16, 32, 48, 64),
        jbond_ema=0.05,
        rl_prompts=6,
        rl_steps=40,
        vbon_ns=(4, 8),
        vbon_reference_samples=12,
        rloo_betas=(0.05, 0.2, 1.0),
        bon_sft_ns=(4, 8),
        bon_sft_epochs=2,
        bon_sft_batch=8,
        batch_size=64,
    ),
    # Paper-size protocol (vBoN IMDB: 128 rollouts/step, M ~ 300; BOND: batch 128, eval with 32 reference samples).
    # Not run here (no GPU in the session that wrote it): sized for one H100/H200, several hours.
    "gpu": dict(
        train_prompts=4096,
        test_prompts=512,
        max_completion_length=40,
        eval_reference_samples=32,
        bon_ns=(2, 4, 8, 16),
        policy_samples=4,
        lr=5e-5,
        jbond_prompts=32,
        jbond_steps=1000,
        jbond_checkpoints=(125, 250, 500, 750, 1000),
        jbond_ema=0.02,
        rl_prompts=48,
        rl_steps=600,
        vbon_ns=(4, 8, 16, 32),
        vbon_reference_samples=300,
        rloo_betas=(0.01, 0.03, 0.1, 0.3, 1.0),
        bon_sft_ns=(4, 8, 16),
        bon_sft_epochs=2,
        bon_sft_batch=32,
        batch_size=256,
    ),
}
METHODS = ("jbond", "vbon", "bon_sft", "rloo")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=tuple(SIZES), default="smoke")
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE, help="what replication_setup.py prepared")
    parser.add_argument("--output-dir", default=None, help="default: <cache-dir>/runs/<size>")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: OMP_NUM_THREADS or all)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--force", action="store_true", help="retrain and re-evaluate everything")
    parser.add_argument("--skip-eval", action="store_true", help="only train (split a long run over invocations)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting of the size, e.g. --set lr=1e-3 --set rloo_betas=0.05,0.2 (repeatable)",
    )
    parser.add_argument(
        "--tag",
        default="",
        help="suffix for the run and checkpoint names of this invocation (e.g. lr1e-3 with --set lr=1e-3), so "
        "variants train next to the default runs and are evaluated and plotted as their own methods",
    )
    parser.add_argument(
        "--report", action="store_true", help="only print the table of the finished run's replication.json again"
    )
    return parser.parse_args(argv)


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """`--set KEY=VALUE` over a size: VALUE is a Python literal; a scalar for a tuple setting becomes (VALUE,)."""
    import ast

    cfg = dict(cfg)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or key not in cfg:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(cfg)}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise SystemExit(f"--set {item!r}: {text!r} is not a number, tuple or string literal") from None
        if isinstance(cfg[key], tuple):
            value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
        elif not isinstance(value, type(cfg[key])) and not (isinstance(cfg[key], float) and isinstance(value, int)):
            raise SystemExit(f"--set {item!r}: {key} takes a {type(cfg[key]).__name__}")
        cfg[key] = value
    return cfg


def named(cli, base: str) -> str:
    """Run / method name with this invocation's `--tag`."""
    return f"{base}-{cli.tag}" if cli.tag else base


def log(message: str) -> None:
    print(f"[replication {time.strftime('%H:%M:%S')}] {message}", flush=True)


def read_jsonl(path: Path, limit: int) -> list[dict]:
    rows = []
    with open(path) as f:
        for line in f:
            if len(rows) == limit:
                break
            rows.append(json.loads(line))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Training runs


class SaveAdapterAt:
    """Save the policy adapter (only `default`, not the anchor) at the given optimizer steps."""

    def __new__(cls, steps, directory: Path):
        from transformers import TrainerCallback

        class _Save(TrainerCallback):
            def on_step_end(self, args, state, control, model=None, **kwargs):
                if state.global_step in steps:
                    model.save_pretrained(str(directory / f"step-{state.global_step}"), selected_adapters=["default"])

        return _Save()


def quiet(trainer, label: str, every: int = 10):
    """Replace Trainer's per-step log printing by one line every `every` steps (logs stay in log_history)."""
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)

    class Progress(TrainerCallback):
        start = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            step = state.global_step
            if logs and "loss" in logs and (step % every == 0 or step == state.max_steps):
                keys = ("reward", "jbond/kl_ref/k1", "jbond/win_rate_vs_anchor", "kl", "vbon/log_cdf", "loss")
                shown = ", ".join(f"{k} {logs[k]:.3g}" for k in keys if isinstance(logs.get(k), (int, float)))
                log(f"  {label} step {step}/{state.max_steps} ({time.perf_counter() - self.start:.0f}s): {shown}")

    trainer.add_callback(Progress())
    return trainer


def common_args(cfg: dict, cli, output_dir: Path) -> dict:
    cuda = cli.device == "cuda"
    return dict(
        output_dir=str(output_dir),
        use_cpu=not cuda,
        bf16=cuda,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=cli.seed,
        learning_rate=cfg["lr"],
        gradient_checkpointing=False,
        lr_scheduler_type="constant",
        warmup_steps=0,
    )


def rl_args(cfg: dict, cli, output_dir: Path) -> dict:
    return dict(
        common_args(cfg, cli, output_dir),
        max_completion_length=cfg["max_completion_length"],
        temperature=1.0,
        top_k=0,
        top_p=1.0,
    )


def model_init_kwargs(cli) -> dict | None:
    """Where models loaded outside the trainers (reference cache, evaluation) go; fp32 everywhere."""
    return {"device_map": "cuda"} if cli.device == "cuda" else None


def lora_config():
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")


def finish_run(trainer, run_dir: Path, checkpoints: dict, seconds: float, extra: dict | None = None) -> dict:
    info = {
        "checkpoints": {name: str(path) for name, path in checkpoints.items()},
        "train_seconds": seconds,
        "log_history": trainer.state.log_history,
        **(extra or {}),
    }
    (run_dir / "done.json").write_text(json.dumps(info, indent=2, default=str))
    return info


def train_jbond(cfg, cli, paths, train_ds) -> dict:
    from trl_bon import JBondConfig, JBondTrainer

    run_dir = run_dir_of(cli, paths, "jbond")
    steps = set(cfg["jbond_checkpoints"])
    args = JBondConfig(
        **rl_args(cfg, cli, run_dir),
        max_steps=cfg["jbond_steps"],
        per_device_train_batch_size=3 * cfg["jbond_prompts"],
        anchor_ema_rate=cfg["jbond_ema"],
    )
    trainer = JBondTrainer(
        paths["policy"],
        paths["reward"],
        args,
        train_ds,
        peft_config=lora_config(),
        callbacks=[SaveAdapterAt(steps, run_dir)],
    )
    quiet(trainer, named(cli, "jbond"))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    checkpoints = {f"{named(cli, 'jbond')}@{s}": run_dir / f"step-{s}" for s in sorted(steps)}
    return {named(cli, "jbond"): finish_run(trainer, run_dir, checkpoints, seconds)}


def build_vbon_cache(cfg, cli, paths, train_ds) -> tuple[str, dict]:
    from trl_bon.ref_cache import build_reference_reward_cache
    from trl_bon.sampling import GenerationSettings, Sampler

    cache_dir = paths["out"] / "train" / "vbon_reference_cache"
    start = time.perf_counter()
    sampler = Sampler(
        paths["policy"],
        GenerationSettings(max_completion_length=cfg["max_completion_length"]),
        batch_size=cfg["batch_size"],
        seed=cli.seed,
        model_init_kwargs=model_init_kwargs(cli),
        progress=False,
    )
    cache = build_reference_reward_cache(sampler, train_ds, paths["reward"], cfg["vbon_reference_samples"], cache_dir)
    seconds = time.perf_counter() - start
    return str(cache_dir), {
        "prompts": len(cache),
        "samples_per_prompt": cfg["vbon_reference_samples"],
        "seconds": seconds,
    }


def run_dir_of(cli, paths, run: str) -> Path:
    return paths["out"] / "train" / named(cli, run)


def is_done(cli, paths, run: str) -> bool:
    return (run_dir_of(cli, paths, run) / "done.json").is_file() and not cli.force


def train_final(cli, paths, run: str, method: str, value, build, extra: dict | None = None) -> tuple[str, dict]:
    """Build (construction included in the time: BoN-SFT samples there), train and keep the final adapter of one run;
    a finished run (`done.json`) is read back instead of retrained. Its checkpoint is `<method>[-tag]@<value>`."""
    run_dir = run_dir_of(cli, paths, run)
    if is_done(cli, paths, run):
        return run_dir.name, json.loads((run_dir / "done.json").read_text())
    start = time.perf_counter()
    trainer = build(run_dir)
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.model.save_pretrained(str(run_dir / "final"), selected_adapters=["default"])
    info = finish_run(trainer, run_dir, {f"{named(cli, method)}@{value}": run_dir / "final"}, seconds, extra)
    log(f"{run_dir.name}: {seconds:.0f}s")
    del trainer
    gc.collect()
    return run_dir.name, info


def train_vbon(cfg, cli, paths, train_ds) -> dict:
    from trl_bon import VBoNConfig, VBoNTrainer

    cache_dir, cache_info = None, None
    if not all(is_done(cli, paths, f"vbon_n{n}") for n in cfg["vbon_ns"]):
        log(f"vBoN: reference-reward cache, {cfg['vbon_reference_samples']} samples x {len(train_ds)} prompts")
        cache_dir, cache_info = build_vbon_cache(cfg, cli, paths, train_ds)
        log(f"vBoN: cache built in {cache_info['seconds']:.0f}s")

    def build(n):
        def trainer(run_dir):
            args = VBoNConfig(
                **rl_args(cfg, cli, run_dir),
                max_steps=cfg["rl_steps"],
                num_candidates=n,
                num_generations=2,
                per_device_train_batch_size=2 * cfg["rl_prompts"],
                reference_cache_dir=cache_dir,
            )
            return quiet(
                VBoNTrainer(paths["policy"], paths["reward"], args, train_ds, peft_config=lora_config()), f"vbon N={n}"
            )

        return trainer

    return dict(
        train_final(cli, paths, f"vbon_n{n}", "vbon", n, build(n), {"reference_cache": cache_info})
        for n in cfg["vbon_ns"]
    )


def train_bon_sft(cfg, cli, paths, train_ds) -> dict:
    from transformers import AutoTokenizer

    from trl_bon import BoNSFTConfig, BoNSFTTrainer, RewardScorer, best_of_n, bon_sft_dataset
    from trl_bon.sampling import GenerationSettings, Sampler

    def build(n):
        def trainer(run_dir):
            args = BoNSFTConfig(
                **common_args(cfg, cli, run_dir),
                num_candidates=n,
                max_completion_length=cfg["max_completion_length"],
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                num_train_epochs=cfg["bon_sft_epochs"],
                per_device_train_batch_size=cfg["bon_sft_batch"],
                generation_batch_size=cfg["batch_size"],
            )
            tokenizer = AutoTokenizer.from_pretrained(paths["policy"])
            settings = GenerationSettings.from_trainer_args(args)
            scorer = RewardScorer(paths["reward"], device=args.device)
            sampler = Sampler(
                paths["policy"],
                settings,
                tokenizer=tokenizer,
                batch_size=args.generation_batch_size,
                seed=args.seed,
                progress=False,
            )
            bon = best_of_n(sampler, train_ds["prompt"], scorer, n)
            data = bon_sft_dataset(bon, tokenizer)
            trainer = BoNSFTTrainer(paths["policy"], args=args, train_dataset=data, peft_config=lora_config())
            return quiet(trainer, f"bon_sft N={n}")

        return trainer

    return dict(train_final(cli, paths, f"bon_sft_n{n}", "bon_sft", n, build(n)) for n in cfg["bon_sft_ns"])


def train_rloo(cfg, cli, paths, train_ds) -> dict:
    from trl import RLOOConfig, RLOOTrainer

    def build(beta):
        def trainer(run_dir):
            args = RLOOConfig(
                **rl_args(cfg, cli, run_dir),
                max_steps=cfg["rl_steps"],
                num_generations=2,
                beta=beta,
                per_device_train_batch_size=2 * cfg["rl_prompts"],
            )
            return quiet(
                RLOOTrainer(paths["policy"], paths["reward"], args, train_ds, peft_config=lora_config()),
                f"rloo beta={beta:g}",
            )

        return trainer

    return dict(
        train_final(cli, paths, f"rloo_beta{beta:g}", "rloo", f"{beta:g}", build(beta)) for beta in cfg["rloo_betas"]
    )


# ---------------------------------------------------------------------------------------------------------------
# Evaluation, judge, Pareto front, figures


def pareto_front(points: list[dict], key: str) -> list[dict]:
    """Points not dominated in (lower KL, higher `key`)."""
    front = []
    for p in points:
        dominated = any(
            q is not p and q["kl"] <= p["kl"] and q[key] >= p[key] and (q["kl"] < p["kl"] or q[key] > p[key])
            for q in points
        )
        if not dominated:
            front.append(p)
    return front


def evaluate(cfg, cli, paths, test_prompts, checkpoints: dict) -> dict:
    from trl_bon.evaluation import EvalOptions, evaluate_checkpoints
    from trl_bon.rewards import RewardScorer
    from trl_bon.sampling import GenerationSettings, Sampler

    sys.path.insert(0, str(paths["site"]))
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()

    def judge(prompts, completions, **kwargs):
        """VADER compound score of prompt + completion: an independent judge of the very samples evaluated."""
        return [analyzer.polarity_scores(p + c)["compound"] for p, c in zip(prompts, completions, strict=True)]

    eval_dir = paths["out"] / "eval"
    reference = Sampler(
        paths["policy"],
        GenerationSettings(max_completion_length=cfg["max_completion_length"]),
        batch_size=cfg["batch_size"],
        seed=cli.seed,
        model_init_kwargs=model_init_kwargs(cli),
        progress=False,
    )
    options = EvalOptions(
        bon_ns=cfg["bon_ns"],
        num_reference_samples=cfg["eval_reference_samples"],
        num_policy_samples=cfg["policy_samples"],
        output_dir=eval_dir,
    )
    reward = RewardScorer(paths["reward"], device=cli.device)
    results = evaluate_checkpoints(
        checkpoints, test_prompts, reward, reference, options, judges={"judge": judge}
    ).to_dict()

    # ---- Pareto front over the pooled points (BoN at its KL bound, the papers' convention; π_ref at 0)
    points = [{"method": "reference", "name": "reference", "kl": 0.0, **results["reference"]}]
    points += [{"method": "BoN", "name": f"BoN-{b['n']}", "kl": b["kl_bound"], **b} for b in results["bon"]]
    points += [
        {"method": c["name"].split("@")[0], "name": c["name"], "kl": max(c["kl_k1"], 0.0), **c}
        for c in results["checkpoints"]
    ]
    pareto = {}
    for key in ("reward", "win_rate_vs_ref", "judge"):
        front = pareto_front(points, key)
        pareto[key] = {"front": [p["name"] for p in front]}
    methods = sorted({p["method"] for p in points})
    frequency = {}
    for method in methods:
        total = sum(p["method"] == method for p in points)
        on_front = sum(p["name"] in pareto[key]["front"] for key in pareto for p in points if p["method"] == method)
        frequency[method] = {
            "points": total,
            "on_front": on_front,
            "of": total * len(pareto),
            "fraction": on_front / (total * len(pareto)),
        }
    pareto["frequency"] = frequency
    results["pareto"] = pareto
    results["figures"] = {**results.get("files", {}), **plot_extra(results, eval_dir)}
    return results


def plot_extra(results: dict, out: Path) -> dict:
    from trl_bon.plotting import _pyplot, plot_pareto

    plt = _pyplot()
    judge = (("judge", "VADER compound (independent judge)", "judge_vs_kl.png"),)
    files = plot_pareto(results, out, metrics=judge)
    bon = results["bon"]

    # win rate against BoN_N, per checkpoint and N (0.5 = matches BoN_N; π_ref ≈ 1/(N+1))
    ns = [b["n"] for b in bon]
    rows = results["checkpoints"]
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(rows) * len(ns) / 2), 4.5))
    width = 0.8 / max(len(ns), 1)
    for j, n in enumerate(ns):
        ax.bar(
            [i + j * width for i in range(len(rows))],
            [r[f"win_rate_vs_bon{n}"] for r in rows],
            width,
            label=f"vs BoN_{n}",
        )
    ax.axhline(0.5, color="k", lw=0.8, ls="--")
    ax.set_xticks(
        [i + 0.4 - width / 2 for i in range(len(rows))], [r["name"] for r in rows], rotation=45, ha="right", fontsize=8
    )
    ax.set_ylabel("win rate vs BoN_N (ties ½)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    files["win_rate_vs_bon"] = str(out / "win_rate_vs_bon.png")
    fig.savefig(files["win_rate_vs_bon"], dpi=120)
    plt.close(fig)
    return files


def summary_table(results: dict, bon_ns) -> str:
    """The printed table: one row per point, with standard errors over held-out prompts (± columns)."""
    header = f"{'point':16} {'KL k1':>7} {'±':>5} {'reward':>7} {'±':>5} {'win/ref':>7} " + " ".join(
        f"{'w/B' + str(n):>6}" for n in bon_ns
    )
    header += f" {'judge':>6} {'j.win':>6}"
    lines = [header]
    blank = " ".join(f"{'':>6}" for _ in bon_ns)
    ref = results["reference"]
    lines.append(
        f"{'π_ref':16} {0.0:7.3f} {'':>5} {ref['reward']:7.3f} {ref['reward_sem']:5.3f} {ref['win_rate_vs_ref']:7.3f} "
        f"{blank} {ref['judge']:6.3f} {ref['judge_win_rate_vs_ref']:6.3f}"
    )
    for b in results["bon"]:
        lines.append(
            f"{'BoN-' + str(b['n']):16} {b['kl_bound']:7.3f} {'':>5} {b['reward']:7.3f} {b['reward_sem']:5.3f} "
            f"{b['win_rate_vs_ref']:7.3f} {blank} {b['judge']:6.3f} {b['judge_win_rate_vs_ref']:6.3f}"
        )
    for c in results["checkpoints"]:
        lines.append(
            f"{c['name']:16} {c['kl_k1']:7.3f} {c['kl_k1_sem']:5.3f} {c['reward']:7.3f} {c['reward_sem']:5.3f} "
            f"{c['win_rate_vs_ref']:7.3f} "
            + " ".join(f"{c[f'win_rate_vs_bon{n}']:6.3f}" for n in bon_ns)
            + f" {c['judge']:6.3f} {c['judge_win_rate_vs_ref']:6.3f}"
        )
    lines.append(
        "(KL of BoN-N: the bound log N − (N−1)/N; ±: standard error over held-out prompts; win/ref: vs the π_ref "
        "samples of the prompt; w/BN: vs the BoN_N sample, 0.5 = as good as BoN_N; judge: VADER compound; j.win: "
        "judge win rate vs π_ref)"
    )
    lines.append(
        "Pareto front (lower KL, higher y): "
        + "; ".join(f"{key}: {', '.join(v['front'])}" for key, v in results["pareto"].items() if key != "frequency")
    )
    lines.append(
        "on the front how often (over reward, win rate and judge planes): "
        + ", ".join(f"{m} {f['on_front']}/{f['of']}" for m, f in results["pareto"]["frequency"].items())
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------


def main(argv=None):
    cli = parse_args(argv)
    cfg = apply_overrides(SIZES[cli.size], cli.overrides)
    cache = Path(cli.cache_dir).expanduser().resolve()
    out = Path(cli.output_dir).expanduser().resolve() if cli.output_dir else cache / "runs" / cli.size
    repo = Path(__file__).resolve().parents[1]
    if out == repo or repo in out.parents:
        raise SystemExit(f"--output-dir {out} is inside the repository; choose a directory outside it.")
    if cli.report:
        if not (out / "replication.json").is_file():
            raise SystemExit(f"no {out / 'replication.json'} yet: run without --report first.")
        report = json.loads((out / "replication.json").read_text())
        print(summary_table(report["results"], report["config"]["bon_ns"]))
        return
    for step in ("policy", "prompts", "reward", "judge"):
        if not (cache / "steps" / f"{step}.json").is_file():
            raise SystemExit(f"{cache} is not prepared (step {step!r} missing): run benchmarks/replication_setup.py.")
    if cli.size == "gpu" and cli.device != "cuda":
        log("warning: --size gpu is the paper-size protocol for one H100/H200; on CPU it would take days")
    methods = [m.strip() for m in cli.methods.split(",") if m.strip()]  # "" = evaluate only
    if set(methods) - set(METHODS):
        raise SystemExit(f"unknown methods {set(methods) - set(METHODS)}; choose from {METHODS}")
    threads = cli.threads or int(os.environ.get("OMP_NUM_THREADS", "0")) or None
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(cli.seed)
    from datasets import Dataset
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out.mkdir(parents=True, exist_ok=True)
    paths = {"policy": str(cache / "policy"), "reward": str(cache / "reward"), "site": cache / "site", "out": out}
    train_rows = read_jsonl(cache / "data" / "prompts_train.jsonl", cfg["train_prompts"])
    test_rows = read_jsonl(cache / "data" / "prompts_test.jsonl", cfg["test_prompts"])
    train_ds = Dataset.from_dict({"prompt": [r["prompt"] for r in train_rows]})
    test_prompts = [r["prompt"] for r in test_rows]
    log(
        f"size={cli.size}: {len(train_rows)} train / {len(test_prompts)} test prompts, "
        f"{cfg['max_completion_length']} tokens, {torch.get_num_threads()} threads, output {out}"
    )

    stages = {}
    trainers = {"jbond": train_jbond, "vbon": train_vbon, "bon_sft": train_bon_sft, "rloo": train_rloo}
    for method in methods:
        marker = out / "train" / named(cli, method) / "done.json"
        if method == "jbond" and marker.is_file() and not cli.force:
            log("jbond: done before, skipped")
            continue
        start = time.perf_counter()
        log(f"training {method}")
        trainers[method](cfg, cli, paths, train_ds)
        stages[f"train_{method}"] = time.perf_counter() - start
        log(f"{method}: {stages[f'train_{method}']:.0f}s")
        gc.collect()
    if cli.skip_eval:
        log("--skip-eval: training done; run again without it (e.g. --methods '') to evaluate every finished run")
        return

    # Evaluate every finished run in the output directory, also those trained by earlier invocations.
    runs = {}
    for method in METHODS:
        for marker in sorted((out / "train").glob(f"{method}*/done.json")):
            runs[marker.parent.name] = json.loads(marker.read_text())
    checkpoints = {}
    for run in runs.values():
        checkpoints.update(run["checkpoints"])
    if not checkpoints:
        raise SystemExit(f"no finished training run under {out / 'train'} to evaluate")
    log(
        f"evaluating {len(checkpoints)} checkpoints + BoN N={cfg['bon_ns']} "
        f"({cfg['eval_reference_samples']} reference samples x {len(test_prompts)} prompts)"
    )
    start = time.perf_counter()
    results = evaluate(cfg, cli, paths, test_prompts, checkpoints)
    stages["evaluate"] = time.perf_counter() - start
    log(f"evaluation: {stages['evaluate']:.0f}s")

    table = summary_table(results, cfg["bon_ns"])
    print(table, flush=True)
    report = {
        "size": cli.size,
        "config": cfg,
        "seed": cli.seed,
        "threads": torch.get_num_threads(),
        "stage_seconds": stages,
        "total_seconds": sum(stages.values()),
        "train_seconds_per_run": {name: run.get("train_seconds") for name, run in runs.items()},
        "setup": json.loads((cache / "manifest.json").read_text()) if (cache / "manifest.json").is_file() else None,
        "results": results,
        "summary": table.splitlines(),
        "training": {name: {k: v for k, v in run.items()} for name, run in runs.items()},
    }
    (out / "replication.json").write_text(json.dumps(report, indent=2, default=str))
    log(
        f"wrote {out / 'replication.json'} and figures in {out / 'eval'}; stage times: "
        + ", ".join(f"{k} {v:.0f}s" for k, v in stages.items())
    )


if __name__ == "__main__":
    main()
