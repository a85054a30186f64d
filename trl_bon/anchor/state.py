"""[`AnchorState`]: what every anchor shares, and its files: the weights and `anchor.json`, the provenance record
(kind, adapter, update rule, step) checked with `trl_bon.provenance` when the anchor is loaded back."""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..core.ema import ema_update_
from ..identity import check_safetensors
from ..provenance import read_record, refuse_if_stale, write_record
from ._engines import _check_pair, _full, _gathered, _local, _shape, _shard


ANCHOR_WEIGHTS_NAME = "anchor.safetensors"
ANCHOR_CONFIG_NAME = "anchor.json"
ANCHOR_SUBFOLDER = "anchor"


class AnchorState:
    """
    The EMA state of an anchor: (anchor, policy) tensor pairs, their fp32 shadows, the EMA and hard updates, the state
    dict and the memory count. Subclasses enumerate the pairs (`_named_pairs`: `(name, anchor tensor, policy
    tensor)`), activate the anchor (`active`) and write and read its weights (`_write_weights` / `_read_weights`;
    `save` and `load` do the rest). Without a shadow (`fp32_shadow=False`) an fp32 anchor tensor is its own EMA state.

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
        """Enumerate the pairs and check their layout; re-shard the shadows if an engine sharded the model since (once
        lazily, and again at `on_train_begin`, after FSDP2 or DeepSpeed prepared the model)."""
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
        """Move the anchor towards the policy: θ_a ← (1 − η)·θ_a + η·θ on the fp32 state (BOND arXiv v1, eq. 18)."""
        if not 0.0 <= rate <= 1.0:  # checked here, where a caller hands η in, not in the pure `core.ema_update_`
            raise ValueError(f"The EMA rate must lie in [0, 1], got {rate}; the paper uses 0.02.")
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
        """The fp32 EMA state as whole tensors (copies), keyed by anchor tensor name: the shadows, or the fp32 anchor
        tensors that need none. Under FSDP2 and ZeRO-3 this gathers: call it on every rank."""
        state = {}
        for name, anchor, _ in self.pairs():
            with _gathered([anchor], modifier_rank=None):
                full = _full(self._state(name, _local(anchor)), anchor)
                state[name] = full.detach().float().clone()
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the shadows and the anchor's compute tensors from whole tensors, as [`~AnchorState.state_dict`]
        returns them (any floating dtype and device); under FSDP2 each rank keeps its shard."""
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

    # ------------------------------------------------------------------------------------------------------------
    # Files: the weights (written by each kind its own way) and the record `anchor.json`

    def _record(self) -> dict[str, Any]:
        """What `anchor.json` must say for `load` to accept a saved anchor into this one."""
        return {"kind": self.kind}

    def _write_weights(self, directory: Path, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Write the whole fp32 `state` into `directory` (main process only); return entries for `anchor.json`."""
        raise NotImplementedError

    def _read_weights(self, directory: Path) -> dict[str, torch.Tensor]:
        """The state [`~AnchorState._write_weights`] wrote, as [`~AnchorState.load_state_dict`] takes it."""
        raise NotImplementedError

    def save(self, directory: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
        """Write the anchor's fp32 state to `directory` and its record, with the JSON-serialisable `metadata`, to
        `directory/anchor.json`. Under FSDP2 and ZeRO-3 it gathers the whole tensors: call it on every rank."""
        state = self.state_dict()
        if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = self._write_weights(directory, state)
        write_record(directory / ANCHOR_CONFIG_NAME, {**(metadata or {}), **written, **self._record()})

    def load(self, directory: str | os.PathLike, **expected) -> None:
        """Restore the anchor [`~AnchorState.save`] wrote in `directory` (on every rank), refusing it unless
        `anchor.json` holds this anchor's kind (and adapter) and the `expected` entries, e.g. `global_step`."""
        directory = Path(directory)
        path = directory / ANCHOR_CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"No saved anchor in {directory!s}: `{ANCHOR_CONFIG_NAME}` is missing. Point to a directory written "
                f"by `{type(self).__name__}.save` (checkpoints keep it in `checkpoint-N/{ANCHOR_SUBFOLDER}/`)."
            )
        fix = "Resume from an intact checkpoint."
        refuse_if_stale(
            read_record(path, "anchor record", fix),
            {**self._record(), **expected},
            subject=f"The anchor saved in {directory} was made with",
            escape=f"Load it into an anchor of the same kind and adapter, at the step it was saved. {fix}",
        )
        self.load_state_dict(self._read_weights(directory))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """`load_file`, with a damaged or truncated file named (safetensors' own error names no file)."""
    from safetensors.torch import load_file

    check_safetensors(path, "saved anchor")
    return load_file(path)
