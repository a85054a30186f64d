"""J-BOND LoRA under two CPU processes (torchrun, gloo): the anchors of both ranks must stay identical."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch


SCRIPT = Path(__file__).with_name("jbond_ddp_script.py")


@pytest.mark.distributed
@pytest.mark.slow
def test_jbond_lora_anchor_identical_across_ranks(tmp_path, tiny_kit):
    with socket.socket() as sock:  # a free port: torchrun's `--master_port 0` hangs
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(port),
        str(SCRIPT),
        tiny_kit["policy"],
        str(tmp_path),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]

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
