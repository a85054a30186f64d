"""The J-BOND anchor π_a: an exponential moving average of the policy weights (BOND arXiv v1, eq. 18).

J-BOND samples its two Best-of-2 baseline completions from the anchor and moves the anchor towards the policy after
every *optimizer* step: θ_a ← (1 − η)·θ_a + η·θ. Iterative BOND instead copies the policy into the anchor every
`period` steps, and a fixed anchor (η = 0) is plain BOND against π_ref.

[`AnchorState`] holds the tensor pairs, fp32 shadows, updates and files; [`LoraAnchor`] (a second LoRA adapter of the
policy) and [`ModelAnchor`] (a frozen copy, for full fine-tuning) are its two kinds; [`AnchorCallback`] moves it;
`_engines.py` covers the engines it runs under and refuses (docs/engines.md).

**Factor-space caveat (LoRA).** The EMA runs on the factors A and B separately, so the anchor's weight delta B̄Ā is
not the EMA of the policy's BA: the error is a cross term ∝ η(1 − η)(B − B̄)(A − Ā), small for η ≈ 0.02 and zero when
`lora_A` is frozen (then ΔW is linear in B).
"""

from ._engines import check_anchor_engine
from .callback import AnchorCallback
from .lora import LoraAnchor
from .model import ModelAnchor
from .state import AnchorState


__all__ = ["AnchorCallback", "AnchorState", "LoraAnchor", "ModelAnchor", "check_anchor_engine"]
