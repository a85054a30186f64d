"""Offline test kit: environment first, then session-scoped tiny models built from scratch (no Hub)."""

import os


# huggingface_hub reads these at import time, so they must be set before any Hugging Face import.
os.environ.update(
    HF_HUB_OFFLINE="1",
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_DATASETS_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    TOKENIZERS_PARALLELISM="false",
    OMP_NUM_THREADS="1",
    CI="true",  # TRL skips telemetry whenever CI is set
    WANDB_DISABLED="true",
    TRANSFORMERS_VERBOSITY="error",
    HF_HUB_DISABLE_PROGRESS_BARS="1",
)

import socket  # noqa: E402

import pytest  # noqa: E402


_LOOPBACK = ("127.", "::1", "localhost")


@pytest.fixture(autouse=True, scope="session")
def no_network():
    """Fail any non-loopback connection: tests must never reach the Hub or the internet."""
    original_connect, original_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(self, address):
        host = address[0] if isinstance(address, tuple) else str(address)
        if isinstance(host, str) and not host.startswith(_LOOPBACK) and self.family != socket.AF_UNIX:
            raise RuntimeError(f"Test tried to open a network connection to {address}; tests must run offline.")
        return original_connect(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host is not None and not str(host).startswith(_LOOPBACK):
            raise RuntimeError(f"Test tried to resolve {host}; tests must run offline.")
        return original_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.getaddrinfo = guarded_connect, guarded_getaddrinfo
    yield
    socket.socket.connect, socket.getaddrinfo = original_connect, original_getaddrinfo


@pytest.fixture(scope="session")
def tiny_kit(tmp_path_factory):
    """`{"policy": path, "reward": path}`: a tiny BPE tokenizer, causal LM and reward model saved to a temp dir."""
    from trl_bon.toy import build_tiny_kit

    return build_tiny_kit(tmp_path_factory.mktemp("kit"))


@pytest.fixture(scope="session")
def one_token_task(tmp_path_factory):
    """The 6-outcome task of docs/maths.md §1 as a real tiny transformer (see `trl_bon.toy.OneTokenTask`)."""
    from trl_bon.toy import build_one_token_task

    return build_one_token_task(tmp_path_factory.mktemp("one_token"))


@pytest.fixture(scope="session")
def prompt_dataset():
    """A small prompt-only dataset in the standard (non-conversational) format."""
    from datasets import Dataset

    prompts = ["the cat", "tell me", "once upon", "the movie", "the food", "a good day", "the dog", "a robot"]
    return Dataset.from_dict({"prompt": prompts * 4})
