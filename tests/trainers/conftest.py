"""Session fixtures of the trainer tests: the two-token task on a GPT-2 and a Llama architecture."""

import pytest


@pytest.fixture(scope="session")
def two_token_tasks(tmp_path_factory):
    """`{"gpt2": TwoTokenTask, "llama": TwoTokenTask}` (see `tests/trainers/two_token_task.py`)."""
    from tests.trainers.two_token_task import build_two_token_task

    root = tmp_path_factory.mktemp("two_token")
    return {architecture: build_two_token_task(root, architecture) for architecture in ("gpt2", "llama")}
