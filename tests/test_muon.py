"""Muon against torch.optim.Muon (an independent implementation of the same update)."""

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
