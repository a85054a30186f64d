"""Small helpers shared by the trainer tests (fixtures live in conftest.py)."""

from pathlib import Path


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


#: What a rank prints when it aborts at interpreter exit on some CPUs (SIGABRT after the process group is torn down;
#: cause not found, see docs/engines.md): the run's work is done by then.
EXIT_ABORT = "terminate called without an active exception"


def assert_ranks_finished(result, result_files) -> None:
    """A torchrun run passed: exit 0, or the known abort at interpreter exit after every rank wrote its results.

    Any other failure, or the abort before a rank's results exist, fails with the run's stderr.
    """
    finished = all(Path(path).is_file() for path in result_files)
    assert result.returncode == 0 or (finished and EXIT_ABORT in result.stderr), result.stderr[-5000:]
