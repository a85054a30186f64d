"""The only module that imports private TRL names.

TRL ships a minor release about every two weeks and reshapes private helpers freely. Every private name trl-bon relies
on is imported here, and `tests/contract/` pins their signatures and behaviour, so a TRL rename is a one-line fix in
this file and a red contract test rather than a silent change in a trainer.
"""

from contextlib import contextmanager

import trl
from packaging.version import Version
from trl.cli.commands.training import _subtract_subsequence
from trl.generation import vllm_generation
from trl.generation.vllm_generation import VLLMGeneration
from trl.models.utils import disable_gradient_checkpointing, prepare_deepspeed, prepare_fsdp
from trl.trainer.utils import (
    add_fused_lm_head,
    create_model_from_path,
    disable_dropout_in_model,
    get_config_model_id,
    pad,
    use_adapter,
)


TESTED_TRL = (Version("1.16.0"), Version("1.17.0"))  # [lower, upper): keep in step with pyproject.toml

#: Names of the `RLOOTrainer` hooks the trainers wrap via `super()`; the contract tests pin their signatures.
WRAPPED_RLOO_HOOKS = (
    "_generate_single_turn",
    "_calculate_rewards",
    "_generate_and_score_completions",
    "_compute_loss",
    "_get_per_token_logps_and_entropies",
)

#: Keys of the dict `RLOOTrainer._generate_and_score_completions` returns that the trainers read or rewrite.
GENERATION_OUTPUT_KEYS = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "old_logps", "advantages")


def check_trl_version() -> None:
    """Warn when the installed TRL lies outside the range the contract tests were run on."""
    import warnings

    installed = Version(trl.__version__)
    if not TESTED_TRL[0] <= installed < TESTED_TRL[1]:
        warnings.warn(
            f"trl-bon is tested with trl>={TESTED_TRL[0]},<{TESTED_TRL[1]}, but trl {installed} is installed. "
            f"Run `pytest tests/contract` to check the hooks trl-bon wraps, or install `trl=={TESTED_TRL[0]}`.",
            stacklevel=2,
        )


@contextmanager
def vllm_engine_kwargs(**extra):
    """While the block runs, the colocated engine `VLLMGeneration` builds gets `extra` as further `vllm.LLM`
    arguments (TRL fixes the engine's arguments; J-BOND's LoRA serving needs `enable_lora` and its limits). TRL builds
    the engine through its module's name `LLM`, which the contract tests pin."""
    from functools import partial

    build = vllm_generation.LLM
    vllm_generation.LLM = partial(build, **extra)
    try:
        yield
    finally:
        vllm_generation.LLM = build


# Every trainer (and the sampler) imports this module, so an untested TRL is reported once, when trl-bon first
# touches TRL's internals.
check_trl_version()


__all__ = [
    "GENERATION_OUTPUT_KEYS",
    "VLLMGeneration",
    "WRAPPED_RLOO_HOOKS",
    "_subtract_subsequence",
    "add_fused_lm_head",
    "check_trl_version",
    "create_model_from_path",
    "disable_dropout_in_model",
    "disable_gradient_checkpointing",
    "get_config_model_id",
    "pad",
    "prepare_deepspeed",
    "prepare_fsdp",
    "use_adapter",
    "vllm_engine_kwargs",
]
