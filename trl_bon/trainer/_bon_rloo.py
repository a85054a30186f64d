"""`BoNRLOOTrainer`: what `JBondTrainer` and `VBoNTrainer` share on top of TRL's `RLOOTrainer`, the metric
vocabulary of docs/metrics.md included."""

import math
from contextlib import contextmanager

import torch
from peft import PeftModel
from trl import RLOOTrainer
from trl.trainer.utils import nanstd

from .. import core
from .._trl_compat import use_adapter
from ..quantization import keep_4bit_weights_trainable
from ..rewards import check_reward_funcs, check_reward_tokenizers, weighted_rewards
from ._checkpoint import CheckpointMixin, finetuning_settings
from ._config_checks import (
    RewardOutputChecksMixin,
    check_model_inputs,
    check_train_prompt_lengths,
    check_train_prompts,
)
from ._model_card import BoNModelCardMixin
from ._rloo_seams import replace_last_metric
from ._scoring_forwards import ScoringForwardsMixin


class BoNRLOOTrainer(BoNModelCardMixin, CheckpointMixin, RewardOutputChecksMixin, ScoringForwardsMixin, RLOOTrainer):
    """`RLOOTrainer` with the mixins, checks, π_ref and metrics both trainers share. A subclass calls `_check_early`
    and its own cheap checks first, then `super().__init__` with RLOO's arguments."""

    # The name of the trainer's logged win rate against π_ref samples, read by `effective_n_win`; `None`: none.
    _win_rate_vs_ref_metric: str | None = None
    # Whether RLOO's image inputs reach the trainer's own hooks intact (J-BOND's slot routing drops them).
    _takes_images: bool = True

    def __init__(self, model, reward_funcs, args, **kwargs):
        check_model_inputs(model)  # last before any model loads: the cheaper checks speak first
        check_reward_funcs(reward_funcs, args.model_init_kwargs)  # a causal LM as reward model: before it loads
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, **kwargs)
        keep_4bit_weights_trainable(self.model)
        given_tokenizers = kwargs.get("reward_processing_classes")
        check_reward_tokenizers(self.reward_funcs, self.reward_processing_classes, given_tokenizers)
        check_train_prompt_lengths(self)

    def _check_early(self, args, settings: dict, model, peft_config, train_dataset, eval_dataset) -> None:
        """Before any model loads: the prompts, and `settings` against a resumed run's checkpoint ledger."""
        text_only = None if self._takes_images else type(self).__name__
        check_train_prompts(train_dataset, eval_dataset, args.generation_batch_size // args.num_generations, text_only)
        self._init_checkpointing(args, {**settings, **finetuning_settings(model, peft_config)})

    @contextmanager
    def _reference_model(self):
        """Yield the model to run as π_ref: the frozen copy `ref_model` (RLOO's when `beta != 0`, J-BOND's with
        `log_ref_kl`), else the policy with its adapter disabled (the "ref" adapter if any, as in RLOO), else the
        policy itself (π_ref only before the first update)."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        if self.ref_model is not None:
            yield self.ref_model
        elif not isinstance(unwrapped, PeftModel):
            yield self.model
        else:
            with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
                yield self.model

    @property
    def _mode_metrics(self) -> dict:
        """RLOO's metrics of the current mode (`_metrics["train"]` or `["eval"]`), chosen as RLOO chooses it."""
        return self._metrics["train" if self.model.training else "eval"]

    def _log_policy_rewards(self, rewards_per_func: torch.Tensor) -> None:
        """Overwrite the batch's last `reward*` metrics, which RLOO logs from the matrix it trains on, with those of
        the raw rewards `(B, F)` of the policy's samples (NaN where a function did not apply)."""
        metrics = self._mode_metrics
        for i, name in enumerate(self.reward_func_names):
            replace_last_metric(metrics, f"rewards/{name}/mean", torch.nanmean(rewards_per_func[:, i]))
            replace_last_metric(metrics, f"rewards/{name}/std", nanstd(rewards_per_func[:, i]))
        rewards = weighted_rewards(rewards_per_func, self.reward_weights)  # NaN rows are left out, as in RLOO
        replace_last_metric(metrics, "reward", torch.nanmean(rewards))
        replace_last_metric(metrics, "reward_std", nanstd(rewards))

    def _log_kl_to_ref(self, policy_logps, ref_logps, mask) -> None:
        """Log `kl_k1` and `kl_k3` of the policy's samples, averaged over the global batch, from this process's
        `(B, T)` per-token log-probs."""
        for name, estimate in (("kl_k1", core.kl_k1), ("kl_k3", core.kl_k3)):
            per_sequence = self.accelerator.gather(estimate(policy_logps, ref_logps, mask))
            self._mode_metrics[name].append(per_sequence.mean().item())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the effective-N meters (`core.effective_n`) when the metrics hold `kl_k1` or a win rate against π_ref,
        each from its metric averaged since the last log (the meters are non-linear: N of the logged mean)."""
        metrics = self._mode_metrics
        meters = (("kl_k1", "effective_n_kl", core.effective_n_from_kl),)
        meters += ((self._win_rate_vs_ref_metric, "effective_n_win", core.effective_n_from_win_rate),)
        for source, name, meter in meters:
            values = [value for value in metrics.get(source, ()) if not math.isnan(value)] if source else []
            if values:
                metrics[name] = [meter(torch.tensor(sum(values) / len(values), dtype=torch.float64)).item()]
        super().log(logs, start_time)
