"""`EffectiveNStopCallback`: stop training once the policy has moved as far as a chosen Best-of-N (docs/metrics.md)."""

import math

from transformers import TrainerCallback


# The logged names (`trl_bon.trainer._bon_rloo`), repeated here so that the callback imports without TRL.
_KL = "kl_k1"
_METERS = {"kl": "effective_n_kl", "win": "effective_n_win"}


class EffectiveNStopCallback(TrainerCallback):
    """Stop training after the first log where the effective N (`effective_n_kl`, or `effective_n_win` with
    `meter="win"`: vBoN, BOND with `anchor="fixed"`) reaches `target_n`, or the KL to π_ref (`kl_k1`, nats per
    sequence) reaches `kl_budget` (docs/metrics.md). The first training log raises if it lacks a metric a limit reads,
    rather than train on without ever stopping."""

    def __init__(self, target_n: float | None = None, kl_budget: float | None = None, meter: str = "kl"):
        if target_n is None and kl_budget is None:
            raise ValueError("EffectiveNStopCallback needs a limit: pass `target_n` (N ≥ 1) and/or `kl_budget` (> 0).")
        if target_n is not None and not (_is_number(target_n) and target_n >= 1):
            raise ValueError(f"`target_n` must be a finite number >= 1 (N of Best-of-N), got {target_n!r}.")
        if kl_budget is not None and not (_is_number(kl_budget) and kl_budget > 0):
            raise ValueError(f"`kl_budget` must be a finite number of nats > 0, got {kl_budget!r}.")
        if meter not in _METERS:
            raise ValueError(f"`meter` must be one of {sorted(_METERS)}, got {meter!r}.")
        self.limits = {m: float(v) for m, v in {_METERS[meter]: target_n, _KL: kl_budget}.items() if v is not None}
        self.stopped_by = None  # (metric, logged value) once a limit is reached

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:  # evaluation logs (`eval_…`) and the end-of-training summary
            return
        for metric, limit in self.limits.items():
            if metric not in logs:
                raise ValueError(
                    f"EffectiveNStopCallback reads `{metric}`, which this trainer does not log (see docs/metrics.md: "
                    "BoN-SFT logs no KL, full fine-tuning J-BOND needs `log_ref_kl=True`, `effective_n_win` needs "
                    "vBoN or BOND with `anchor='fixed'`). Use a limit on a logged metric or remove the callback."
                )
            value = logs[metric]
            if value is not None and value >= limit:
                self.stopped_by = (metric, value)
                control.should_training_stop = True
        return control


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
