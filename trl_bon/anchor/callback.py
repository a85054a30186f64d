"""[`AnchorCallback`]: moves the anchor, and saves and restores it for the trainer's checkpoints."""

import dataclasses
import os
from pathlib import Path

from transformers import TrainerCallback

from ..core.ema import AnchorSchedule
from .state import ANCHOR_SUBFOLDER, AnchorState


class AnchorCallback(TrainerCallback):
    """
    Moves the anchor once per optimizer step, and writes and reads it in a checkpoint's `anchor/` folder.

    `on_step_end` runs once per optimizer step, after gradient accumulation: the cadence of eq. 18. `on_train_begin`
    re-binds the anchor to the model `Trainer` prepared (possibly sharded). `JBondTrainer` calls the two checkpoint
    methods when it saves and resumes (`Trainer` itself reloads only the active adapter).

    Args:
        anchor ([`LoraAnchor`] or [`ModelAnchor`]):
            The anchor to move.
        schedule ([`~trl_bon.core.AnchorSchedule`], *optional*):
            How it moves (`"ema"`, `"periodic"` or `"fixed"`). Defaults to J-BOND's EMA with η = 0.02.
    """

    def __init__(self, anchor: AnchorState, schedule: AnchorSchedule = AnchorSchedule()):
        self.anchor = anchor
        self.schedule = schedule

    def on_train_begin(self, args, state, control, **kwargs):
        self.anchor.bind()

    def on_step_end(self, args, state, control, **kwargs):
        if self.schedule.mode == "ema":
            self.anchor.ema_update(self.schedule.rate)
        elif self.schedule.mode == "periodic" and state.global_step % self.schedule.period == 0:
            self.anchor.hard_update()

    def save_to_checkpoint(self, checkpoint_dir: str | os.PathLike, state) -> None:
        """Write the anchor to `checkpoint_dir/anchor/` with its update rule and `state.global_step`. Every process
        calls it (FSDP2 and ZeRO-3 gather the anchor); the main process writes."""
        metadata = {**dataclasses.asdict(self.schedule), "global_step": state.global_step}
        self.anchor.save(Path(checkpoint_dir) / ANCHOR_SUBFOLDER, metadata=metadata)

    def load_from_checkpoint(self, checkpoint_dir: str | os.PathLike, global_step: int) -> None:
        """Load the anchor saved in `checkpoint_dir/anchor/`, refusing one saved at another step than `global_step`,
        the step training resumes at. It binds the anchor first, so it need not run after `on_train_begin`."""
        self.anchor.bind()
        self.anchor.load(Path(checkpoint_dir) / ANCHOR_SUBFOLDER, global_step=global_step)
