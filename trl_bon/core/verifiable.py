"""Best-of-N with a 0/1 verifier reward, in closed form (BOND Theorem 1, eq. 4, specialised to two reward levels).

Best-of-N with ties broken at random keeps a correct completion whenever one of the N draws is correct, so it
re-weights the two levels of π_ref (success rate p) to pass@N and keeps each level's shape: these are `core.bon_probs`
on a two-level reward, summed per level (docs/verifiable_rewards.md).
"""

import torch


def bon_success_rate(p: torch.Tensor, n: float) -> torch.Tensor:
    """Best-of-N's success rate s_N = 1 − (1 − p)^N (pass@N of π_ref; BOND eq. 4 with levels {0, 1}), from π_ref's
    per-prompt success rate p ∈ [0, 1] and a real N ≥ 1."""
    if n < 1:
        raise ValueError(f"Best-of-N needs n >= 1 candidates, got n={n}.")
    return -torch.expm1(n * torch.log1p(-p))


def bon_kl_from_reference(p: torch.Tensor, n: float) -> torch.Tensor:
    """KL(π_BoN‖π_ref) = s·log(s/p) + (1 − s)·log((1 − s)/(1 − p)) with s = s_N, per prompt (nats).

    Only the two levels' masses change, so the KL is the binary KL between s_N and p. It is 0 at p = 0 and p = 1 (Best-
    of-N cannot find a correct completion that π_ref never samples, and has nothing to fix when all are correct), and
    tends to −log p as N → ∞ (π_ref conditioned on being correct). Finite everywhere (0·log 0 = 0).
    """
    s = bon_success_rate(p, n)
    correct = torch.where(s > 0, s * (torch.log(s) - torch.log(p)), torch.zeros_like(s))
    wrong = torch.where(s < 1, (1 - s) * (torch.log1p(-s) - torch.log1p(-p)), torch.zeros_like(s))
    return correct + wrong
