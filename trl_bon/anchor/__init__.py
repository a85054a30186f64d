"""The J-BOND anchor π_a: an exponential moving average of the policy weights (BOND arXiv v1, eq. 18).

J-BOND samples its two Best-of-2 baseline completions from the anchor and moves the anchor towards the policy after
every *optimizer* step: θ_a ← (1 − η)·θ_a + η·θ. Iterative BOND instead copies the policy into the anchor every
`period` steps, and a fixed anchor (η = 0) is plain BOND against π_ref.

One job per file: `state.py` ([`AnchorState`]: the (anchor, policy) tensor pairs, their fp32 shadows, the EMA and
hard updates, the state dict, and the anchor's files), the two kinds `lora.py` ([`LoraAnchor`], a second LoRA adapter
of the policy's [`~peft.PeftModel`]: π_ref, anchor and policy share one base model) and `model.py` ([`ModelAnchor`], a
frozen copy of the policy, for full fine-tuning), `callback.py` ([`AnchorCallback`]: the update once per optimizer
step, and the anchor's part of the trainer's checkpoints) and `_engines.py` (the supported engines).

An fp32 *shadow* is the true EMA state when the compute tensors are not fp32: an η = 0.02 update of a bf16 weight
mostly rounds away.

**Factor-space caveat (LoRA).** The EMA runs on the factors A and B separately, so the anchor's weight delta B̄Ā is
not the EMA of the policy's BA: the error is a cross term ∝ η(1 − η)(B − B̄)(A − Ā), small for η ≈ 0.02 and zero when
`lora_A` is frozen (then ΔW is linear in B).

**Engines.** The EMA is elementwise, so it runs wherever the tensors live: on whole tensors (DDP, ZeRO-1/2), on each
rank's local shards with shadows sharded alike (FSDP2; saving gathers, loading re-shards), or gathered pair by pair
and updated on rank 0 (ZeRO-3, LoRA anchor only). FSDP1 and a full-model anchor under ZeRO-3 are refused before any
model loads ([`check_anchor_engine`]). The engines shard the model when `Trainer.train()` prepares it, after the
anchor was built: the callback re-binds the pairs then ([`AnchorState.bind`]), which also checks their layout.
"""

from ._engines import check_anchor_engine
from .callback import AnchorCallback
from .lora import LoraAnchor
from .model import ModelAnchor
from .state import AnchorState


__all__ = ["AnchorCallback", "AnchorState", "LoraAnchor", "ModelAnchor", "check_anchor_engine"]
