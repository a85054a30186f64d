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
mostly rounds away. [`AnchorCallback`] applies the update once per optimizer step and reads and writes the anchor in
a checkpoint's `anchor/` folder when the trainer's atomic save and resume ask it to (`Trainer`'s resume reloads only
the active adapter and would silently reset the anchor).

Files, one job each: `_engines.py` (supported engines; reading, writing and gathering one tensor under each),
`state.py` (`AnchorState` and the anchor's files: weights and the `anchor.json` record), `lora.py` and `model.py` (the
two kinds), `callback.py` (`AnchorCallback`).

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

from ._engines import check_anchor_engine
from .callback import AnchorCallback
from .lora import LoraAnchor
from .model import ModelAnchor
from .state import AnchorState


__all__ = ["AnchorCallback", "AnchorState", "LoraAnchor", "ModelAnchor", "check_anchor_engine"]
