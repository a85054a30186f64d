"""The log-prob forwards of the RLOO-based trainers, all through `RLOOTrainer._get_per_token_logps_and_entropies`
(why each wrapper: "Exactness" in docs/jbond_trainer.md and docs/vbon_trainer.md):

- **Positions** from the attention mask, as `generate` derives them (TRL's forward passes none).
- **Reuse.** The per-token log-probs of RLOO's `old_logps` and reference forwards are recorded for J-BOND's KL metrics
  and vBoN's `exact` objective (`tests/contract/test_rloo_contract.py` pins the call order).
- **Skipped `old_logps`.** Rows whose `old_logps` were not computed (J-BOND's anchor rows off logging steps) or were
  read while generating are flagged under `OLD_LOGPS_SKIPPED`; in the loss forward their per-token log-probs become
  `p − sg(p)`: value 0, gradient ∇p, so the importance ratio is exactly 1 (one update per generation batch).
- **Rows of weight 0** are left out of the loss forward and backward (`_rows_with_weight`).
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


def disable_all_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability of `model` to 0, with the float rates `disable_dropout_in_model` leaves."""
    disable_dropout_in_model(model)
    for module in model.modules():
        for name in _FLOAT_DROPOUT_ATTRIBUTES:
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)


class _WithPositionIds:
    """`model`, called with `position_ids` derived from the `attention_mask` of each call (TRL chunks the batch)."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, *args, **kwargs):
        mask = kwargs.get("attention_mask")
        if mask is not None and not any(key in kwargs for key in _OWN_POSITION_KEYS):
            # Counted from each row's first attended token, padding at 0: what `generate` uses with a mask.
            kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
        return self._model(*args, **kwargs)


class SampledTokenLogps:
    """Context manager: hooks that keep, while `generate` runs, each sampled token's log-probability under its logits
    divided by the temperature (TRL's `old_logps` convention: no top-k/top-p). Call t of the model returns token t's
    logits, and token t is the last `input_ids` of call t + 1; the final token is read from the completions."""

    def __init__(self, model: torch.nn.Module, temperature: float):
        self.model, self.temperature = model, temperature
        self._steps: list[torch.Tensor] = []
        self._pending: torch.Tensor | None = None

    def __enter__(self) -> "SampledTokenLogps":
        self._handles = [
            self.model.register_forward_pre_hook(self._read_sampled_token, with_kwargs=True),
            self.model.register_forward_hook(self._keep_distribution),
        ]
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()

    def _read_sampled_token(self, module, args, kwargs):
        if self._pending is not None:
            self._steps.append(self._pending.gather(1, kwargs["input_ids"][:, -1:]))
            self._pending = None

    def _keep_distribution(self, module, args, output):
        self._pending = torch.log_softmax(output.logits[:, -1].float() / self.temperature, dim=-1)

    def per_token(self, completion_ids: list[list[int]]) -> torch.Tensor | None:
        """`(rows, longest completion)` log-probs, 0 after each row's end; `None` if the calls do not match."""
        lengths = torch.tensor([len(ids) for ids in completion_ids])
        length = int(lengths.max()) if len(lengths) else 0
        if self._pending is None or len(self._steps) + 1 != length:
            return None
        last = [ids[-1] if len(ids) == length else 0 for ids in completion_ids]
        last = torch.tensor(last, device=self._pending.device)[:, None]
        logps = torch.cat([*self._steps, self._pending.gather(1, last)], dim=1)
        return logps.masked_fill(torch.arange(length) >= lengths[:, None].to(logps.device), 0.0)


class ScoringForwardsMixin:
    """The wrappers of the module docstring."""

    _scoring_forwards: list | None = None
    _policy_rows: torch.Tensor | None = None  # rows the next recorded forward scores (the `old_logps` one)
    _skipped_loss_rows: torch.Tensor | None = None  # rows of the loss forward whose `old_logps` were skipped
    _generated_logps: tuple[torch.Tensor, torch.Tensor] | None = None  # (per-token log-probs, rows the policy drew)
    _old_logps_generated = False  # the last generation batch's `old_logps` were read while generating

    def _rows_sampled_by_policy(self, num_rows: int) -> torch.Tensor:
        """Which local rows of a generation batch the policy sampled (all; J-BOND: its policy slot)."""
        return torch.ones(num_rows, dtype=torch.bool)

    def _reads_generation_logps(self) -> bool:
        """Whether `old_logps` can be read while generating: plain `generate`, one update per generation batch."""
        args = self.args
        on_policy = args.num_iterations == 1 and args.steps_per_generation == args.gradient_accumulation_steps
        return on_policy and not (self.use_vllm or self.use_transformers_continuous_batching)

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields):
        if images is not None or multimodal_fields or not self._reads_generation_logps():
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields)
        unwrapped = self.accelerator.unwrap_model(self.model_wrapped)
        model = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped
        with SampledTokenLogps(model, self.temperature) as sampled:
            completion_ids = super()._generate_single_turn(prompt_ids, images, multimodal_fields)
        logps = sampled.per_token(completion_ids)
        self._generated_logps = None if logps is None else (logps, self._rows_sampled_by_policy(len(prompt_ids)))
        return completion_ids

    def _generate_and_score_completions(self, inputs):
        self._old_logps_generated, self._generated_logps = False, None
        output = super()._generate_and_score_completions(inputs)
        if self._old_logps_generated:  # on-policy: the loss reads these rows at ratio exactly 1
            output[OLD_LOGPS_SKIPPED] = torch.ones_like(output["old_logps"], dtype=torch.bool)
        return output

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        model = _WithPositionIds(model)
        rows, self._policy_rows = self._policy_rows, None  # only the first recorded forward: RLOO's `old_logps`
        generated = self._read_generated_logps(input_ids.size(0), logits_to_keep, rows)
        if generated is not None:
            self._old_logps_generated = True
            output = (generated.to(input_ids.device), None, None)
        elif rows is None:
            output = super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )
        else:  # J-BOND's policy rows: its batches are text-only (multimodal inputs would need indexing by image)
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

    def _read_generated_logps(self, num_rows, num_tokens, rows):
        """The log-probs read while generating, for this forward's rows (all, or `rows`; 0 elsewhere), if the policy
        sampled every one of them; they serve the first forward after generating only (RLOO's `old_logps` one)."""
        generated, self._generated_logps = self._generated_logps, None
        if generated is None:
            return None
        logps, sampled_by_policy = generated
        wanted = torch.ones(num_rows, dtype=torch.bool)
        if rows is not None:
            wanted = torch.isin(torch.arange(num_rows), rows.cpu())
        if logps.shape != (num_rows, num_tokens) or not sampled_by_policy[wanted].all():
            return None
        return logps.masked_fill(~wanted[:, None].to(logps.device), 0.0)

    def _compute_loss(self, model, inputs):
        inputs, kept_fraction = self._rows_with_weight(inputs)
        skipped = inputs.get(OLD_LOGPS_SKIPPED)
        self._skipped_loss_rows = skipped if skipped is not None and skipped.any() else None
        if self._skipped_loss_rows is not None:  # with log-probs p − sg(p) (value 0): ratio exp(0 − 0) = 1
            inputs = {**inputs, "old_logps": inputs["old_logps"].masked_fill(skipped, 0.0)}
        try:
            return super()._compute_loss(model, inputs) * kept_fraction
        finally:
            self._skipped_loss_rows = None

    def _rows_with_weight(self, inputs):
        """The batch without the rows of loss weight (`advantages`) 0, and the fraction of rows kept.

        RLOO's loss is a mean over rows of terms ∝ w, so mean(kept rows)·(kept fraction) is the whole batch's. Every
        process keeps as many rows (topped up with weight-0 ones): RLOO gathers per-row clip statistics, so the
        logged `entropy` and clip ratios are over the rows kept.
        """
        weights = inputs["advantages"]
        num_rows = weights.size(0)
        multimodal = any(key in inputs for key in _OWN_POSITION_KEYS)
        if multimodal or self.aux_loss_enabled:  # an aux loss is added unscaled: it would be rescaled
            return inputs, 1.0
        has_weight = weights != 0
        count = max(int(self.accelerator.gather(has_weight.sum().reshape(1)).max()), 1)
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
        """Yield the per-token log-probs of each forward, in call order ([policy, reference if beta != 0]). With
        `policy_rows`, the first (`old_logps`) forward scores only those; the caller flags the others as skipped."""
        self._scoring_forwards = []
        self._policy_rows = policy_rows
        try:
            yield self._scoring_forwards
        finally:
            self._scoring_forwards = None
            self._policy_rows = None
