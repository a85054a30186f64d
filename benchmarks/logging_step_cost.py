"""What J-BOND's logging steps cost over its other steps, measured within one run.

Off logging steps J-BOND scores RLOO's `old_logps` forward on its policy rows only and skips the diagnostics that cost
a forward (`kl_k1`/`kl_k3`, `jbond/target_nll`, `objective/jeffreys`); a logging step does what every step did before
(all rows, plus the π_ref forward with LoRA). With `logging_steps=2` the two kinds of step alternate, so one process
measures both under the same load. Cost is the CPU time of the training thread (`time.thread_time`; with
`OMP_NUM_THREADS=1` torch computes on that thread), which other processes on a shared machine do not inflate as they
inflate wall time.

    OMP_NUM_THREADS=1 python benchmarks/logging_step_cost.py                                  # tiny kit, LoRA
    OMP_NUM_THREADS=1 python benchmarks/logging_step_cost.py --model smollm2-random --steps 6 --warmup 2
"""

import argparse
import os
import statistics
import sys
import tempfile
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("tiny", "smollm2-random"), default="tiny")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps (odd ones unlogged, even ones logged)")
    parser.add_argument("--warmup", type=int, default=4, help="first steps left out")
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--max-completion-length", type=int, default=16)
    parser.add_argument("--num-prompts", type=int, default=32)
    parser.add_argument("--reward", default=None)
    cli = parser.parse_args()

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from speed import resolve_models
    from transformers import TrainerCallback

    from trl_bon import JBondConfig, JBondTrainer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads())
    workdir = tempfile.mkdtemp(prefix="trl_bon_logging_cost_")
    model, reward, prompts, label = resolve_models(cli, workdir)
    rows = (prompts * (cli.steps * cli.prompts_per_step // len(prompts) + 2))[: cli.steps * cli.prompts_per_step]
    args = JBondConfig(
        output_dir=os.path.join(workdir, "run"),
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_steps=2,
        disable_tqdm=True,
        seed=0,
        max_steps=cli.steps,
        learning_rate=1e-5,
        gradient_checkpointing=False,
        max_completion_length=cli.max_completion_length,
        per_device_train_batch_size=3 * cli.prompts_per_step,
    )
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")
    trainer = JBondTrainer(model, reward, args, Dataset.from_dict({"prompt": rows}), peft_config=lora)

    steps, scoring = {True: [], False: []}, {True: [], False: []}

    class StepCost(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.thread_time()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step > cli.warmup and state.global_step < state.max_steps:  # the last step always logs
                logged = state.global_step % 2 == 0
                steps[logged].append(time.thread_time() - self.start)
                scoring[logged].append(self.scoring)

    cost = StepCost()
    trainer.add_callback(cost)
    generate, score = trainer._generate_single_turn, trainer._generate_and_score_completions

    def timed_generate(*call_args, **kwargs):
        start = time.thread_time()
        try:
            return generate(*call_args, **kwargs)
        finally:
            cost.generation += time.thread_time() - start

    def timed_score(*call_args, **kwargs):
        cost.generation, start = 0.0, time.thread_time()
        try:
            return score(*call_args, **kwargs)
        finally:
            cost.scoring = time.thread_time() - start - cost.generation

    trainer._generate_single_turn, trainer._generate_and_score_completions = timed_generate, timed_score
    trainer.train()

    print(f"model: {label} | LoRA r=16 | {os.environ.get('OMP_NUM_THREADS', '?')} thread(s)")
    print(f"P={cli.prompts_per_step} prompts x 3 completions, <= {cli.max_completion_length} tokens, logging_steps=2")
    for logged in (False, True):
        name = "logging step (all rows + diagnostics)" if logged else "other step (policy rows only)"
        print(
            f"{name:40s} n={len(steps[logged]):3d}  step CPU {statistics.median(steps[logged]) * 1e3:8.1f} ms  "
            f"scoring CPU {statistics.median(scoring[logged]) * 1e3:8.1f} ms (medians)"
        )
    ratio = statistics.median(steps[False]) / statistics.median(steps[True])
    print(f"other / logging step: {ratio:.3f}x (step CPU, medians)")


if __name__ == "__main__":
    main()
