"""The log-prob forwards of the RLOO-based trainers: exact (positions, dropout) and recorded for reuse.

Every log-probability the trainers use goes through `RLOOTrainer._get_per_token_logps_and_entropies`, wrapped here:

- **Positions.** TRL's forward passes only `input_ids` and `attention_mask`, so a model with learned absolute
  positions (GPT-2 style) would score a left-padded row at positions shifted by its padding, while `generate` sampled
  it at positions counted from the first real token. The wrapper passes `position_ids` derived from the mask exactly
  as `generate` does (rotary models are unchanged up to rounding: they depend on relative positions only).
- **Reuse.** `_generate_and_score_completions` runs, without gradients, the policy forward behind `old_logps` and,
  when `beta != 0`, the reference forward of its KL penalty, in that order and before `_calculate_rewards`, keeping
  only sequence sums. J-BOND's KL metrics and vBoN's `exact` objective need the per-token values: recording them
  here halves that work (`tests/contract/test_rloo_contract.py` pins the call order).
- **Policy rows only** (J-BOND). Off logging steps J-BOND needs the policy's log-probs of its policy rows only
  (Δ = log π − log π_a), so `policy_rows` scores only those rows in the `old_logps` forward; the other rows (two
  thirds of a batch) get `old_logps = 0` and are flagged under `OLD_LOGPS_SKIPPED`. In the loss forward a flagged
  row's per-token log-probs become `p − sg(p)`: value 0, gradient ∇p, so its importance ratio is exactly 1, as the
  skipped `old_logps` would have given (J-BOND runs one update per generation batch).
"""

from contextlib import contextmanager

import torch

from .._trl_compat import disable_dropout_in_model


# Model inputs that carry their own positions (multimodal rotary indices): leave the model to build positions.
_OWN_POSITION_KEYS = ("position_ids", "pixel_values", "image_grid_thw", "image_position_ids", "mm_token_type_ids")
# Batch key (bool, one per row) of the rows whose `old_logps` were not computed; RLOO's `_prepare_inputs` shuffles and
# splits it with the other per-row tensors, so it reaches `_compute_loss` beside the rows it flags.
OLD_LOGPS_SKIPPED = "old_logps_skipped"
# Float dropout rates some attention implementations read directly (e.g. Llama's `attention_dropout`), not modules.
_FLOAT_DROPOUT_ATTRIBUTES = ("attention_dropout", "attn_dropout", "dropout")


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first attended token, padding at 0: what `generate` uses with a mask."""
    position_ids = attention_mask.long().cumsum(-1) - 1
    return position_ids.masked_fill(attention_mask == 0, 0)


def disable_all_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability of `model` to 0: `nn.Dropout` modules (LoRA's `lora_dropout` included) and the
    float rates attention implementations read directly (Llama's `attention_dropout`), which TRL's
    `disable_dropout_in_model` leaves on."""
    disable_dropout_in_model(model)
    for module in model.modules():
        for name in _FLOAT_DROPOUT_ATTRIBUTES:
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)


class _WithPositionIds:
    """Calls `model` with `position_ids` derived from the `attention_mask` it is given (TRL chunks the batch, so the
    positions are built per call); every other attribute is the model's."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, *args, **kwargs):
        if kwargs.get("attention_mask") is not None and not any(key in kwargs for key in _OWN_POSITION_KEYS):
            kwargs["position_ids"] = position_ids_from_mask(kwargs["attention_mask"])
        return self._model(*args, **kwargs)


class ScoringForwardsMixin:
    """The three wrappers of the module docstring: positions, recording, policy rows only."""

    _scoring_forwards: list | None = None
    _policy_rows: torch.Tensor | None = None  # rows the next recorded forward scores (the `old_logps` one)
    _skipped_loss_rows: torch.Tensor | None = None  # rows of the loss forward whose `old_logps` were skipped

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        model = _WithPositionIds(model)
        rows, self._policy_rows = self._policy_rows, None  # only the first recorded forward: RLOO's `old_logps`
        if rows is None:
            output = super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )
        else:
            if any(value is not None for value in kwargs.values()):  # multimodal inputs are indexed by image/tile
                raise NotImplementedError("Scoring a subset of rows supports text-only batches.")
            scored = super()._get_per_token_logps_and_entropies(
                model, input_ids[rows], attention_mask[rows], logits_to_keep, *args, **kwargs
            )
            logps = scored[0].new_zeros(input_ids.size(0), scored[0].size(1))
            logps[rows] = scored[0]
            output = (logps, *scored[1:])
        if self._scoring_forwards is not None:
            self._scoring_forwards.append(output[0])
        skipped = self._skipped_loss_rows
        if skipped is not None:  # ratio exactly 1, gradient unchanged (module docstring)
            logps = output[0]
            output = (torch.where(skipped[:, None], logps - logps.detach(), logps), *output[1:])
        return output

    def _compute_loss(self, model, inputs):
        skipped = inputs.get(OLD_LOGPS_SKIPPED)
        self._skipped_loss_rows = skipped if skipped is not None and skipped.any() else None
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._skipped_loss_rows = None

    @contextmanager
    def _record_scoring_forwards(self, policy_rows: torch.Tensor | None = None):
        """Inside: the per-token log-probs of each forward, in call order ([policy, reference if beta != 0]).

        With `policy_rows` (local row indices), the first forward (the policy's, behind `old_logps`) scores only those
        rows; the others read 0 until the caller flags them with `OLD_LOGPS_SKIPPED`.
        """
        self._scoring_forwards = []
        self._policy_rows = policy_rows
        try:
            yield self._scoring_forwards
        finally:
            self._scoring_forwards = None
            self._policy_rows = None
