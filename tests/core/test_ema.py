"""The anchor EMA θ_a ← (1 − η)·θ_a + η·θ (BOND arXiv v1 eq. 18)."""

import math

import pytest
import torch

from trl_bon.core import AnchorSchedule, ema_update_


DT = torch.float64


def _pair(seed, shape=(3, 4), dtype=DT):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=dtype), torch.randn(shape, generator=gen, dtype=dtype)


def test_exact_formula_on_dyadic_values():
    # Small integers and η = 1/4: (1 − η)·a + η·θ is exact in float64, so the result must be bitwise equal.
    a = torch.tensor([[0.0, 1.0, -3.0], [8.0, 5.0, -2.0]], dtype=DT)
    theta = torch.tensor([[4.0, -7.0, 1.0], [0.0, 5.0, 6.0]], dtype=DT)
    eta = 0.25
    expected = (1 - eta) * a + eta * theta
    anchor = a.clone()
    ema_update_([anchor], [theta], eta)
    assert torch.equal(anchor, expected)
    assert not torch.equal(anchor, (1 - eta) * theta + eta * a)  # the roles of a and θ are not swapped


@pytest.mark.parametrize("eta", [0.02, 0.3, 0.5, 0.77])
def test_formula_several_tensors(eta):
    pairs = [_pair(0), _pair(1, shape=(5,)), _pair(2, shape=(2, 2, 2))]
    anchors = [a.clone() for a, _ in pairs]
    sources = [t.clone() for _, t in pairs]
    ema_update_(anchors, sources, eta)
    for anchor, (a, theta), source in zip(anchors, pairs, sources, strict=True):
        torch.testing.assert_close(anchor, (1 - eta) * a + eta * theta, atol=1e-15, rtol=1e-15)
        assert torch.equal(source, theta)  # the policy is untouched


def test_repeated_updates_contract_geometrically():
    a, theta = _pair(3)
    anchor = a.clone()
    eta, steps = 0.02, 50
    for _ in range(steps):
        ema_update_([anchor], [theta], eta)
    torch.testing.assert_close(anchor - theta, (1 - eta) ** steps * (a - theta), atol=1e-13, rtol=1e-12)


def test_rate_zero_leaves_unchanged_and_one_copies():
    a, theta = _pair(4)
    anchor = a.clone()
    ema_update_([anchor], [theta], 0.0)
    assert torch.equal(anchor, a)
    ema_update_([anchor], [theta], 1.0)
    assert torch.equal(anchor, theta)


def test_fp32_shadow_keeps_updates_that_bf16_rounds_away():
    eta = 1e-3
    target = torch.ones(4, dtype=torch.bfloat16)
    shadow = torch.ones(4, dtype=torch.float32)
    source = torch.full((4,), 2.0, dtype=torch.bfloat16)
    plain = torch.ones(4, dtype=torch.bfloat16)

    ema_update_([plain], [source], eta)
    assert torch.equal(plain, torch.ones(4, dtype=torch.bfloat16))  # 1.001 rounds back to 1 in bf16

    ema_update_([target], [source], eta, shadows=[shadow])
    torch.testing.assert_close(shadow, torch.full((4,), 1.0 + eta), atol=1e-7, rtol=0)
    assert torch.equal(target, shadow.to(torch.bfloat16))
    assert target.dtype == torch.bfloat16 and shadow.dtype == torch.float32

    for _ in range(9):
        ema_update_([target], [source], eta, shadows=[shadow])
        ema_update_([plain], [source], eta)
    expected = 2.0 - (1 - eta) ** 10  # ≈ 1.00996
    torch.testing.assert_close(shadow, torch.full((4,), expected, dtype=torch.float32), atol=1e-6, rtol=0)
    assert torch.equal(target, shadow.to(torch.bfloat16))
    assert target[0].item() > 1.0  # accumulated in the shadow, now visible in bf16 (1.0078125)
    assert torch.equal(plain, torch.ones(4, dtype=torch.bfloat16))  # without a shadow the anchor never moved


@pytest.mark.parametrize("rate", [-0.01, 1.01, math.nan])
def test_rate_outside_unit_interval_raises(rate):
    # η is checked once, where it enters: the schedule the anchor callback passes it from (`ema_update_` trusts it).
    with pytest.raises(ValueError, match="rate"):
        AnchorSchedule(rate=rate)


def test_length_mismatches_raise():
    a, theta = _pair(6)
    with pytest.raises(ValueError):
        ema_update_([a, a.clone()], [theta], 0.1)
    with pytest.raises(ValueError):
        ema_update_([a], [theta], 0.1, shadows=[a.float(), a.float()])
    with pytest.raises(ValueError):
        ema_update_([a], [theta], 0.1, shadows=[])
