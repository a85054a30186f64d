"""Exponential moving average of a set of tensors (J-BOND anchor, BOND arXiv v1 eq. 18)."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch


ANCHOR_MODES = ("ema", "periodic", "fixed")


@dataclass(frozen=True)
class AnchorSchedule:
    """How the anchor π_a follows the policy, checked once, here: `"ema"` (θ_a ← (1−η)·θ_a + η·θ after every optimizer
    step, eq. 18, with η = `rate`), `"periodic"` (a hard copy every `period` optimizer steps, iterative BOND, Alg. 1)
    or `"fixed"` (never moves). `JBondConfig` builds one (`args.anchor_schedule`) for the `AnchorCallback`."""

    mode: str = "ema"
    rate: float = 0.02
    period: int = 1000

    def __post_init__(self):
        if self.mode not in ANCHOR_MODES:
            raise ValueError(f"Unknown anchor mode `anchor={self.mode!r}`; set `anchor` to one of {ANCHOR_MODES}.")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(
                f"`anchor_ema_rate` (η) must lie in [0, 1], got {self.rate}; the paper uses 0.02. η = 0 freezes the "
                "anchor."
            )
        if self.period < 1:
            raise ValueError(f"`anchor_update_period` must be >= 1, got {self.period}.")


@torch.no_grad()
def ema_update_(
    targets: Sequence[torch.Tensor],
    sources: Sequence[torch.Tensor],
    rate: float,
    shadows: Sequence[torch.Tensor] | None = None,
) -> None:
    """In place θ_a ← (1 − η)·θ_a + η·θ for each (target, source) pair (eq. 18), η = `rate` ∈ [0, 1].

    With `shadows` (e.g. fp32 copies of bf16 anchor weights) the EMA runs on the shadows, the true anchor state, and
    each target receives a cast copy of its shadow: without one, an η = 0.02 update of a bf16 tensor rounds away.
    """
    if len(targets) != len(sources) or (shadows is not None and len(shadows) != len(targets)):
        raise ValueError("ema_update_ needs as many sources (and shadows) as targets.")
    states = targets if shadows is None else shadows
    for state, source in zip(states, sources, strict=True):
        state.lerp_(source.to(state.dtype), rate)
    if shadows is not None:
        for target, shadow in zip(targets, shadows, strict=True):
            target.copy_(shadow)
