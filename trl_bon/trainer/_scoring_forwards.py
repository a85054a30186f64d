"""The log-prob forwards of the RLOO-based trainers: exact (positions, dropout) and recorded for reuse.

Every log-probability the trainers use — `old_logps` and the loss forward of the policy, the anchor, the reference —
goes through `RLOOTrainer._get_per_token_logps_and_entropies`, wrapped here via `super()`:

- **Positions.** TRL's forward passes only `input_ids` and `attention_mask`, so a model with learned absolute
  positions (GPT-2 style) scores a left-padded row at positions shifted by its padding, while `generate` sampled it at
  positions counted from the first real token. The wrapper passes `position_ids` derived from the attention mask
  exactly as `generate` does, so every row is scored at the positions it was sampled at. Rotary models are unchanged
  (up to float rounding): their attention depends only on relative positions.
- **Reuse.** `_generate_and_score_completions` runs, without gradients, the policy forward behind `old_logps` and,
  when `beta != 0`, the reference forward behind its KL penalty, in that order and before `_calculate_rewards`; it
  keeps only sequence sums. J-BOND needs the per-token policy log-probs (k3 KL metric) and vBoN's `exact` objective
  needs the reference log-probs of each completion. Recording them here instead of running the forwards again halves
  that work; `tests/contract/test_rloo_contract.py` pins the call order this relies on.
- **Policy rows only** (J-BOND). J-BOND reads the policy's log-probs of its policy rows only (Δ = log π − log π_a);
  the anchor rows (two thirds of a J-BOND batch) need them only for the `jbond/target_nll` diagnostic, so off logging
  steps J-BOND records with `policy_rows`, which scores only those rows in RLOO's `old_logps` forward (the first
  recorded forward, pinned by the contract tests): the other rows get `old_logps = 0` and are flagged in the batch
  under `OLD_LOGPS_SKIPPED`. In the loss forward (`_compute_loss`) a flagged row's per-token log-probs are replaced by
  `p − sg(p)`: value 0, gradient ∇p, so its importance ratio is exactly 1 and its gradient is −w·∇Σ_t log π, which is
  what the skipped `old_logps` would have given (J-BOND runs one update per generation batch, where the ratio is 1 for
  every row).

- **Rows of weight 0** (J-BOND, BOND). The loss forward and backward skip the rows whose loss weight is exactly 0
  (every anchor row but the best of its group), which add nothing to RLOO's loss or its gradient (`_rows_with_weight`).

`disable_all_dropout` switches off every dropout the scoring forwards could run with (see its docstring).
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
    """Scores with mask-derived positions, records the per-token log-probs of every
    `_get_per_token_logps_and_entropies` call made while recording, and (J-BOND) scores RLOO's `old_logps` forward
    on the policy rows only (module docstring)."""

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
        inputs, kept_fraction = self._rows_with_weight(inputs)
        skipped = inputs.get(OLD_LOGPS_SKIPPED)
        self._skipped_loss_rows = skipped if skipped is not None and skipped.any() else None
        try:
            return super()._compute_loss(model, inputs) * kept_fraction
        finally:
            self._skipped_loss_rows = None

    def _rows_with_weight(self, inputs):
        """The batch without the rows whose loss weight (`advantages`) is exactly 0, and the fraction of rows kept.

        RLOO's loss is the mean over rows of −min(r·w, clip(r)·w), so a row with w = 0 adds nothing to its value or
        gradient, and mean(kept rows)·(kept fraction) is the loss of the whole batch. J-BOND gives weight 0 to every
        anchor row but the best of each group (a third of its batch; more for BOND's larger groups), so its loss
        forward and backward skip them. Every process keeps as many rows (topped up with weight-0 rows), because RLOO
        gathers per-row clip statistics; the logged `entropy` and clip ratios are over the rows kept.
        """
        weights = inputs["advantages"]
        num_rows = weights.size(0)
        multimodal = any(key in inputs for key in _OWN_POSITION_KEYS)
        if multimodal or self.aux_loss_enabled:  # an aux loss is added unscaled: it would be rescaled
            return inputs, 1.0
        has_weight = weights != 0
        count = has_weight.sum().reshape(1)
        if self.accelerator.num_processes > 1:
            count = self.accelerator.gather(count).max()
        count = max(int(count), 1)
        if count == num_rows:
            return inputs, 1.0
        # Rows with weight first (stable, so in batch order), then as many weight-0 rows as the count needs.
        rows = torch.argsort(has_weight.to(torch.int8), descending=True, stable=True)[:count].sort().values
        kept = {
            key: value[rows] if torch.is_tensor(value) and value.dim() and value.size(0) == num_rows else value
            for key, value in inputs.items()
        }
        return kept, count / num_rows

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
