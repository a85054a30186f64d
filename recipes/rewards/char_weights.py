"""A dense, learnable reward: the sum of fixed random weights of the completion's characters.

Used by `benchmarks/distillation_limits.py` to separate "the trainer cannot move the policy to Best-of-N" from "the
policy cannot learn this reward": unlike the convergence task's learned classifier it is a per-character linear score
(simple to learn), and two samples almost never tie (unlike VADER's lexicon score, which ties 0 for most 8-token
completions). The weights are N(0, 1) draws fixed by character code, the same in every process.

    trl-bon jbond ... --reward_funcs recipes.rewards.char_weights.char_weights
"""

import hashlib
import math


def _weight(char: str) -> float:
    """A standard normal draw fixed by the character (Box–Muller on two hash-derived uniforms)."""
    digest = hashlib.sha256(char.encode("utf-8")).digest()
    u1 = (int.from_bytes(digest[:8], "big") + 1) / (2**64 + 1)
    u2 = int.from_bytes(digest[8:16], "big") / 2**64
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


_WEIGHTS: dict[str, float] = {}


def char_weights(completions, **kwargs) -> list[float]:
    """Sum of the characters' fixed weights, per completion (TRL reward-function signature)."""
    scores = []
    for completion in completions:
        for char in completion:
            if char not in _WEIGHTS:
                _WEIGHTS[char] = _weight(char)
        scores.append(sum((_WEIGHTS[char] for char in completion), 0.0))
    return scores
