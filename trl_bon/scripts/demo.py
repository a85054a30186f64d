# /// script
# dependencies = [
#     "trl-bon[plot]",
# ]
# ///
"""Offline J-BOND demo on a task whose exact Best-of-N distribution is known, the `trl-bon demo` subcommand.

    trl-bon demo [--steps 300] [--output-dir trl_bon_demo] [--seed 0] [--quick]

The one-token task (docs/index.md) makes reward and KLs exact along training. To finish in under a minute on 2 CPUs,
it departs from the paper's settings: lr 3e-3 instead of 3e-6 (constant), 16 prompts per step instead of 128.
"""

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path


BON_NS = (2, 4, 8, 16)


def make_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Train J-BOND on CPU on a toy task with exact Best-of-N.")

    def flag(name: str, **kwargs):  # `--output-dir` and `--output_dir` alike
        parser.add_argument(*dict.fromkeys([f"--{name}", f"--{name.replace('-', '_')}"]), **kwargs)

    flag("steps", type=int, default=None, help="Optimizer steps (default 300, or 40 with --quick).")
    flag("output-dir", default="trl_bon_demo", help="Folder for demo.json/png/svg, the model (default: %(default)s).")
    flag("seed", type=int, default=0, help="Random seed of the model build and of training.")
    flag("quick", action="store_true", help="Reduced size for tests: 40 steps, 8 prompts per step, no model saving.")
    flag("lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3).")
    flag("anchor-ema-rate", type=float, default=0.02, help="Anchor EMA rate η (default 0.02, the paper's value).")
    flag("prompts-per-step", type=int, default=None, help="Prompts per step, 3 samples each (default 16; --quick: 8).")
    flag("no-plot", dest="plot", action="store_false", help="Skip the PNG.")
    return parser


def exact_metrics(probs, task, bon_targets=None) -> dict:
    """Exact reward, KL to π_ref and KL(π‖π_BoN) for each N of `bon_targets`, of the distribution `probs`."""
    from trl_bon.core import kl_divergence

    out = {"reward": float((probs * task.rewards).sum()), "kl_ref": float(kl_divergence(probs, task.ref_probs))}
    out.update({f"kl_to_bon{n}": float(kl_divergence(probs, target)) for n, target in (bon_targets or {}).items()})
    return out


def _rounded(probs) -> list[float]:
    return [round(p, 6) for p in probs.tolist()]


def run(options: argparse.Namespace) -> dict:
    """Train J-BOND on the one-token task with `make_parser`'s options; return the results, also in `output_dir`."""
    quiet = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "CI": "true", "TRANSFORMERS_VERBOSITY": "error"}
    for name, value in quiet.items():  # offline and quiet; TRL skips telemetry when CI is set
        os.environ.setdefault(name, value)
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' gradient_checkpointing renames
    import torch
    from transformers import PrinterCallback, TrainerCallback
    from transformers.utils import logging as hf_logging

    from trl_bon import JBondConfig, JBondTrainer
    from trl_bon.core import bon_kl_bound, bon_probs
    from trl_bon.toy import build_one_token_task

    hf_logging.disable_progress_bar()
    start = time.time()
    steps, prompts_per_step, seed = options.steps, options.prompts_per_step, options.seed
    output_dir = Path(options.output_dir)
    task = build_one_token_task(output_dir / "task", seed=seed)  # creates `output_dir`
    bon_targets = {n: bon_probs(task.ref_probs, task.rewards, n) for n in BON_NS}
    reference = exact_metrics(task.ref_probs, task)
    bon_points = [{"n": n, **exact_metrics(p, task), "kl_bound": bon_kl_bound(n)} for n, p in bon_targets.items()]
    eval_every = max(1, steps // 30)
    history = []

    class ExactMetrics(TrainerCallback):
        """Exact metrics of the policy's softmax every `eval_every` optimizer steps."""

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.on_step_end(args, state, control, model=model)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            step = state.global_step
            if step % eval_every and step != steps:
                return
            probs = task.policy_probs(model)
            history.append({"step": step, **exact_metrics(probs, task, bon_targets), "probs": _rounded(probs)})
            if step % (eval_every * 5) == 0 or step == steps:
                row = history[-1]
                kls = "  ".join(f"N={n}: {row[f'kl_to_bon{n}']:.4f}" for n in BON_NS)
                print(
                    f"step {step:4d}  reward {row['reward']:.3f}  KL(π‖π_ref) {row['kl_ref']:.3f}  KL(π‖π_BoN) {kls}",
                    flush=True,
                )

    config = JBondConfig(
        output_dir=str(output_dir / "run"),
        max_completion_length=1,  # one-token completions: the policy is the model's softmax
        max_steps=steps,
        learning_rate=options.lr,
        lr_scheduler_type="constant",
        per_device_train_batch_size=3 * prompts_per_step,  # 1 policy + 2 anchor completions per prompt
        anchor_ema_rate=options.anchor_ema_rate,
        seed=seed,
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_steps=max(1, steps // 10),
        disable_tqdm=True,
    )
    trainer = JBondTrainer(
        model=task.model_path,
        reward_funcs=task.reward_func,
        args=config,
        train_dataset=task.dataset(steps * prompts_per_step),
        callbacks=[ExactMetrics()],
    )
    trainer.remove_callback(PrinterCallback)  # the exact-metric lines above replace the raw log dicts
    print(
        f"J-BOND on the 6-outcome toy task: {steps} steps, {prompts_per_step} prompts/step, lr {options.lr}, "
        f"anchor EMA η = {options.anchor_ema_rate}\nexact Best-of-N points: "
        + "  ".join(f"N={b['n']}: reward {b['reward']:.3f} KL {b['kl_ref']:.3f}" for b in bon_points),
        flush=True,
    )
    torch.manual_seed(seed)
    trainer.train()
    settings = {key: value for key, value in vars(options).items() if key not in ("output_dir", "plot")}
    settings.update(trainer="JBondTrainer", mode="jbond", fine_tuning="full", jeffreys_beta=config.jeffreys_beta)
    results = {
        "task": {
            "ref_probs": task.ref_probs.tolist(),
            "rewards": task.rewards.tolist(),
            "bon_probs": {str(n): _rounded(p) for n, p in bon_targets.items()},
        },
        "reference": reference,
        "bon": bon_points,
        "history": history,
        "final": {**history[-1], "nearest_bon_n": min(BON_NS, key=lambda n: history[-1][f"kl_to_bon{n}"])},
        "settings": settings,
        "files": {},
    }
    if not options.quick:
        trainer.save_model(str(output_dir / "model"))
        results["files"]["model"] = str(output_dir / "model")
    if options.plot:
        from trl_bon.plotting import plot_demo

        title = f"J-BOND (EMA anchor η={options.anchor_ema_rate}) vs exact Best-of-N, 6-outcome toy task"
        results["files"]["png"] = plot_demo(history, bon_points, reference, output_dir / "demo.png", title=title)
    results["files"]["json"] = str(output_dir / "demo.json")
    results["wall_time_s"] = round(time.time() - start, 1)
    Path(results["files"]["json"]).write_text(json.dumps(results, indent=2))
    return results


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    for name, default in (("steps", 40 if args.quick else 300), ("prompts_per_step", 8 if args.quick else 16)):
        value = default if getattr(args, name) is None else getattr(args, name)
        if value < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {value}.")
        setattr(args, name, value)
    results = run(args)
    final, n = results["final"], results["final"]["nearest_bon_n"]
    bon_n = next(b for b in results["bon"] if b["n"] == n)
    print(
        f"\nfinal policy: reward {final['reward']:.3f} (π_ref {results['reference']['reward']:.3f}), "
        f"KL(π‖π_ref) {final['kl_ref']:.3f}; closest Best-of-N: N={n} (reward {bon_n['reward']:.3f}, "
        f"KL {bon_n['kl_ref']:.3f}), KL(π‖π_BoN{n}) = {final[f'kl_to_bon{n}']:.4f}"
    )
    print(f"wall time {results['wall_time_s']} s")
    for kind, path in results["files"].items():
        print(f"{kind:>5}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
