"""Issue 11's table: distance to the exact Best-of-N law before and after training, on realistic shapes.

The two-token task of the test-suite (`tests/trainers/two_token_task.py`): a tiny GPT-2 (learned absolute positions,
dropout 0.1 in its config) or Llama, prompts of 2 and 5 tokens left-padded in one batch, two-token completions whose
law is enumerated exactly. Each trainer runs at its defaults except the step count, learning rate and prompts per step
(the settings of `tests/trainers/test_exactness.py`), and the script prints KL(π‖π_BoN) per prompt before and after.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/exactness.py              # this checkout's trl_bon
    git archive main trl_bon | tar -x -C /tmp/main                           # another one, e.g. the main branch:
    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/main:. python benchmarks/exactness.py

The `trl_bon` imported is the first on `PYTHONPATH`; the task and training helpers come from this checkout's `tests/`.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.append(str(Path(__file__).resolve().parents[1]))

ROWS = {
    "jbond": ('`JBondTrainer`, `anchor="fixed"`, Bo2 target', "gpt2", {"anchor": "fixed"}),
    "jbond_no_dropout": ("same with `disable_dropout=True`", "gpt2", {"anchor": "fixed", "disable_dropout": True}),
    "jbond_llama": ('`JBondTrainer`, `anchor="fixed"`, Bo2 target (Llama)', "llama", {"anchor": "fixed"}),
    "vbon": ('`VBoNTrainer`, `vbon_objective="exact"`, N = 4', "gpt2", {}),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    rows = "jbond,jbond_no_dropout,vbon"
    parser.add_argument("--rows", default=rows, help=f"comma-separated subset of {list(ROWS)} (default {rows})")
    args = parser.parse_args()

    import torch

    import trl_bon
    from tests.trainers.two_token_task import (
        build_two_token_task,
        reference_law,
        stratified_reference_rewards,
        train_jbond,
        train_vbon,
    )
    from trl_bon.core import bon_probs, kl_divergence

    torch.set_num_threads(1)
    print(f"trl_bon from {Path(trl_bon.__file__).parent}")
    root = Path(tempfile.mkdtemp(prefix="exactness_"))
    tasks = {}
    lines = []
    for key in args.rows.split(","):
        label, architecture, overrides = ROWS[key]
        if architecture not in tasks:
            tasks[architecture] = build_two_token_task(root, architecture)
        task = tasks[architecture]
        ref = reference_law(task)
        start = time.perf_counter()
        if key == "vbon":
            target = bon_probs(ref, task.rewards, 4)
            policy = train_vbon(task, root / key, "exact", 200, 0.01, stratified_reference_rewards(task), **overrides)
        else:
            target = bon_probs(ref, task.rewards, 2)
            policy = train_jbond(task, root / key, 200, 0.01, **overrides)
        before, after = kl_divergence(ref, target).tolist(), kl_divergence(policy, target).tolist()
        seconds = time.perf_counter() - start
        lines.append(
            f"| {label} | {before[0]:.3f} / {before[1]:.3f} | {after[0]:.3f} / {after[1]:.3f} | {seconds:.0f} s |"
        )
        print(lines[-1], flush=True)
    print("\n| trainer (2- / 5-token prompt) | KL(π‖π_BoN) before | after 200 steps | time |\n|---|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
