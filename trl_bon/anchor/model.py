"""[`ModelAnchor`]: the anchor as a separate frozen copy of the policy (full fine-tuning)."""

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate.utils import extract_model_from_parallel

from ._engines import FULL_MODEL_ZERO3_REFUSAL, _check_no_fsdp1
from .state import AnchorState, load_weights


if TYPE_CHECKING:
    from transformers import PreTrainedModel


class ModelAnchor(AnchorState):
    """
    Anchor held as a separate full copy of the policy (full fine-tuning).

    The anchor starts from `anchor_model`'s own weights (load it from the same checkpoint as the policy) and is frozen
    and put in eval mode. The EMA covers the parameters *and* the floating-point buffers, paired by name (TRL's
    `SyncRefModelCallback` skips buffers). An fp32 shadow costs twice the anchor's memory in bf16.

    Args:
        anchor_model ([`~transformers.PreTrainedModel`]):
            The anchor, with the same architecture and parameter names as the policy; it may be wrapped by its engine
            (a DeepSpeed engine, DDP) or sharded in place by FSDP2 like the policy.
        policy_model ([`~transformers.PreTrainedModel`]):
            The policy, unwrapped (e.g. `trainer.model`).
        fp32_shadow (`bool`, *optional*):
            Whether to keep fp32 shadows. Defaults to whether any anchor tensor is not fp32.
    """

    kind = "model"

    def __init__(
        self, anchor_model: "PreTrainedModel", policy_model: "PreTrainedModel", fp32_shadow: bool | None = None
    ):
        if any(hasattr(param, "ds_id") for param in anchor_model.parameters()):
            raise NotImplementedError(FULL_MODEL_ZERO3_REFUSAL)
        # The engine's wrapper (whose `eval()` may return None) is kept by the caller; names come from the model.
        self.model = extract_model_from_parallel(anchor_model)
        _check_no_fsdp1(self.model)
        self.model.requires_grad_(False)
        self.model.eval()
        self.policy_model = policy_model
        super().__init__(fp32_shadow)

    @staticmethod
    def _floating_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        tensors = dict(model.named_parameters())
        tensors.update((name, buffer) for name, buffer in model.named_buffers() if buffer.is_floating_point())
        return tensors

    def _named_pairs(self) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        """Yield `(name, anchor tensor, policy tensor)` for every parameter and floating buffer."""
        anchor = self._floating_tensors(self.model)
        policy = self._floating_tensors(extract_model_from_parallel(self.policy_model))
        if anchor.keys() != policy.keys():
            raise ValueError(
                "The anchor and the policy must have the same parameter and buffer names (pass the unwrapped policy); "
                f"only in the anchor: {sorted(anchor.keys() - policy.keys())[:3]}, only in the policy: "
                f"{sorted(policy.keys() - anchor.keys())[:3]}."
            )
        for name, tensor in anchor.items():
            yield name, tensor, policy[name]

    def active(self) -> contextlib.AbstractContextManager["PreTrainedModel"]:
        """Context manager yielding the anchor model, for the same call sites as [`LoraAnchor.active`]."""
        return contextlib.nullcontext(self.model)

    def _optional_names(self) -> set[str]:
        # Non-persistent buffers, such as rotary `inv_freq`, are rebuilt from the config and not saved.
        return {name for name, _ in self.model.named_buffers()}

    def _compute_tensors(self) -> list[torch.Tensor]:
        return [*self.model.parameters(), *self.model.buffers()]

    def _write_weights(self, directory: Path, full: dict[str, torch.Tensor]) -> dict[str, Any]:
        """`save_pretrained` (the fp32 shadows if kept): the folder loads with `AutoModelForCausalLM.from_pretrained`
        for inspection."""
        if not self._shadows:  # keep the compute dtype when the anchor is its own state
            full = {name: full[name].to(anchor.dtype) for name, anchor, _ in self.pairs()}
        # Every name, tied aliases included, maps to its whole tensor, so tied weights still share storage when saved.
        aliases = self._aliases()
        floating = self._floating_tensors(self.model)
        state = {alias: full[name] for name, tensor in floating.items() for alias in aliases[id(tensor)]}
        for name, tensor in self.model.state_dict().items():
            if name not in state:  # integer buffers: never sharded, never averaged
                state[name] = tensor
        self.model.save_pretrained(directory, state_dict=state)
        dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        return {"dtype": dtype, "fp32_shadow": bool(self._shadows)}

    def _aliases(self) -> dict[int, list[str]]:
        """`id(tensor)` → every name of that tensor in the anchor model, tied aliases included."""
        aliases: dict[int, list[str]] = {}
        for name, tensor in [
            *self.model.named_parameters(remove_duplicate=False),
            *self.model.named_buffers(remove_duplicate=False),
        ]:
            aliases.setdefault(id(tensor), []).append(name)
        return aliases

    def _read_weights(self, directory: Path) -> dict[str, torch.Tensor]:
        saved: dict[str, torch.Tensor] = {}
        for path in sorted(directory.glob("model*.safetensors")):
            saved.update(load_weights(path))
        aliases, state = self._aliases(), {}
        for name, tensor in self._floating_tensors(self.model).items():
            alias = next((alias for alias in aliases[id(tensor)] if alias in saved), None)
            if alias is not None:
                state[name] = saved[alias]
        return state
