"""J-BOND LoRA under two CPU processes (torchrun, gloo): the anchors of both ranks must stay identical."""

from pathlib import Path

import pytest
import torch

from tests.helpers import assert_ranks_finished, run_torchrun
from trl_bon.trainer._checkpoint import read_manifest


SCRIPT = Path(__file__).with_name("jbond_ddp_script.py")


@pytest.mark.distributed
@pytest.mark.slow
def test_jbond_lora_anchor_identical_across_ranks(tmp_path, tiny_kit):
    env = {"PYTHONPATH": str(Path(__file__).parents[2])}
    result = run_torchrun(SCRIPT, [tiny_kit["policy"], str(tmp_path)], env=env, timeout=300)
    assert_ranks_finished(result, [tmp_path / f"rank{rank}.pt" for rank in (0, 1)])

    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    assert [state["world_size"] for state in ranks] == [2, 2]
    assert [state["global_step"] for state in ranks] == [3, 3]
    for key in ("anchor", "policy"):
        assert ranks[0][key].keys() == ranks[1][key].keys() and ranks[0][key]
        for name, tensor in ranks[0][key].items():
            assert torch.equal(tensor, ranks[1][key][name]), f"{key} tensor {name} differs between ranks"
    # The anchor moved: some B factor is non-zero after 3 EMA steps (it starts at the fresh adapter's B = 0).
    anchor_b = [tensor for name, tensor in ranks[0]["anchor"].items() if name.endswith("lora_B.anchor.weight")]
    assert anchor_b and any(tensor.abs().sum() > 0 for tensor in anchor_b)
    # The checkpoint is complete with both ranks' RNG states, although rank 1 wrote its own 2 s late (the manifest used
    # to be written without waiting for the other ranks, and resuming then refused the checkpoint as truncated).
    manifest, why = read_manifest(tmp_path / "checkpoint-3")
    assert manifest is not None, why
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= set(manifest["files"])
