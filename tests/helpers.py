"""Small helpers shared by the trainer tests (fixtures live in conftest.py)."""


def cpu_args(**overrides) -> dict:
    """Keyword arguments shared by every trainer test: CPU, fp32, no reporting, no checkpoints, seeded."""
    args = dict(
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )
    args.update(overrides)
    return args


def run_torchrun(script: str, args: list[str], env: dict | None = None, timeout: float = 420.0):
    """Run `script` under `torchrun --nproc_per_node 2` (gloo on CPU) and return the `CompletedProcess`.

    Picks a free local port (`--master_port 0` hangs torchrun), and on timeout kills the whole process group: killing
    only the launcher would leave both ranks running, blocked on each other.
    """
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    process = subprocess.Popen(
        [*command, str(script), *args],
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
