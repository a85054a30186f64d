"""The J-BOND anchor π_a: an exponential moving average of the policy weights (BOND arXiv v1, eq. 18).

J-BOND samples its two Best-of-2 baseline completions from the anchor and moves the anchor towards the policy after
every *optimizer* step: θ_a ← (1 − η)·θ_a + η·θ. Iterative BOND instead copies the policy into the anchor every
`period` steps, and a fixed anchor (η = 0) is plain BOND against π_ref. Two holders share one interface:

- [`LoraAnchor`]: a second LoRA adapter of the policy's [`~peft.PeftModel`]. The three views share one base model:
  the reference π_ref (adapters disabled), the anchor (adapter `"anchor"`) and the policy (adapter `"default"`).
- [`ModelAnchor`]: a separate frozen copy of the policy, for full fine-tuning.

Each keeps an fp32 *shadow* as the true EMA state when its compute tensors are not fp32: an η = 0.02 update of a bf16
weight mostly rounds away. [`AnchorCallback`] applies the update once per optimizer step and checkpoints the anchor,
since `Trainer` resume reloads only the active adapter and would silently reset it.

**Factor-space caveat (LoRA).** The EMA runs on the factors A and B separately, so the anchor's weight delta B̄Ā is
not the EMA of the policy's BA: the error is a cross term ∝ η(1 − η)(B − B̄)(A − Ā), small for η ≈ 0.02 and zero when
`lora_A` is frozen (then ΔW is linear in B).

**Distributed.** DDP and ZeRO-1/2 apply the identical update on every rank. Under ZeRO-3 (LoRA only, untested) each
anchor/policy pair is gathered in turn and written back from rank 0. FSDP1 is rejected (adapters sit at different
offsets of flat parameters); FSDP2/DTensor parameters are rejected as untested.
"""

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ._trl_compat import use_adapter
from .core.ema import ema_update_


if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel


ANCHOR_WEIGHTS_NAME = "anchor.safetensors"
ANCHOR_CONFIG_NAME = "anchor.json"
ANCHOR_SUBFOLDER = "anchor"


def _gathered(params: list[torch.Tensor]) -> contextlib.AbstractContextManager:
    """Under ZeRO-3, gather `params` and write them back from rank 0 on exit; a no-op otherwise."""
    if not is_deepspeed_zero3_enabled():
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=0)


def _check_layout(model: torch.nn.Module) -> None:
    """Reject sharding layouts the anchor cannot update correctly."""
    if not torch.distributed.is_available():
        return
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.tensor import DTensor

    if any(isinstance(module, FullyShardedDataParallel) for module in model.modules()):
        raise ValueError(
            "The anchor does not support FSDP1: the policy and anchor tensors sit at different offsets of flat "
            "parameters. Use DeepSpeed ZeRO-2 (or ZeRO-3 with a LoRA anchor) or DDP."
        )
    if any(isinstance(param, DTensor) for param in model.parameters()):
        raise NotImplementedError(
            "The anchor does not support DTensor parameters (FSDP2 / tensor parallelism) yet: its fp32 shadows are "
            "full tensors. Use DeepSpeed ZeRO-2 or DDP."
        )


def _read_config(directory: str | os.PathLike, kind: str) -> dict[str, Any]:
    config_path = Path(directory) / ANCHOR_CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(
            f"No saved anchor in {directory!s}: `{ANCHOR_CONFIG_NAME}` is missing. Point to a directory written by "
            f"`{'LoraAnchor' if kind == 'lora' else 'ModelAnchor'}.save` (checkpoints keep it in "
            f"`checkpoint-N/{ANCHOR_SUBFOLDER}/`)."
        )
    config = json.loads(config_path.read_text())
    if config.get("kind") != kind:
        raise ValueError(f"The anchor saved in {directory!s} is of kind {config.get('kind')!r}, expected {kind!r}.")
    return config


def _write_config(directory: Path, config: dict[str, Any]) -> None:
    (directory / ANCHOR_CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


class LoraAnchor:
    """
    Anchor held as a second LoRA adapter of the policy's PeftModel; the reference is the model with adapters disabled.

    The anchor adapter reuses the policy adapter's config and starts as a copy of it (a fresh LoRA has B = 0, so the
    anchor then starts at π_ref). It is frozen and takes the policy adapter's dtype, so that an anchor equal to the
    policy computes the same log-probabilities. When the adapter is not fp32 (bf16, or cast to bf16 on a quantised
    base), an fp32 shadow is the true EMA state and the compute adapter receives a cast copy after every update; an
    fp32 adapter is its own EMA state, so it costs no shadow. Checkpoints store the fp32 state.

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
        self.model = model
        self.adapter_name = adapter_name
        self.policy_adapter = policy_adapter

        if model.active_adapter != policy_adapter:
            model.set_adapter(policy_adapter)
        # Keep every existing `requires_grad` flag (e.g. a frozen `lora_A`), whatever `add_adapter` does to them.
        flags = {name: param.requires_grad for name, param in model.named_parameters()}
        model.add_adapter(adapter_name, config)
        for name, param in model.named_parameters():
            param.requires_grad_(flags.get(name, False))
        self._shadows: dict[str, torch.Tensor] = {}
        for name, anchor_param, policy_param in self._pairs():
            with _gathered([anchor_param, policy_param]), torch.no_grad():
                anchor_param.data = anchor_param.data.to(policy_param.dtype)
                anchor_param.copy_(policy_param)
                # An fp32 adapter is its own EMA state; a lower-precision one (or a ZeRO-3 partition) needs a shadow.
                if anchor_param.dtype != torch.float32 or hasattr(anchor_param, "ds_id"):
                    self._shadows[name] = anchor_param.detach().float().clone()

    def _pairs(self) -> Iterator[tuple[str, torch.nn.Parameter, torch.nn.Parameter]]:
        """Yield `(anchor name, anchor param, policy param)`, pairing the names that differ in the adapter part."""
        _check_layout(self.model)
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

    def _shadow(self, name: str, device: torch.device) -> torch.Tensor | None:
        # Shadows follow the model when it moves after construction (DeepSpeed moves it to the GPU in `train()`).
        if name not in self._shadows:
            return None  # an fp32 adapter tensor is its own EMA state
        if self._shadows[name].device != device:
            self._shadows[name] = self._shadows[name].to(device)
        return self._shadows[name]

    def ema_update(self, rate: float) -> None:
        """
        Move the anchor towards the policy: θ_a ← (1 − η)·θ_a + η·θ on the fp32 shadows (BOND arXiv v1, eq. 18).

        Args:
            rate (`float`):
                EMA rate η ∈ [0, 1]: `0` leaves the anchor unchanged, `1` copies the policy.
        """
        for name, anchor_param, policy_param in self._pairs():
            with _gathered([anchor_param, policy_param]):
                shadow = self._shadow(name, anchor_param.device)
                ema_update_([anchor_param], [policy_param], rate, None if shadow is None else [shadow])

    @torch.no_grad()
    def hard_update(self) -> None:
        """Copy the policy into the anchor (θ_a ← θ), as iterative BOND does every `period` steps."""
        for name, anchor_param, policy_param in self._pairs():
            with _gathered([anchor_param, policy_param]):
                state = self._shadow(name, anchor_param.device)
                state = anchor_param if state is None else state
                state.copy_(policy_param)
                anchor_param.copy_(state)

    @contextlib.contextmanager
    def active(self) -> Iterator["PeftModel"]:
        """
        Context manager inside which the model computes and generates with the anchor adapter.

        The anchor stays frozen inside; on exit the policy adapter is active again and every parameter gets back the
        `requires_grad` flag it had on entry (PEFT's `set_adapter` would otherwise unfreeze the whole adapter).

        Yields:
            [`~peft.PeftModel`]: the model, with the anchor adapter active.
        """
        flags = [(param, param.requires_grad) for param in self.model.parameters()]
        try:
            with use_adapter(self.model, self.adapter_name):
                for _, anchor_param, _ in self._pairs():
                    anchor_param.requires_grad_(False)
                yield self.model
        finally:
            for param, flag in flags:
                param.requires_grad_(flag)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The fp32 EMA state (live tensors, not copies) keyed by anchor parameter name: the shadow, or the fp32
        adapter tensor itself when it needs none."""
        return {name: self._shadows.get(name, anchor_param) for name, anchor_param, _ in self._pairs()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """
        Restore the shadows and the compute adapter from `state`, as returned by [`~LoraAnchor.state_dict`].

        Args:
            state (`dict[str, torch.Tensor]`):
                One tensor per anchor parameter name, any floating dtype and device.
        """
        names = {name for name, _, _ in self._pairs()}
        missing, unexpected = names - state.keys(), state.keys() - names
        if missing or unexpected:
            raise KeyError(
                f"The anchor state does not match adapter {self.adapter_name!r}: missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(unexpected)[:3]} ({len(missing)} missing, {len(unexpected)} unexpected)."
            )
        for name, anchor_param, policy_param in self._pairs():
            with _gathered([anchor_param, policy_param]):
                target = self._shadow(name, anchor_param.device)
                target = anchor_param if target is None else target
                if state[name].shape != target.shape:
                    raise ValueError(
                        f"Anchor tensor {name!r} has shape {tuple(state[name].shape)}, expected {tuple(target.shape)}."
                    )
                target.copy_(state[name])
                anchor_param.copy_(target)

    def save(self, directory: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
        """
        Write the shadows to `directory/anchor.safetensors` and a description to `directory/anchor.json`.

        Args:
            directory (`str` or `os.PathLike`):
                Target directory, created if needed.
            metadata (`dict[str, Any]`, *optional*):
                JSON-serialisable entries added to `anchor.json` (e.g. the EMA rate and step).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        shadows = {name: tensor.detach().float().cpu().contiguous() for name, tensor in self.state_dict().items()}
        save_file(shadows, directory / ANCHOR_WEIGHTS_NAME)
        compute_dtype = next(param.dtype for _, param, _ in self._pairs())
        config = {
            "kind": self.kind,
            "adapter_name": self.adapter_name,
            "policy_adapter": self.policy_adapter,
            "dtype": str(compute_dtype).removeprefix("torch."),
            "shadow_dtype": "float32",
        }
        _write_config(directory, {**(metadata or {}), **config})

    def load(self, directory: str | os.PathLike) -> None:
        """
        Restore the anchor written by [`~LoraAnchor.save`] in `directory`.

        Raises:
            FileNotFoundError: if `directory` holds no saved anchor.
        """
        config = _read_config(directory, self.kind)
        if config["adapter_name"] != self.adapter_name:
            raise ValueError(
                f"The anchor saved in {directory!s} is the adapter {config['adapter_name']!r}, but this anchor is "
                f"{self.adapter_name!r}; build it with `LoraAnchor(model, adapter_name={config['adapter_name']!r})`."
            )
        self.load_state_dict(load_file(Path(directory) / ANCHOR_WEIGHTS_NAME))


class ModelAnchor:
    """
    Anchor held as a separate full copy of the policy (full fine-tuning).

    The anchor starts from `anchor_model`'s own weights (load it from the same checkpoint as the policy) and is frozen
    and put in eval mode. The EMA covers the parameters *and* the floating-point buffers, paired by name (TRL's
    `SyncRefModelCallback` skips buffers). When the anchor is not fp32, an fp32 shadow of every floating tensor is the
    true EMA state (twice the anchor's memory in bf16); set `fp32_shadow=False` to update in place instead.

    Args:
        anchor_model ([`~transformers.PreTrainedModel`]):
            The anchor, with the same architecture and parameter names as the policy.
        policy_model ([`~transformers.PreTrainedModel`]):
            The policy, unwrapped (e.g. `trainer.model`).
        fp32_shadow (`bool`, *optional*):
            Whether to keep fp32 shadows. Defaults to whether any anchor tensor is not fp32.
    """

    kind = "model"

    def __init__(
        self, anchor_model: "PreTrainedModel", policy_model: "PreTrainedModel", fp32_shadow: bool | None = None
    ):
        if is_deepspeed_zero3_enabled():
            raise NotImplementedError(
                "A full-model anchor is not supported under DeepSpeed ZeRO-3 yet. Use ZeRO-2, or train LoRA adapters "
                "(`peft_config`) so the anchor is a `LoraAnchor`."
            )
        self.model = anchor_model.requires_grad_(False).eval()
        self.policy_model = policy_model
        anchor_tensors = {name: tensor for name, tensor, _ in self._pairs()}
        if fp32_shadow is None:
            fp32_shadow = any(tensor.dtype != torch.float32 for tensor in anchor_tensors.values())
        self._shadows: dict[str, torch.Tensor] = (
            {name: tensor.detach().float().clone() for name, tensor in anchor_tensors.items()} if fp32_shadow else {}
        )
        self._names = set(anchor_tensors)

    @staticmethod
    def _floating_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        tensors = dict(model.named_parameters())
        tensors.update((name, buffer) for name, buffer in model.named_buffers() if buffer.is_floating_point())
        return tensors

    def _pairs(self) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        """Yield `(name, anchor tensor, policy tensor)` for every parameter and floating buffer."""
        _check_layout(self.model)
        _check_layout(self.policy_model)
        anchor, policy = self._floating_tensors(self.model), self._floating_tensors(self.policy_model)
        if anchor.keys() != policy.keys():
            raise ValueError(
                "The anchor and the policy must have the same parameter and buffer names (pass the unwrapped policy); "
                f"only in the anchor: {sorted(anchor.keys() - policy.keys())[:3]}, only in the policy: "
                f"{sorted(policy.keys() - anchor.keys())[:3]}."
            )
        for name, tensor in anchor.items():
            if tensor.shape != policy[name].shape:
                raise ValueError(
                    f"{name!r} has shape {tuple(tensor.shape)} in the anchor, {tuple(policy[name].shape)} in the "
                    "policy."
                )
            yield name, tensor, policy[name]

    def _shadow(self, name: str, device: torch.device) -> torch.Tensor | None:
        if name not in self._shadows:
            return None
        if self._shadows[name].device != device:
            self._shadows[name] = self._shadows[name].to(device)
        return self._shadows[name]

    def ema_update(self, rate: float) -> None:
        """
        Move the anchor towards the policy: θ_a ← (1 − η)·θ_a + η·θ over parameters and floating buffers (eq. 18).

        Args:
            rate (`float`):
                EMA rate η ∈ [0, 1]: `0` leaves the anchor unchanged, `1` copies the policy.
        """
        targets, sources, shadows = [], [], []
        for name, anchor_tensor, policy_tensor in self._pairs():
            targets.append(anchor_tensor)
            sources.append(policy_tensor)
            shadows.append(self._shadow(name, anchor_tensor.device))
        ema_update_(targets, sources, rate, shadows if self._shadows else None)

    @torch.no_grad()
    def hard_update(self) -> None:
        """Copy the policy into the anchor (θ_a ← θ), as iterative BOND does every `period` steps."""
        for name, anchor_tensor, policy_tensor in self._pairs():
            shadow = self._shadow(name, anchor_tensor.device)
            if shadow is None:
                anchor_tensor.copy_(policy_tensor)
            else:
                shadow.copy_(policy_tensor)
                anchor_tensor.copy_(shadow)

    def active(self) -> contextlib.AbstractContextManager["PreTrainedModel"]:
        """Context manager yielding the anchor model, for the same call sites as [`LoraAnchor.active`]."""
        return contextlib.nullcontext(self.model)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The true anchor state (the live tensors, not copies): fp32 shadows if kept, else the anchor's tensors."""
        if self._shadows:
            return dict(self._shadows)
        return {name: tensor.detach() for name, tensor, _ in self._pairs()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """
        Restore the anchor from `state`, as returned by [`~ModelAnchor.state_dict`].

        Every parameter must be present. Buffers absent from `state` are left as they are: non-persistent buffers,
        such as rotary `inv_freq`, are rebuilt from the config and not saved by `save_pretrained`.
        """
        params = {name for name, _ in self.model.named_parameters()}
        missing, unexpected = params - state.keys(), state.keys() - self._names
        if missing or unexpected:
            raise KeyError(
                f"The anchor state does not match the anchor model: missing {sorted(missing)[:3]}, unexpected "
                f"{sorted(unexpected)[:3]} ({len(missing)} missing, {len(unexpected)} unexpected)."
            )
        for name, anchor_tensor, _ in self._pairs():
            if name not in state:
                continue
            if state[name].shape != anchor_tensor.shape:
                raise ValueError(
                    f"Anchor tensor {name!r} has shape {tuple(state[name].shape)}, expected "
                    f"{tuple(anchor_tensor.shape)}."
                )
            shadow = self._shadow(name, anchor_tensor.device)
            if shadow is None:
                anchor_tensor.copy_(state[name])
            else:
                shadow.copy_(state[name])
                anchor_tensor.copy_(shadow)

    def save(self, directory: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
        """
        Write the anchor to `directory` with `save_pretrained` (the fp32 shadows if kept) plus `anchor.json`.

        The directory loads with `AutoModelForCausalLM.from_pretrained(directory)` for inspection.

        Args:
            directory (`str` or `os.PathLike`):
                Target directory, created if needed.
            metadata (`dict[str, Any]`, *optional*):
                JSON-serialisable entries added to `anchor.json` (e.g. the EMA rate and step).
        """
        directory = Path(directory)
        # Map every name, tied aliases included, to its shadow, so tied weights still share storage when saved.
        aliases = self._aliases()
        shadow_of = {
            alias: self._shadows[name]
            for name, tensor in self._floating_tensors(self.model).items()
            if name in self._shadows
            for alias in aliases[id(tensor)]
        }
        state = {name: shadow_of.get(name, tensor) for name, tensor in self.model.state_dict().items()}
        self.model.save_pretrained(directory, state_dict=state)
        dtype = next(self.model.parameters()).dtype
        config = {"kind": self.kind, "dtype": str(dtype).removeprefix("torch."), "fp32_shadow": bool(self._shadows)}
        _write_config(directory, {**(metadata or {}), **config})

    def _aliases(self) -> dict[int, list[str]]:
        """`id(tensor)` → every name of that tensor in the anchor model, tied aliases included."""
        aliases: dict[int, list[str]] = {}
        for name, tensor in [
            *self.model.named_parameters(remove_duplicate=False),
            *self.model.named_buffers(remove_duplicate=False),
        ]:
            aliases.setdefault(id(tensor), []).append(name)
        return aliases

    def load(self, directory: str | os.PathLike) -> None:
        """
        Restore the anchor written by [`~ModelAnchor.save`] in `directory`.

        Raises:
            FileNotFoundError: if `directory` holds no saved anchor.
        """
        _read_config(directory, self.kind)
        saved: dict[str, torch.Tensor] = {}
        for path in sorted(Path(directory).glob("model*.safetensors")):
            saved.update(load_file(path))
        aliases, state = self._aliases(), {}
        for name, tensor in self._floating_tensors(self.model).items():
            alias = next((alias for alias in aliases[id(tensor)] if alias in saved), None)
            if alias is not None:
                state[name] = saved[alias]
        self.load_state_dict(state)


def anchor_memory_bytes(anchor: LoraAnchor | ModelAnchor) -> int:
    """
    Bytes held by the anchor on this rank: its compute tensors plus its fp32 shadows.

    For a [`LoraAnchor`] the compute tensors are the anchor adapter's; for a [`ModelAnchor`], all of the anchor model's
    parameters and buffers.
    """
    if isinstance(anchor, LoraAnchor):
        compute = [param for _, param, _ in anchor._pairs()]
    else:
        compute = [*anchor.model.parameters(), *anchor.model.buffers()]
    tensors = [*compute, *anchor._shadows.values()]
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


class AnchorCallback(TrainerCallback):
    """
    Moves the anchor once per optimizer step and saves/restores it with checkpoints.

    `Trainer` calls `on_step_end` once per optimizer step, after gradient accumulation, which is the cadence of eq. 18
    (never per micro-batch). On every checkpoint the anchor goes to `checkpoint-N/anchor/`; resuming needs an explicit
    [`~AnchorCallback.load_from_checkpoint`] after the model weights were restored, since `Trainer` reloads only the
    active adapter.

    Args:
        anchor ([`LoraAnchor`] or [`ModelAnchor`]):
            The anchor to move.
        mode (`str`, *optional*, defaults to `"ema"`):
            `"ema"` (J-BOND: θ_a ← (1 − η)·θ_a + η·θ every step), `"periodic"` (iterative BOND: θ_a ← θ every
            `period` steps) or `"fixed"` (the anchor never moves).
        rate (`float`, *optional*, defaults to `0.02`):
            EMA rate η ∈ [0, 1], used when `mode="ema"`.
        period (`int`, *optional*, defaults to `1000`):
            Optimizer steps between hard copies, used when `mode="periodic"`.
        save_with_checkpoints (`bool`, *optional*, defaults to `True`):
            Whether `on_save` writes the anchor into `checkpoint-N/`. The trl-bon trainers set `False`: they write it
            into the checkpoint before the checkpoint becomes visible (atomic checkpoints).
    """

    def __init__(
        self,
        anchor: LoraAnchor | ModelAnchor,
        mode: str = "ema",
        rate: float = 0.02,
        period: int = 1000,
        save_with_checkpoints: bool = True,
    ):
        if mode not in ("ema", "periodic", "fixed"):
            raise ValueError(f"`mode` must be 'ema', 'periodic' or 'fixed', got {mode!r}.")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"The anchor EMA rate must lie in [0, 1], got {rate}.")
        if period < 1:
            raise ValueError(f"The anchor update `period` must be a positive number of steps, got {period}.")
        self.anchor = anchor
        self.mode = mode
        self.rate = rate
        self.period = period
        self.save_with_checkpoints = save_with_checkpoints

    def on_step_end(self, args, state, control, **kwargs):
        if self.mode == "ema":
            self.anchor.ema_update(self.rate)
        elif self.mode == "periodic" and state.global_step % self.period == 0:
            self.anchor.hard_update()

    def on_save(self, args, state, control, **kwargs):
        # Every rank holds the same anchor, so only the saving process writes it.
        if args.should_save and self.save_with_checkpoints:
            self.save_to_checkpoint(Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}", state)

    def save_to_checkpoint(self, checkpoint_dir: str | os.PathLike, state) -> None:
        """
        Write the anchor to `checkpoint_dir/anchor/` with its update rule and `state.global_step`.

        Args:
            checkpoint_dir (`str` or `os.PathLike`):
                A `checkpoint-N` directory (or its staging copy).
            state ([`~transformers.TrainerState`]):
                The trainer state of the checkpoint.
        """
        metadata = {"mode": self.mode, "rate": self.rate, "period": self.period, "global_step": state.global_step}
        self.anchor.save(Path(checkpoint_dir) / ANCHOR_SUBFOLDER, metadata=metadata)

    def load_from_checkpoint(self, checkpoint_dir: str | os.PathLike) -> None:
        """
        Restore the anchor from `checkpoint_dir/anchor/`, after the trainer restored the model weights.

        Args:
            checkpoint_dir (`str` or `os.PathLike`):
                A `checkpoint-N` directory written while this callback was attached.
        """
        self.anchor.load(Path(checkpoint_dir) / ANCHOR_SUBFOLDER)


__all__ = ["AnchorCallback", "LoraAnchor", "ModelAnchor", "anchor_memory_bytes"]
