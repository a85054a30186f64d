"""The J-BOND anchor π_a: an exponential moving average of the policy weights (BOND arXiv v1, eq. 18).

J-BOND samples its two Best-of-2 baseline completions from the anchor and moves the anchor towards the policy after
every *optimizer* step: θ_a ← (1 − η)·θ_a + η·θ. Iterative BOND instead copies the policy into the anchor every
`period` steps, and a fixed anchor (η = 0) is plain BOND against π_ref.

[`AnchorState`] owns what every anchor shares: the (anchor, policy) tensor pairs, their fp32 shadows, the EMA, the
hard update, the state dict and the memory count. Two holders only say how the pairs are enumerated, how the anchor is
activated and how it is saved:

- [`LoraAnchor`]: a second LoRA adapter of the policy's [`~peft.PeftModel`]. The three views share one base model:
  the reference π_ref (adapters disabled), the anchor (adapter `"anchor"`) and the policy (adapter `"default"`).
- [`ModelAnchor`]: a separate frozen copy of the policy, for full fine-tuning.

An fp32 *shadow* is the true EMA state when the compute tensors are not fp32: an η = 0.02 update of a bf16 weight
mostly rounds away. [`AnchorCallback`] applies the update once per optimizer step, checkpoints the anchor (`Trainer`
resume reloads only the active adapter and would silently reset it) and restores it when training resumes.

**Factor-space caveat (LoRA).** The EMA runs on the factors A and B separately, so the anchor's weight delta B̄Ā is
not the EMA of the policy's BA: the error is a cross term ∝ η(1 − η)(B − B̄)(A − Ā), small for η ≈ 0.02 and zero when
`lora_A` is frozen (then ΔW is linear in B).

**Engines.** The EMA is elementwise, so it runs wherever the tensors live:

- DDP and DeepSpeed ZeRO-1/2: every rank holds the whole anchor and applies the identical update.
- FSDP2 (DTensor parameters): each rank updates its local shard of the anchor from its local shard of the policy,
  with the fp32 shadow sharded the same way; no gather. Saving gathers full tensors, loading re-shards them.
- DeepSpeed ZeRO-3 (LoRA anchor only): each pair is gathered in turn, updated on rank 0 and re-partitioned; saving
  gathers too.
- Refused, before any model loads ([`check_anchor_engine`]): FSDP1 (adapters sit at different offsets of flat
  parameters) and a full-model anchor under ZeRO-3.

The engines shard the model when `Trainer.train()` prepares it, after the anchor was built: the callback re-binds the
pairs once then ([`AnchorState.bind`]), which is also where their layout is checked.
"""

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate.utils import extract_model_from_parallel
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ._trl_compat import use_adapter
from .core.ema import ema_update_
from .identity import check_safetensors


if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, TrainingArguments


ANCHOR_WEIGHTS_NAME = "anchor.safetensors"
ANCHOR_CONFIG_NAME = "anchor.json"
ANCHOR_SUBFOLDER = "anchor"


# ------------------------------------------------------------------------------------------------------------------
# Engines: which combinations are supported, and how one tensor is read, written and gathered under each.


def check_anchor_engine(args: "TrainingArguments", lora: bool) -> None:
    """
    Refuse the engine × anchor combinations the anchor cannot update correctly. Call it before any model loads.

    Args:
        args ([`~transformers.TrainingArguments`]):
            The training arguments (they, or `accelerate launch`, decide the engine).
        lora (`bool`):
            Whether the anchor is a LoRA adapter ([`LoraAnchor`]) rather than a full model copy ([`ModelAnchor`]).
    """
    if getattr(args, "fsdp", None):  # `TrainingArguments(fsdp=...)`: transformers defaults to FSDP2
        fsdp_version = int((getattr(args, "fsdp_config", None) or {}).get("version", 2))
    elif os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":  # `accelerate launch`: accelerate defaults to 1
        fsdp_version = int(os.environ.get("FSDP_VERSION", 1))
    else:
        fsdp_version = None
    if fsdp_version == 1:
        raise ValueError(
            "The J-BOND anchor does not support FSDP1: the policy and anchor tensors sit at different offsets of flat "
            "parameters. Use FSDP2 (`fsdp_version: 2`), DeepSpeed ZeRO-2, or DDP."
        )
    if not lora and is_deepspeed_zero3_enabled():
        raise NotImplementedError(
            "A full-model anchor is not supported under DeepSpeed ZeRO-3. Use ZeRO-2 or FSDP2 for full fine-tuning, "
            "or train LoRA adapters (`peft_config`) so the anchor is a second adapter."
        )


def _is_dtensor(tensor: torch.Tensor) -> bool:
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def _gathered(tensors: list[torch.Tensor], modifier_rank: int | None = 0) -> contextlib.AbstractContextManager:
    """Under ZeRO-3, gather the partitioned `tensors` (written back from `modifier_rank` on exit); else a no-op."""
    partitioned = [tensor for tensor in tensors if hasattr(tensor, "ds_id")]
    if not partitioned:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(partitioned, modifier_rank=modifier_rank)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The storage this rank updates: the local shard of a DTensor (FSDP2), the tensor itself otherwise."""
    return tensor._local_tensor if _is_dtensor(tensor) else tensor.detach()


def _full(local: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The whole tensor whose shard on this rank is `local`, laid out like `like` (collective under FSDP2)."""
    if not _is_dtensor(like):
        return local
    from torch.distributed.tensor import DTensor

    sharded = DTensor.from_local(local, like.device_mesh, like.placements, shape=like.shape, stride=like.stride())
    return sharded.full_tensor()


def _shard(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This rank's shard of the whole tensor `full`, laid out like `like` (no communication)."""
    if not _is_dtensor(like):
        return full
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None).to_local()


def _shape(tensor: torch.Tensor) -> torch.Size:
    """The whole tensor's shape, also for a ZeRO-3 parameter whose data was partitioned away."""
    return getattr(tensor, "ds_shape", tensor.shape)


def _check_pair(name: str, anchor: torch.Tensor, policy: torch.Tensor) -> None:
    if _shape(anchor) != _shape(policy):
        raise ValueError(
            f"{name!r} has shape {tuple(_shape(anchor))} in the anchor, {tuple(_shape(policy))} in the policy."
        )
    if _is_dtensor(anchor) != _is_dtensor(policy) or (
        _is_dtensor(anchor) and (anchor.device_mesh, anchor.placements) != (policy.device_mesh, policy.placements)
    ):
        raise ValueError(
            f"{name!r} is laid out differently in the anchor and the policy; the anchor must be sharded like the "
            "policy (prepare both with the same engine)."
        )


def _check_no_fsdp1(model: torch.nn.Module) -> None:
    if not torch.distributed.is_available():
        return
    from torch.distributed.fsdp import FullyShardedDataParallel

    if any(isinstance(module, FullyShardedDataParallel) for module in model.modules()):
        raise ValueError(
            "The anchor does not support FSDP1: the policy and anchor tensors sit at different offsets of flat "
            "parameters. Use FSDP2, DeepSpeed ZeRO-2 (or ZeRO-3 with a LoRA anchor), or DDP."
        )


def _is_main_process() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


# ------------------------------------------------------------------------------------------------------------------
# The state every anchor shares.


class AnchorState:
    """
    The EMA state of an anchor: (anchor, policy) tensor pairs, their fp32 shadows, the EMA and hard updates, the state
    dict and the memory count.

    Subclasses enumerate the pairs (`_named_pairs`: `(name, anchor tensor, policy tensor)`), activate the anchor
    (`active`) and save it (`save`/`load`). A shadow exists for every pair when `fp32_shadow` is set (by default:
    when some anchor tensor is not fp32); otherwise an fp32 anchor tensor is its own EMA state.

    Args:
        fp32_shadow (`bool`, *optional*):
            Whether to keep fp32 shadows. Defaults to whether any anchor tensor is not fp32.
    """

    kind: str

    def __init__(self, fp32_shadow: bool | None = None):
        self._pairs: list[tuple[str, torch.Tensor, torch.Tensor]] | None = None
        self._shadows: dict[str, torch.Tensor] = {}
        anchor_tensors = {name: anchor for name, anchor, _ in self._named_pairs()}
        if not anchor_tensors:
            raise RuntimeError(f"The {type(self).__name__} has no tensors to update.")
        if fp32_shadow is None:
            fp32_shadow = any(tensor.dtype != torch.float32 for tensor in anchor_tensors.values())
        if fp32_shadow:
            for name, anchor in anchor_tensors.items():
                with _gathered([anchor], modifier_rank=None):
                    self._shadows[name] = _local(anchor).float().clone()

    def _named_pairs(self) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def bind(self) -> None:
        """
        Enumerate the pairs and check their layout; re-shard the shadows if an engine sharded the model since.

        Runs once lazily, and again when `Trainer.train()` has prepared the model ([`AnchorCallback`] calls it at
        `on_train_begin`): FSDP2 replaces the parameters by sharded ones, DeepSpeed partitions them.
        """
        pairs = list(self._named_pairs())
        for name, anchor, policy in pairs:
            _check_pair(name, anchor, policy)
            shadow = self._shadows.get(name)
            if shadow is not None and shadow.shape != _local(anchor).shape and not hasattr(anchor, "ds_id"):
                self._shadows[name] = _shard(shadow, anchor)
        self._pairs = pairs

    def pairs(self) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """`(name, anchor tensor, policy tensor)` for every tensor the anchor averages, bound once."""
        if self._pairs is None:
            self.bind()
        return self._pairs

    def _state(self, name: str, anchor_local: torch.Tensor) -> torch.Tensor:
        """The fp32 EMA state of one pair: its shadow (moved to the anchor's device), or the anchor tensor itself."""
        shadow = self._shadows.get(name)
        if shadow is None:
            return anchor_local
        if shadow.device != anchor_local.device:  # DeepSpeed moves the model after the anchor was built
            shadow = self._shadows[name] = shadow.to(anchor_local.device)
        return shadow

    @torch.no_grad()
    def ema_update(self, rate: float) -> None:
        """
        Move the anchor towards the policy: θ_a ← (1 − η)·θ_a + η·θ on the fp32 state (BOND arXiv v1, eq. 18).

        Args:
            rate (`float`):
                EMA rate η ∈ [0, 1]: `0` leaves the anchor unchanged, `1` copies the policy.
        """
        for name, anchor, policy in self.pairs():
            with _gathered([anchor, policy]):
                anchor_local = _local(anchor)
                shadow = None if name not in self._shadows else [self._state(name, anchor_local)]
                ema_update_([anchor_local], [_local(policy)], rate, shadow)

    def hard_update(self) -> None:
        """Copy the policy into the anchor (θ_a ← θ), as iterative BOND does every `period` steps."""
        self.ema_update(1.0)  # lerp with weight 1 returns the end point exactly

    @torch.no_grad()
    def state_dict(self) -> dict[str, torch.Tensor]:
        """
        The fp32 EMA state as whole tensors (copies), keyed by anchor tensor name: the shadows, or the fp32 anchor
        tensors that need none. Under FSDP2 and ZeRO-3 this gathers: call it on every rank.
        """
        state = {}
        for name, anchor, _ in self.pairs():
            with _gathered([anchor], modifier_rank=None):
                full = _full(self._state(name, _local(anchor)), anchor)
                state[name] = full.detach().float().clone()
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """
        Restore the shadows and the anchor's compute tensors from whole tensors, as [`~AnchorState.state_dict`]
        returns them (any floating dtype and device); under FSDP2 each rank keeps its shard.

        Raises:
            KeyError: if the names differ. ValueError: if a shape differs.
        """
        names = {name for name, _, _ in self.pairs()}
        missing, unexpected = names - state.keys() - self._optional_names(), state.keys() - names
        if missing or unexpected:
            raise KeyError(
                f"The anchor state does not match this {type(self).__name__}: missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(unexpected)[:3]} ({len(missing)} missing, {len(unexpected)} unexpected)."
            )
        for name, anchor, _ in self.pairs():
            if name not in state:
                continue
            if state[name].shape != _shape(anchor):
                raise ValueError(
                    f"Anchor tensor {name!r} has shape {tuple(state[name].shape)}, expected {tuple(_shape(anchor))}."
                )
            with _gathered([anchor]):
                anchor_local = _local(anchor)
                target = self._state(name, anchor_local)
                target.copy_(_shard(state[name].to(target.device), anchor))
                anchor_local.copy_(target)

    def _optional_names(self) -> set[str]:
        """Names `load_state_dict` may miss (left as they are)."""
        return set()

    def memory_bytes(self) -> int:
        """Bytes the anchor holds on this rank: its compute tensors (local shards) plus its fp32 shadows."""
        tensors = [*self._compute_tensors(), *self._shadows.values()]
        # A ZeRO-3 parameter keeps its partition in `ds_tensor` (its `data` is empty between gathers).
        held = [
            getattr(tensor, "ds_tensor", None) if hasattr(tensor, "ds_id") else _local(tensor) for tensor in tensors
        ]
        return sum(part.numel() * part.element_size() for part in held if part is not None)

    def _compute_tensors(self) -> list[torch.Tensor]:
        return [anchor for _, anchor, _ in self.pairs()]

    def save(self, directory: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
        raise NotImplementedError

    def load(self, directory: str | os.PathLike) -> None:
        raise NotImplementedError


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


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    """`load_file`, with a damaged or truncated file named (safetensors' own error names no file)."""
    check_safetensors(path, "saved anchor")
    return load_file(path)


def _write_config(directory: Path, config: dict[str, Any]) -> None:
    (directory / ANCHOR_CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


class LoraAnchor(AnchorState):
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
        _check_no_fsdp1(model)
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
                for _, anchor_param, _ in self.pairs():
                    anchor_param.requires_grad_(False)
                yield self.model
        finally:
            for param, flag in flags:
                param.requires_grad_(flag)

    def save(self, directory: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
        """
        Write the fp32 state to `directory/anchor.safetensors` and a description to `directory/anchor.json`.

        Under FSDP2 and ZeRO-3 it gathers the whole tensors: call it on every rank; only rank 0 writes.

        Args:
            directory (`str` or `os.PathLike`):
                Target directory, created if needed.
            metadata (`dict[str, Any]`, *optional*):
                JSON-serialisable entries added to `anchor.json` (e.g. the EMA rate and step).
        """
        state = {name: tensor.cpu().contiguous() for name, tensor in self.state_dict().items()}
        if not _is_main_process():
            return
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(state, directory / ANCHOR_WEIGHTS_NAME)
        config = {
            "kind": self.kind,
            "adapter_name": self.adapter_name,
            "policy_adapter": self.policy_adapter,
            "dtype": str(self.pairs()[0][1].dtype).removeprefix("torch."),
            "shadow_dtype": "float32",
        }
        _write_config(directory, {**(metadata or {}), **config})

    def load(self, directory: str | os.PathLike) -> None:
        """
        Restore the anchor written by [`~LoraAnchor.save`] in `directory` (on every rank).

        Raises:
            FileNotFoundError: if `directory` holds no saved anchor.
        """
        config = _read_config(directory, self.kind)
        if config["adapter_name"] != self.adapter_name:
            raise ValueError(
                f"The anchor saved in {directory!s} is the adapter {config['adapter_name']!r}, but this anchor is "
                f"{self.adapter_name!r}; build it with `LoraAnchor(model, adapter_name={config['adapter_name']!r})`."
            )
        self.load_state_dict(_load_weights(Path(directory) / ANCHOR_WEIGHTS_NAME))


class ModelAnchor(AnchorState):
    """
    Anchor held as a separate full copy of the policy (full fine-tuning).

    The anchor starts from `anchor_model`'s own weights (load it from the same checkpoint as the policy) and is frozen
    and put in eval mode. The EMA covers the parameters *and* the floating-point buffers, paired by name (TRL's
    `SyncRefModelCallback` skips buffers). When the anchor is not fp32, an fp32 shadow of every floating tensor is the
    true EMA state (twice the anchor's memory in bf16); set `fp32_shadow=False` to update in place instead.

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
            raise NotImplementedError(
                "A full-model anchor is not supported under DeepSpeed ZeRO-3. Use ZeRO-2 or FSDP2 for full "
                "fine-tuning, or train LoRA adapters (`peft_config`) so the anchor is a `LoraAnchor`."
            )
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

    def save(self, directory: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
        """
        Write the anchor to `directory` with `save_pretrained` (the fp32 shadows if kept) plus `anchor.json`.

        The directory loads with `AutoModelForCausalLM.from_pretrained(directory)` for inspection. Under FSDP2 it
        gathers the whole tensors: call it on every rank; only rank 0 writes.

        Args:
            directory (`str` or `os.PathLike`):
                Target directory, created if needed.
            metadata (`dict[str, Any]`, *optional*):
                JSON-serialisable entries added to `anchor.json` (e.g. the EMA rate and step).
        """
        full = self.state_dict()
        if not _is_main_process():
            return
        if not self._shadows:  # keep the compute dtype when the anchor is its own state
            full = {name: full[name].to(anchor.dtype) for name, anchor, _ in self.pairs()}
        # Every name, tied aliases included, maps to its whole tensor, so tied weights still share storage when saved.
        aliases = self._aliases()
        floating = self._floating_tensors(self.model)
        state = {alias: full[name] for name, tensor in floating.items() for alias in aliases[id(tensor)]}
        for name, tensor in self.model.state_dict().items():
            if name not in state:  # integer buffers: never sharded, never averaged
                state[name] = tensor
        self.model.save_pretrained(Path(directory), state_dict=state)
        dtype = next(self.model.parameters()).dtype
        config = {"kind": self.kind, "dtype": str(dtype).removeprefix("torch."), "fp32_shadow": bool(self._shadows)}
        _write_config(Path(directory), {**(metadata or {}), **config})

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
        Restore the anchor written by [`~ModelAnchor.save`] in `directory` (on every rank).

        Raises:
            FileNotFoundError: if `directory` holds no saved anchor.
        """
        _read_config(directory, self.kind)
        saved: dict[str, torch.Tensor] = {}
        for path in sorted(Path(directory).glob("model*.safetensors")):
            saved.update(_load_weights(path))
        aliases, state = self._aliases(), {}
        for name, tensor in self._floating_tensors(self.model).items():
            alias = next((alias for alias in aliases[id(tensor)] if alias in saved), None)
            if alias is not None:
                state[name] = saved[alias]
        self.load_state_dict(state)


class AnchorCallback(TrainerCallback):
    """
    Moves the anchor once per optimizer step, saves it with every checkpoint and restores it when training resumes.

    `Trainer` calls `on_step_end` once per optimizer step, after gradient accumulation, which is the cadence of eq. 18
    (never per micro-batch). On every checkpoint the anchor goes to `checkpoint-N/anchor/`. At `on_train_begin` (after
    `Trainer` prepared the model and restored the policy) the callback re-binds the anchor to the prepared model and,
    when [`~AnchorCallback.resume_from`] named a checkpoint, restores the anchor from it: `Trainer` reloads only the
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
        anchor: AnchorState,
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
        self._resume_checkpoint: Path | None = None

    def resume_from(self, checkpoint_dir: str | os.PathLike | None) -> None:
        """
        Restore the anchor from `checkpoint_dir/anchor/` at the next `on_train_begin` (`None`: start fresh).

        Args:
            checkpoint_dir (`str` or `os.PathLike`, *optional*):
                The `checkpoint-N` directory `Trainer.train(resume_from_checkpoint=...)` resumes from.
        """
        self._resume_checkpoint = None if checkpoint_dir is None else Path(checkpoint_dir)

    def on_train_begin(self, args, state, control, **kwargs):
        self.anchor.bind()
        if self._resume_checkpoint is not None:
            self.load_from_checkpoint(self._resume_checkpoint, state.global_step)
            self._resume_checkpoint = None

    def load_from_checkpoint(self, checkpoint_dir: str | os.PathLike, global_step: int) -> None:
        """
        Load the anchor saved in `checkpoint_dir/anchor/`, refusing one saved at another step than `global_step`.

        Args:
            checkpoint_dir (`str` or `os.PathLike`):
                A `checkpoint-N` directory.
            global_step (`int`):
                The step training resumes at (`Trainer` restored it from the same checkpoint).
        """
        directory = Path(checkpoint_dir) / ANCHOR_SUBFOLDER
        saved_step = _read_config(directory, self.anchor.kind).get("global_step")
        if saved_step is not None and saved_step != global_step:
            raise ValueError(
                f"The anchor in {directory} was saved at step {saved_step}, but training resumes at step "
                f"{global_step}; the checkpoint is inconsistent. Resume from an intact checkpoint."
            )
        self.anchor.load(directory)

    def on_step_end(self, args, state, control, **kwargs):
        if self.mode == "ema":
            self.anchor.ema_update(self.rate)
        elif self.mode == "periodic" and state.global_step % self.period == 0:
            self.anchor.hard_update()

    def on_save(self, args, state, control, **kwargs):
        # Every rank takes part (FSDP2 and ZeRO-3 gather the anchor); `save` writes from rank 0 only.
        if self.save_with_checkpoints:
            self.save_to_checkpoint(Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}", state)

    def save_to_checkpoint(self, checkpoint_dir: str | os.PathLike, state) -> None:
        """
        Write the anchor to `checkpoint_dir/anchor/` with its update rule and `state.global_step`. Every process
        calls it (FSDP2 and ZeRO-3 gather the anchor); the main process writes.

        Args:
            checkpoint_dir (`str` or `os.PathLike`):
                A `checkpoint-N` directory (or its staging copy).
            state ([`~transformers.TrainerState`]):
                The trainer state of the checkpoint.
        """
        metadata = {"mode": self.mode, "rate": self.rate, "period": self.period, "global_step": state.global_step}
        self.anchor.save(Path(checkpoint_dir) / ANCHOR_SUBFOLDER, metadata=metadata)


__all__ = ["AnchorCallback", "AnchorState", "LoraAnchor", "ModelAnchor", "check_anchor_engine"]
