"""Divergences between finite distributions (last dimension = outcomes), used by tests and evaluation."""

import torch


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p‖q) = Σ_y p(y)·log(p(y)/q(y)) over the last dimension, with 0·log 0 = 0; +inf where p > 0 = q."""
    terms = torch.where(p > 0, p * (torch.log(p.clamp_min(torch.finfo(p.dtype).tiny)) - torch.log(q)), 0.0)
    return terms.sum(-1)


def reverse_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Reverse KL(q‖p): the mode-seeking direction when p is the target (BOND eq. 14 with p = π_BoN, q = π)."""
    return kl_divergence(q, p)


def jeffreys(policy: torch.Tensor, target: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """Generalised Jeffreys divergence J_β(π‖π*) = (1−β)·KL(π*‖π) + β·KL(π‖π*) (BOND eq. 11).

    β = 0 is the forward KL (BoN-SFT), β = 1 the backward KL (vBoN), β = 0.5 BOND's default.
    """
    return (1 - beta) * kl_divergence(target, policy) + beta * kl_divergence(policy, target)


def total_variation(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Total-variation distance ½·‖p − q‖₁."""
    return 0.5 * (p - q).abs().sum(-1)
