"""Closed forms of Best-of-N with a 0/1 verifier (`core.verifiable`) against the general tie-aware law."""

import math

import pytest
import torch

from trl_bon.core import bon_kl_from_reference, bon_probs, bon_success_rate, kl_divergence


DT = torch.float64
# Six outcomes, three correct (a minority of the mass, p = 0.30), with different reference masses within each level.
REF = torch.tensor([0.30, 0.25, 0.20, 0.12, 0.08, 0.05], dtype=DT)
CORRECT = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 1.0], dtype=DT)


@pytest.mark.parametrize("n", [1, 2, 4, 8, 2.5])
def test_closed_forms_equal_the_tie_aware_law(n):
    law = bon_probs(REF, CORRECT, n)
    p = (REF * CORRECT).sum()
    torch.testing.assert_close(bon_success_rate(p, n), (law * CORRECT).sum(), atol=1e-14, rtol=0)
    torch.testing.assert_close(bon_kl_from_reference(p, n), kl_divergence(law, REF), atol=1e-14, rtol=0)


def test_values_at_p_030():
    p = torch.tensor(0.3, dtype=DT)
    assert bon_success_rate(p, 4).item() == pytest.approx(1 - 0.7**4, abs=1e-15)  # 0.7599
    s = 1 - 0.7**4
    expected = s * math.log(s / 0.3) + (1 - s) * math.log((1 - s) / 0.7)
    assert bon_kl_from_reference(p, 4).item() == pytest.approx(expected, abs=1e-15)
    assert expected == pytest.approx(0.4493, abs=1e-4)


def test_batched_and_edge_cases():
    p = torch.tensor([0.0, 1.0, 0.3, 1e-12], dtype=DT)
    s, kl = bon_success_rate(p, 4), bon_kl_from_reference(p, 4)
    assert torch.isfinite(kl).all() and torch.isfinite(s).all()
    # p = 0: nothing to find; p = 1: nothing to fix. Both leave π_ref unchanged (KL 0).
    assert s[:2].tolist() == [0.0, 1.0] and kl[:2].tolist() == [0.0, 0.0]
    assert s[3].item() == pytest.approx(4e-12, rel=1e-6)  # 1 − (1 − p)^N without cancellation


def test_large_n_tends_to_conditioning_on_correct():
    p = torch.tensor(0.3, dtype=DT)
    assert bon_kl_from_reference(p, 10_000).item() == pytest.approx(-math.log(0.3), abs=1e-9)


def test_rejects_n_below_one():
    with pytest.raises(ValueError, match="n >= 1"):
        bon_success_rate(torch.tensor(0.3), 0)
