"""One metric vocabulary for every trainer (docs/metrics.md), on top of what TRL's `RLOOTrainer` logs.

RLOO logs `reward`, `reward_std` and `rewards/<func>/mean|std` from the reward matrix its `_calculate_rewards` hook
returns, and trains on the same matrix. J-BOND's matrix holds anchor rows too and vBoN's holds the vBoN score, so
after RLOO has logged, the batch's entries are set here to the raw reward of the samples the policy drew, so that
a trl-bon run and an RLOO run plot the same quantity under the same name. This is the one place where a trainer
overwrites a metric RLOO logged (through `_rloo_seams.replace_last_metric`); doing it earlier would change what RLOO
trains on.
"""

import math

import torch
from trl.trainer.utils import nanstd

from .. import core
from ._rloo_seams import replace_last_metric


def log_policy_rewards(metrics: dict, names: list[str], rewards_per_func: torch.Tensor, weights: torch.Tensor) -> None:
    """Overwrite the batch's last `reward`, `reward_std` and `rewards/<func>/mean|std` with the policy samples' raw
    rewards.

    Args:
        metrics: the trainer's `self._metrics[mode]`, to which RLOO has just appended this batch's values.
        names: the reward functions' names (`self.reward_func_names`).
        rewards_per_func: `(B, F)` raw rewards of the policy's samples only (NaN where a function did not apply).
        weights: `(F,)` reward weights.
    """
    for i, name in enumerate(names):
        replace_last_metric(metrics, f"rewards/{name}/mean", torch.nanmean(rewards_per_func[:, i]))
        replace_last_metric(metrics, f"rewards/{name}/std", nanstd(rewards_per_func[:, i]))
    rewards = (rewards_per_func * weights.to(rewards_per_func.device)).nansum(dim=1)
    rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan  # as RLOO: unscorable rows are left out
    replace_last_metric(metrics, "reward", torch.nanmean(rewards))
    replace_last_metric(metrics, "reward_std", nanstd(rewards))


def log_kl_to_ref(metrics: dict, gather, policy_logps, ref_logps, mask) -> None:
    """Log `kl_k1` and `kl_k3`: KL(π‖π_ref) per sequence of the policy's samples (completion tokens), averaged
    over the global batch. `policy_logps` / `ref_logps` / `mask`: `(B, T)` per-token tensors of this process."""
    metrics["kl_k1"].append(gather(core.kl_k1(policy_logps, ref_logps, mask)).mean().item())
    metrics["kl_k3"].append(gather(core.kl_k3(policy_logps, ref_logps, mask)).mean().item())


# The effective-N meters (docs/metrics.md, `core.effective_n`): logged under the same names as in `trl-bon eval`.
KL_TO_REF_METRIC = "kl_k1"  # the per-sequence KL(π‖π_ref) estimate N_KL is read from
EFFECTIVE_N_KL = "effective_n_kl"
EFFECTIVE_N_WIN = "effective_n_win"


class EffectiveNLogMixin:
    """Adds `effective_n_kl` and `effective_n_win` to RLOO's logs, on the logging steps whose metrics hold a KL to
    π_ref (respectively a win rate against π_ref samples).

    Each meter is computed from the metric *averaged* since the last log (as RLOO averages it for the log), not
    averaged per batch: the meters are non-linear, and N of the mean KL is what the logged KL means. A trainer sets
    `_win_rate_vs_ref_metric` to the name of its logged win rate against π_ref samples, or leaves it `None` when it
    has none.
    """

    _win_rate_vs_ref_metric: str | None = None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        metrics = self._metrics["train" if self.model.training else "eval"]  # RLOO's choice of mode in `log`
        meters = ((KL_TO_REF_METRIC, EFFECTIVE_N_KL, core.effective_n_from_kl),)
        meters += ((self._win_rate_vs_ref_metric, EFFECTIVE_N_WIN, core.effective_n_from_win_rate),)
        for source, name, meter in meters:
            values = [value for value in metrics.get(source, ()) if not math.isnan(value)] if source else []
            if values:
                metrics[name] = [meter(torch.tensor(sum(values) / len(values), dtype=torch.float64)).item()]
        super().log(logs, start_time)
