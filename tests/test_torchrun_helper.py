"""The torchrun result check the distributed and engines tests share: it tolerates only the known exit abort, and
only after every rank wrote its results."""

import subprocess

import pytest

from tests.helpers import EXIT_ABORT, assert_ranks_finished


def _result(returncode: int, stderr: str = "") -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess(["torchrun"], returncode, "", stderr)


def test_a_clean_exit_passes(tmp_path):
    assert_ranks_finished(_result(0), [tmp_path / "rank0.pt"])  # the caller's own checks then read the files


def test_the_exit_abort_passes_only_after_every_rank_wrote_its_results(tmp_path):
    files = [tmp_path / "rank0.pt", tmp_path / "rank1.pt"]
    files[0].write_bytes(b"x")
    with pytest.raises(AssertionError, match="terminate called"):
        assert_ranks_finished(_result(1, f"... {EXIT_ABORT} ..."), files)  # rank 1 never finished
    files[1].write_bytes(b"x")
    assert_ranks_finished(_result(1, f"... {EXIT_ABORT} ..."), files)


def test_any_other_failure_fails_with_its_stderr(tmp_path):
    files = [tmp_path / "rank0.pt"]
    files[0].write_bytes(b"x")
    with pytest.raises(AssertionError, match="RuntimeError: boom"):
        assert_ranks_finished(_result(1, "RuntimeError: boom"), files)
