"""`torchrun --nproc_per_node 2 -m trl_bon.scripts.jbond …` on CPU (gloo): the script completes on the tiny kit with
world size 2 and both ranks end with identical policy and anchor weights (LoRA: the anchor is the `anchor` adapter of
the same model, so one state dict holds both)."""

import json

import pytest
import torch

from tests.helpers import assert_ranks_finished, run_torchrun


pytestmark = [pytest.mark.slow, pytest.mark.distributed]

# Runs `trl_bon.scripts.jbond` exactly as `-m` does (its `main` on the parsed argv), then each rank dumps its state.
WRAPPER = """
import os, sys, torch
from trl_bon.scripts import jbond
parsed = jbond.make_parser().parse_args_and_config(sys.argv[1:], fail_with_unknown_args=False)
trainer = jbond.main(*parsed)
state = {k: v.detach().cpu().clone() for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()}
torch.save({"world_size": trainer.accelerator.num_processes, "rank": trainer.accelerator.process_index,
            "state": state}, os.path.join(os.environ["DUMP_DIR"], f"rank{trainer.accelerator.process_index}.pt"))
"""


def test_jbond_script_torchrun_two_ranks_agree(tiny_kit, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with open(data / "train.jsonl", "w") as f:
        for text in [
            "the cat sat",
            "tell me a story",
            "once upon a time",
            "the movie was",
            "the food was",
            "a good day",
        ] * 4:
            f.write(json.dumps({"prompt": text}) + "\n")
    wrapper = tmp_path / "run_jbond.py"
    wrapper.write_text(WRAPPER)
    args = [
        "--model_name_or_path",
        tiny_kit["policy"],
        "--reward_model_name_or_path",
        tiny_kit["reward"],
        "--dataset_name",
        str(data),
        "--output_dir",
        str(tmp_path / "out"),
        "--use_cpu",
        "true",
        "--bf16",
        "false",
        "--report_to",
        "none",
        "--save_strategy",
        "no",
        "--max_steps",
        "2",
        "--max_completion_length",
        "4",
        "--per_device_train_batch_size",
        "6",
        "--learning_rate",
        "0.05",
        "--use_peft",
        "--lora_r",
        "4",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
        "--anchor_ema_rate",
        "0.5",
        "--disable_tqdm",
        "true",
        "--logging_steps",
        "1",
    ]
    result = run_torchrun(wrapper, args, env={"DUMP_DIR": str(tmp_path)})
    assert_ranks_finished(result, [tmp_path / f"rank{r}.pt" for r in (0, 1)])
    dumps = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert [d["world_size"] for d in dumps] == [2, 2]
    assert [d["rank"] for d in dumps] == [0, 1]
    state0, state1 = dumps[0]["state"], dumps[1]["state"]
    assert state0.keys() == state1.keys()
    anchor_keys = [k for k in state0 if ".anchor." in k]
    policy_keys = [k for k in state0 if ".default." in k]
    assert anchor_keys and policy_keys
    for key in state0:
        assert torch.equal(state0[key], state1[key]), key
    # training happened: the policy adapter moved away from its zero-initialised lora_B, and the anchor followed it
    assert any(state0[k].abs().sum() > 0 for k in policy_keys if "lora_B" in k)
    assert any(state0[k].abs().sum() > 0 for k in anchor_keys if "lora_B" in k)
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()  # rank 0 saved the final adapter
