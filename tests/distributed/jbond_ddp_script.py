"""A few J-BOND LoRA steps under `torchrun --nproc_per_node 2` (gloo, CPU); every rank saves its anchor and policy.

Usage: torchrun --nproc_per_node 2 tests/distributed/jbond_ddp_script.py POLICY_PATH OUTPUT_DIR
"""

import os
import sys
import time


os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", CI="true", TRANSFORMERS_VERBOSITY="error")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from peft import LoraConfig  # noqa: E402

from tests.helpers import cpu_args  # noqa: E402  (the test puts the repository root on PYTHONPATH)
from trl_bon import JBondConfig, JBondTrainer  # noqa: E402


def token_sum_reward(completion_ids, **kwargs):
    return [float(sum(ids) % 7) + 0.1 * len(ids) for ids in completion_ids]


def main(policy_path: str, output_dir: str) -> None:
    args = JBondConfig(
        **cpu_args(output_dir=output_dir, save_strategy="steps"),
        max_steps=3,
        save_steps=3,
        max_completion_length=6,
        per_device_train_batch_size=6,
        learning_rate=0.1,  # tiny model: gradients are tiny
        anchor_ema_rate=0.3,
        gradient_checkpointing=False,
    )
    prompts = ["the cat", "tell me", "once upon", "the movie", "the food", "a good day", "the dog", "a robot"]
    trainer = JBondTrainer(
        policy_path,
        token_sum_reward,
        args,
        Dataset.from_dict({"prompt": prompts * 4}),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
    )
    if trainer.accelerator.process_index == 1:
        # Rank 1 writes its RNG state late: the checkpoint's manifest (written by rank 0) must still list it whole.
        save_rng_state = trainer._save_rng_state

        def late_save_rng_state(output_dir):
            time.sleep(2.0)
            save_rng_state(output_dir)

        trainer._save_rng_state = late_save_rng_state
    trainer.train()
    rank = trainer.accelerator.process_index
    state = {
        "world_size": trainer.accelerator.num_processes,
        "global_step": trainer.state.global_step,
        "anchor": {name: tensor.cpu() for name, tensor in trainer.anchor.state_dict().items()},
        "policy": {n: p.detach().cpu() for n, p in trainer.model.named_parameters() if ".default." in n},
    }
    torch.save(state, os.path.join(output_dir, f"rank{rank}.pt"))


if __name__ == "__main__":
    main(*sys.argv[1:])
