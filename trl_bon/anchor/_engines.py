"""The engines the anchor runs under: which are supported, and how one tensor is read, written and gathered under
each (DDP and ZeRO-1/2: whole tensors; FSDP2: DTensor shards; ZeRO-3: gathered in turn)."""

import contextlib
import os
from typing import TYPE_CHECKING

import torch
from transformers.integrations import is_deepspeed_zero3_enabled


if TYPE_CHECKING:
    from transformers import TrainingArguments

# Each refusal is raised before any model loads (`check_anchor_engine`) and again by the anchor built under it.
FSDP1_REFUSAL = (
    "The J-BOND anchor does not support FSDP1: the policy and anchor tensors sit at different offsets of flat "
    "parameters. Use FSDP2 (`fsdp_version: 2`), DeepSpeed ZeRO-2 (or ZeRO-3 with a LoRA anchor), or DDP."
)
FULL_MODEL_ZERO3_REFUSAL = (
    "A full-model anchor is not supported under DeepSpeed ZeRO-3. Use ZeRO-2 or FSDP2 for full fine-tuning, "
    "or train LoRA adapters (`peft_config`) so the anchor is a second adapter."
)


def check_anchor_engine(args: "TrainingArguments", lora: bool) -> None:
    """Refuse, before any model loads, the engines (set by `args` or `accelerate launch`) under which the anchor, a
    LoRA adapter ([`LoraAnchor`]) or a full model copy ([`ModelAnchor`]), cannot be updated correctly."""
    if getattr(args, "fsdp", None):  # `TrainingArguments(fsdp=...)`: transformers defaults to FSDP2
        fsdp_version = int((getattr(args, "fsdp_config", None) or {}).get("version", 2))
    elif os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":  # `accelerate launch`: accelerate defaults to 1
        fsdp_version = int(os.environ.get("FSDP_VERSION", 1))
    else:
        fsdp_version = None
    if fsdp_version == 1:
        raise ValueError(FSDP1_REFUSAL)
    if not lora and is_deepspeed_zero3_enabled():
        raise NotImplementedError(FULL_MODEL_ZERO3_REFUSAL)


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
    """The storage this rank updates: the local shard of a DTensor (FSDP2), the tensor itself otherwise (detached
    views: in-place updates reach the model's storage)."""
    return (tensor.to_local() if _is_dtensor(tensor) else tensor).detach()


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
        raise ValueError(FSDP1_REFUSAL)
