"""[`LoraAnchor`]: the anchor as a second LoRA adapter of the policy's PeftModel."""

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

from .._trl_compat import use_adapter
from ._engines import _check_no_fsdp1, _gathered
from .state import ANCHOR_WEIGHTS_NAME, AnchorState, load_weights


if TYPE_CHECKING:
    from peft import PeftModel


@contextlib.contextmanager
def _requires_grad_kept(model: "PeftModel") -> Iterator[None]:
    """On exit every parameter gets back the `requires_grad` flag it had on entry, and a new one is frozen: PEFT's
    `add_adapter`, `set_adapter` and `disable_adapter` change the flags of whole adapters."""
    flags = {name: param.requires_grad for name, param in model.named_parameters()}
    try:
        yield
    finally:
        for name, param in model.named_parameters():
            param.requires_grad_(flags.get(name, False))


class LoraAnchor(AnchorState):
    """
    Anchor held as a second LoRA adapter of the policy's PeftModel; the reference is the model with adapters disabled.

    The anchor adapter reuses the policy adapter's config and starts as a copy of it (a fresh LoRA has B = 0, so the
    anchor then starts at π_ref). It is frozen and takes the policy adapter's dtype, so that an anchor equal to the
    policy computes the same log-probabilities; a non-fp32 adapter gets an fp32 shadow ([`AnchorState`]).

    Args:
        model ([`~peft.PeftModel`]):
            The policy, unwrapped (e.g. `trainer.model`). The anchor adapter is added to it.
        adapter_name (`str`, *optional*, defaults to `"anchor"`):
            Name of the anchor adapter.
        policy_adapter (`str`, *optional*, defaults to `"default"`):
            Name of the trained adapter. It stays the active adapter and keeps its `requires_grad` flags.

    Example:
    ```python
    >>> from peft import LoraConfig, get_peft_model
    >>> from transformers import AutoModelForCausalLM

    >>> model = get_peft_model(AutoModelForCausalLM.from_pretrained("Qwen/Qwen3-0.6B"), LoraConfig(r=8))
    >>> anchor = LoraAnchor(model)
    >>> anchor.ema_update(0.02)  # after an optimizer step
    >>> with anchor.active() as anchor_model:
    ...     outputs = anchor_model.generate(**inputs)
    ```
    """

    kind = "lora"

    def __init__(self, model: "PeftModel", adapter_name: str = "anchor", policy_adapter: str = "default"):
        from peft import LoraConfig

        if policy_adapter not in model.peft_config:
            raise ValueError(f"The model has no adapter {policy_adapter!r}; it has {sorted(model.peft_config)}.")
        if adapter_name in model.peft_config:
            raise ValueError(
                f"The model already has an adapter named {adapter_name!r}; choose another `adapter_name`."
            )
        config = model.peft_config[policy_adapter]
        if not isinstance(config, LoraConfig):
            raise ValueError(
                f"The anchor must be a LoRA adapter, but the policy adapter is a {type(config).__name__}."
            )
        if config.modules_to_save:
            raise ValueError(
                f"The policy adapter trains `modules_to_save={config.modules_to_save}`, which a LoRA anchor cannot "
                "hold (and vLLM weight sync renames only the policy's copies). Train those modules with LoRA, "
                "e.g. add them to `target_modules`, or use full fine-tuning with a `ModelAnchor`."
            )
        if config.trainable_token_indices:
            raise ValueError(
                "The policy adapter trains `trainable_token_indices`, which a LoRA anchor cannot hold. Unset it, or "
                "use full fine-tuning with a `ModelAnchor`."
            )
        _check_no_fsdp1(model)
        self.model = model
        self.adapter_name = adapter_name
        self.policy_adapter = policy_adapter

        if model.active_adapter != policy_adapter:
            model.set_adapter(policy_adapter)
        with _requires_grad_kept(model):  # e.g. a frozen `lora_A` stays frozen; the new anchor adapter is frozen
            model.add_adapter(adapter_name, config)
        for _, anchor_param, policy_param in self._named_pairs():
            with _gathered([anchor_param, policy_param]), torch.no_grad():
                anchor_param.data = anchor_param.data.to(policy_param.dtype)
                anchor_param.copy_(policy_param)
        super().__init__()

    def _named_pairs(self) -> Iterator[tuple[str, torch.nn.Parameter, torch.nn.Parameter]]:
        """Yield `(anchor name, anchor param, policy param)`, pairing the names that differ in the adapter part."""
        params = dict(self.model.named_parameters())
        found = False
        for name, param in params.items():
            parts = name.split(".")
            if self.policy_adapter not in parts:
                continue
            parts[parts.index(self.policy_adapter)] = self.adapter_name
            anchor_name = ".".join(parts)
            if anchor_name not in params:
                raise RuntimeError(f"The policy tensor {name!r} has no anchor counterpart {anchor_name!r}.")
            found = True
            yield anchor_name, params[anchor_name], param
        if not found:
            raise RuntimeError(f"The model has no parameters of the adapter {self.policy_adapter!r}.")

    @contextlib.contextmanager
    def active(self) -> Iterator["PeftModel"]:
        """Context manager yielding the model with the anchor adapter active and frozen. On exit the policy adapter is
        active again and every `requires_grad` flag is restored (PEFT's `set_adapter` unfreezes whole adapters)."""
        with _requires_grad_kept(self.model), use_adapter(self.model, self.adapter_name):
            for _, anchor_param, _ in self.pairs():
                anchor_param.requires_grad_(False)
            yield self.model

    def routes_rows_by_views(self) -> bool:
        """Whether [`rows_routed`] computes every LoRA layer of the model: plain LoRA on linear layers (no DoRA or
        other variant, no embedding LoRA, nothing merged); otherwise PEFT's `adapter_names` routing serves."""
        from peft.tuners.lora import LoraLayer

        layers = [module for module in self.model.modules() if isinstance(module, LoraLayer)]
        return all(not layer.merged and not layer.lora_variant and not layer.lora_embedding_A for layer in layers)

    @contextlib.contextmanager
    def rows_routed(self, routes: list[tuple[str, slice]]) -> Iterator["PeftModel"]:
        """Context manager inside which the batch rows of each `(adapter name, rows)` route, `rows` a slice, go through
        that adapter, for generation (no gradients); every `requires_grad` flag is restored on exit.

        A forward hook on each LoRA layer adds each route's `scaling · B(A(x))` to its rows of the base output through
        views, faster than PEFT's `adapter_names` index lists (docs/jbond_trainer.md).
        """
        from peft.tuners.lora import LoraLayer

        def add_adapter_outputs(layer, args, output):
            x = args[0]
            for name, rows in routes:
                lora_A = layer.lora_A[name]
                delta = layer.lora_B[name](lora_A(layer.lora_dropout[name](x[rows].to(lora_A.weight.dtype))))
                output[rows] += (delta * layer.scaling[name]).to(output.dtype)
            return output

        layers = [module for module in self.model.modules() if isinstance(module, LoraLayer) and module.lora_A]
        handles = [layer.register_forward_hook(add_adapter_outputs) for layer in layers]
        try:
            with _requires_grad_kept(self.model), self.model.disable_adapter():
                yield self.model
        finally:
            for handle in handles:
                handle.remove()

    def _record(self) -> dict[str, Any]:
        return {"kind": self.kind, "adapter_name": self.adapter_name}

    def _write_weights(self, directory: Path, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        save_file({name: tensor.cpu().contiguous() for name, tensor in state.items()}, directory / ANCHOR_WEIGHTS_NAME)
        dtype = str(self.pairs()[0][1].dtype).removeprefix("torch.")
        return {"policy_adapter": self.policy_adapter, "dtype": dtype, "shadow_dtype": "float32"}

    def _read_weights(self, directory: Path) -> dict[str, torch.Tensor]:
        return load_weights(directory / ANCHOR_WEIGHTS_NAME)
