"""The only module that imports private TRL names, and the list of every other library's private API trl-bon uses.

`tests/contract/` pins their signatures and behaviour, so a rename upstream (TRL reshapes private helpers freely) is a
red contract test and a one-line fix here rather than a silent change in a trainer.
"""

import warnings
from contextlib import contextmanager
from functools import partial

import trl
from packaging.version import Version

# Re-exported (`name as name`) for the trainers, the sampler and the CLI.
from trl.cli.commands.training import _subtract_subsequence as _subtract_subsequence
from trl.generation import vllm_generation
from trl.generation.vllm_generation import VLLMGeneration as VLLMGeneration
from trl.models.utils import disable_gradient_checkpointing as disable_gradient_checkpointing
from trl.models.utils import prepare_deepspeed as prepare_deepspeed
from trl.models.utils import prepare_fsdp as prepare_fsdp
from trl.trainer.utils import add_fused_lm_head as add_fused_lm_head
from trl.trainer.utils import create_model_from_path as create_model_from_path
from trl.trainer.utils import disable_dropout_in_model as disable_dropout_in_model
from trl.trainer.utils import get_config_model_id as get_config_model_id
from trl.trainer.utils import pad as pad
from trl.trainer.utils import use_adapter as use_adapter


TESTED_TRL = (Version("1.16.0"), Version("1.17.0"))  # [lower, upper): keep in step with pyproject.toml

#: Names of the `RLOOTrainer` hooks the trainers wrap via `super()`; the contract tests pin their signatures.
WRAPPED_RLOO_HOOKS = (
    "_generate_single_turn",
    "_calculate_rewards",
    "_generate_and_score_completions",
    "_compute_loss",
    "_get_per_token_logps_and_entropies",
)

#: What the policy-rows-only scoring of `trainer/_scoring_forwards.py` relies on: at beta = 0 the first scoring forward
#: of `_generate_and_score_completions` is the policy's, behind `old_logps`; `_prepare_inputs` hands every per-row
#: tensor (an extra key included) to `_compute_loss`, which reads log-probs only through exp(Σ_t log π − old_logps).
POLICY_ROWS_SCORING_SEAM = ("_generate_and_score_completions", "_prepare_inputs", "_compute_loss")

#: `RLOOTrainer` attributes the trainers rewrite, each only through its seam in `trainer/_rloo_seams.py`.
RLOO_STATE_ATTRIBUTES = (
    "num_generations",
    "num_generations_eval",
    "model_wrapped",
    "reward_funcs",
    "_name",
    "_last_loaded_step",
    "_metrics",
    "_logs",
)

#: Keys of the dict `RLOOTrainer._generate_and_score_completions` returns that the trainers read or rewrite.
GENERATION_OUTPUT_KEYS = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "old_logps", "advantages")


#: Private `transformers.Trainer` methods the trainers override, with their parameters. The atomic checkpoint save
#: (`trainer/_checkpoint.py`) needs the first two: no public hook runs before `Trainer` writes a checkpoint (to stage
#: it) nor before it deletes old ones under `save_total_limit` (to publish the new one first). `JBondTrainer._save`
#: keeps the anchor adapter out of the saved policy.
OVERRIDDEN_TRAINER_METHODS = {
    "_save_checkpoint": ("self", "model", "trial"),
    "_get_output_dir": ("self", "trial"),
    "_save": ("self", "output_dir", "state_dict"),
}
#: The class attribute by which `transformers.HfArgumentParser` groups a dataclass's options in `trl-bon --help`.
HF_ARGUMENT_GROUP_ATTRIBUTE = "_argument_group_name"
# DeepSpeed ZeRO-3 has no public accessors for a partitioned parameter: `trl_bon/anchor` reads its `ds_id`
# (partitioned), `ds_shape` (whole shape) and `ds_tensor` (this rank's partition), exercised by `tests/engines`.
# argparse lists no parser's options publicly: `scripts/parser.py` reads `accelerate launch`'s flags from its parser's
# `_actions` (each an `argparse.Action` with `option_strings` and `nargs`), pinned by the contract tests.


def check_trl_version() -> None:
    """Warn when the installed TRL lies outside the range the contract tests were run on."""
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
    arguments (J-BOND's LoRA serving needs `enable_lora`, which TRL does not pass)."""
    build = vllm_generation.LLM
    vllm_generation.LLM = partial(build, **extra)
    try:
        yield
    finally:
        vllm_generation.LLM = build


# Reported once, when trl-bon first touches TRL's internals.
check_trl_version()
