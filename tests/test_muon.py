"""Muon against torch.optim.Muon (an independent implementation of the same update)."""

import math

import pytest
import torch

from pion_rl.optim import Muon


@pytest.mark.parametrize("shape", [(32, 48), (48, 32)])
@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_matches_torch_muon(shape, nesterov):
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(*shape, generator=gen)
    grads = [torch.randn(*shape, generator=gen) for _ in range(6)]
    ours, theirs = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    opt = Muon([ours], lr=0.02, nesterov=nesterov)
    ref = torch.optim.Muon([theirs], lr=0.02, weight_decay=0.01, momentum=0.95, nesterov=nesterov,
                           adjust_lr_fn="match_rms_adamw")
    for g in grads:
        ours.grad, theirs.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    # Same arithmetic in the same bf16 iteration: equal up to kernel-level rounding (bit-equal on our CPUs).
    torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=0, atol=1e-6)
    assert (ours.detach() - w0).abs().max() > 0.02  # the comparison is not vacuous


def test_muon_step_rms_and_weight_decay():
    lr = 1e-3
    p = torch.nn.Parameter(torch.zeros(64, 16))
    p.grad = torch.randn(64, 16)
    Muon([p], lr=lr, ns_dtype="float32").step()
    # From W = 0, the step is -lr * 0.2 * sqrt(64) * O with O's singular values ~1 (NS lands in ~[0.7, 1.2]):
    # RMS of O is sqrt(16/(64*16)) per unit singular value.
    rms = p.detach().pow(2).mean().sqrt().item()
    expected = lr * 0.2 * 8 * (16 / (64 * 16)) ** 0.5
    assert 0.6 * expected < rms < 1.25 * expected
    q = torch.nn.Parameter(torch.ones(4, 4))
    q.grad = torch.zeros(4, 4)
    Muon([q], lr=0.1, weight_decay=0.5).step()  # zero gradient: only the decay acts
    torch.testing.assert_close(q.detach(), torch.full((4, 4), 0.95))


def test_muon_rejects_bad_options():
    p = torch.nn.Parameter(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="ns_dtype"):
        Muon([p], ns_dtype="int8")
    with pytest.raises(ValueError, match="momentum"):
        Muon([p], momentum=1.5)


def _fallback_updates(eps_form, grad, steps):
    """Per-step changes of a norm weight (AdamW fallback, no decay) under a constant gradient."""
    p = torch.nn.Parameter(torch.zeros(len(grad), dtype=torch.float64))
    opt = Muon([("model.norm.weight", p)], lr=1e-3, adamw_weight_decay=0.0, adamw_eps_form=eps_form)
    updates = []
    for _ in range(steps):
        before = p.detach().clone()
        p.grad = torch.tensor(grad, dtype=torch.float64)
        opt.step()
        updates.append((p.detach() - before).tolist())
    return updates


def test_official_eps_form_against_a_hand_computed_step():
    # The official Muon's fallback divides the raw moments, m / (eps + sqrt(v)), then applies the bias
    # corrections: lr * m / (eps + sqrt(v)) * sqrt(1 - b2^t) / (1 - b1^t). Under a constant gradient g,
    # m = (1 - b1^t) g and v = (1 - b2^t) g^2, so the step is lr * g * r / (eps + r |g|), r = sqrt(1 - b2^t);
    # torch's form gives lr * g / (|g| + eps).
    lr, eps, b2 = 1e-3, 1e-8, 0.999
    grad = [2.4e-5, 1e-7, -3e-3]
    official = _fallback_updates("before_bias_correction", grad, 100)
    torch_form = _fallback_updates("after_bias_correction", grad, 100)
    for t in (1, 2, 100):
        r = math.sqrt(1 - b2**t)
        for i, g in enumerate(grad):
            assert official[t - 1][i] == pytest.approx(-lr * g * r / (eps + r * abs(g)), rel=1e-12)
            assert torch_form[t - 1][i] == pytest.approx(-lr * g / (abs(g) + eps), rel=1e-12)
    # What this means for small gradient entries (the figures): at 2.4e-5, 1.3% smaller at step 1 and
    # 0.09% at step 100; at 1e-7, 74% smaller at step 1.
    def smaller(t, i):
        return 1 - official[t - 1][i] / torch_form[t - 1][i]

    assert smaller(1, 0) == pytest.approx(0.0126, abs=5e-4)
    assert smaller(100, 0) == pytest.approx(0.00093, abs=5e-5)
    assert smaller(1, 1) == pytest.approx(0.736, abs=5e-3)
    assert 0 < smaller(1, 2) < 2e-4  # a large entry barely notices (0.01%)


def test_unknown_eps_form_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown adamw_eps_form 'inside'; expected one of"):
        Muon([torch.nn.Parameter(torch.zeros(4, 4))], adamw_eps_form="inside")
