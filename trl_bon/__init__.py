"""trl-bon: Best-of-N distillation trainers (J-BOND, BOND, vBoN, BoN-SFT) for Hugging Face TRL.

Public names are imported lazily, so `import trl_bon` (and `trl-bon --version`) stays fast: importing TRL's trainers
takes several seconds and happens only when a trainer is first used.
"""

import importlib

from trl_bon import _quiet  # noqa: F401  (filters known-spurious library messages; see its docstring)


__version__ = "0.1.0"

_LAZY = {
    "JBondConfig": "trl_bon.trainer.jbond_config",
    "JBondTrainer": "trl_bon.trainer.jbond_trainer",
    "VBoNConfig": "trl_bon.trainer.vbon_config",
    "VBoNTrainer": "trl_bon.trainer.vbon_trainer",
    "BoNSFTConfig": "trl_bon.trainer.bon_sft_config",
    "BoNSFTTrainer": "trl_bon.trainer.bon_sft_trainer",
    "bon_sft_dataset": "trl_bon.trainer.bon_sft_trainer",
    "best_of_n": "trl_bon.sampling",
    "BestOfNOutput": "trl_bon.sampling",
    "RewardScorer": "trl_bon.rewards",
    "build_reference_reward_cache": "trl_bon.ref_cache",
    "evaluate_checkpoints": "trl_bon.evaluation",
    "EffectiveNStopCallback": "trl_bon.callbacks",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trl_bon' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
