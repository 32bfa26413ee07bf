"""Pion against a naive reference written from the paper, on one device, in float64."""

import itertools

import pytest
import torch
from pion_reference import ReferencePion

from pion_rl.optim import Pion, pion_math
from pion_rl.optim.newton_schulz import msign_of_skew_product

SHAPES = [(12, 8), (8, 12)]  # tall and wide


def _run_both(shape, steps, lr=0.02, seed=0, **options):
    """Run Pion and the reference on the same weights and gradients; return both final weights."""
    gen = torch.Generator().manual_seed(seed)
    w0 = torch.randn(*shape, generator=gen, dtype=torch.float64) / shape[1] ** 0.5
    grads = [torch.randn(*shape, generator=gen, dtype=torch.float64) for _ in range(steps)]
    p = torch.nn.Parameter(w0.clone())
    opt = Pion([p], lr=lr, **options)
    ref_w = w0.clone()
    ref_options = {("c" if k == "rms_scale" else k): v for k, v in options.items()}
    ref = ReferencePion([ref_w], lr, **ref_options)
    for g in grads:
        p.grad = g.clone()
        opt.step()
        ref.step([g])
    return p.detach(), ref_w, opt


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("variant,second_moment", [
    ("lie_lie", False), ("lie_lie", True),
    ("transported_ambient_ambient", False), ("transported_ambient_ambient", True),
    ("msign", False),
])
@pytest.mark.parametrize("update_side", ["both", "alternate", "left", "right"])
def test_variants_match_reference(shape, variant, second_moment, update_side):
    got, want, _ = _run_both(shape, steps=5, variant=variant, second_moment=second_moment, update_side=update_side)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("coefficients", ["quintic", "simple"])
def test_msign_schedules_match_reference(coefficients):
    got, want, _ = _run_both((12, 8), steps=4, variant="msign", update_side="alternate",
                             msign_coefficients=coefficients)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("exp_map,degree", [("taylor", 1), ("taylor", 3), ("cayley", 2), ("exp", 2)])
@pytest.mark.parametrize("scaling", ["rms", "none"])
def test_exp_maps_and_scalings_match_reference(exp_map, degree, scaling):
    got, want, _ = _run_both((10, 6), steps=4, exp_map=exp_map, degree=degree, scaling=scaling,
                             update_side="alternate", lr=0.01 if scaling == "none" else 0.05)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("variant", ["lie_lie", "transported_ambient_ambient", "msign"])
def test_row_blocks_match_reference(variant):
    # 4 heads of 3 rows: each head has its own state and its own step size.
    got, want, opt = _run_both((12, 5), steps=4, variant=variant, row_block=3, update_side="alternate")
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    state = next(iter(opt.state.values()))
    if variant == "lie_lie":
        assert state["m_in"].shape == (4, 5, 5) and state["m_out"].shape == (4, 3, 3)


@pytest.mark.parametrize("shape,row_block", [((12, 16), 3), ((16, 3), None)])
@pytest.mark.parametrize("update_side", ["alternate", "both"])
def test_msign_of_low_rank_generators_matches_reference(monkeypatch, shape, row_block, update_side):
    # Generators of rank <= 6 in 16 dimensions (per-head-like blocks: in side; a tall matrix: out side) are
    # orthogonalised through their 6 x 6 Gram side; the reference runs Newton-Schulz on the 16 x 16 generator.
    calls = []
    monkeypatch.setattr(pion_math, "msign_of_skew_product",
                        lambda p, *args: calls.append(p.shape) or msign_of_skew_product(p, *args))
    got, want, _ = _run_both(shape, steps=4, variant="msign", row_block=row_block, update_side=update_side)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert calls and all(p[-2] == 6 and p[-1] == 16 for p in calls)


def test_alternate_moves_both_momenta_every_step_and_one_side_per_step():
    gen = torch.Generator().manual_seed(1)
    p = torch.nn.Parameter(torch.randn(6, 4, generator=gen, dtype=torch.float64))
    opt = Pion([p], lr=0.05, update_side="alternate")
    for t in (1, 2, 3):
        before = p.detach().clone()
        p.grad = torch.randn(6, 4, generator=gen, dtype=torch.float64)
        m_in0 = opt.state[p]["m_in"].clone() if opt.state[p] else torch.zeros(4, 4, dtype=torch.float64)
        m_out0 = opt.state[p]["m_out"].clone() if opt.state[p] else torch.zeros(6, 6, dtype=torch.float64)
        opt.step()
        assert not torch.equal(opt.state[p]["m_in"], m_in0) and not torch.equal(opt.state[p]["m_out"], m_out0)
        # Odd steps rotate on the right: W^T W (the right Gram) changes, W W^T's spectrum... check the side
        # through which Gram matrix is preserved: a right rotation keeps W W^T up to the map's O(theta^4).
        after = p.detach()
        left_gram_change = (after @ after.T - before @ before.T).abs().max().item()
        right_gram_change = (after.T @ after - before.T @ before).abs().max().item()
        if t % 2 == 1:
            assert left_gram_change < 1e-6 < right_gram_change
        else:
            assert right_gram_change < 1e-6 < left_gram_change


def test_rms_scaling_gives_first_order_change_of_rms_lr_times_scale():
    lr, scale = 1e-4, 0.2
    gen = torch.Generator().manual_seed(2)
    p = torch.nn.Parameter(torch.randn(16, 24, generator=gen, dtype=torch.float64))
    before = p.detach().clone()
    p.grad = torch.randn(16, 24, generator=gen, dtype=torch.float64)
    Pion([p], lr=lr, rms_scale=scale, exp_map="taylor", degree=1).step()
    rms = (p.detach() - before).pow(2).mean().sqrt().item()
    assert rms == pytest.approx(lr * scale, rel=1e-9)


def test_float32_matches_float64_reference():
    got, want, _ = _run_both((12, 8), steps=3, update_side="alternate")
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(12, 8, generator=gen, dtype=torch.float64) / 8**0.5
    grads = [torch.randn(12, 8, generator=gen, dtype=torch.float64) for _ in range(3)]
    p = torch.nn.Parameter(w0.float())
    opt = Pion([p], lr=0.02, update_side="alternate")
    for g in grads:
        p.grad = g.float()
        opt.step()
    assert opt.state[p]["m_in"].dtype == torch.float32
    torch.testing.assert_close(p.detach().double(), want, rtol=1e-5, atol=1e-6)


def test_bf16_params_are_computed_in_fp32_and_rounded_back():
    gen = torch.Generator().manual_seed(3)
    w0 = torch.randn(8, 8, generator=gen).bfloat16()
    g = torch.randn(8, 8, generator=gen).bfloat16()
    p16 = torch.nn.Parameter(w0.clone())
    p32 = torch.nn.Parameter(w0.float())
    p16.grad, p32.grad = g.clone(), g.float()
    Pion([p16], lr=0.05).step()
    opt32 = Pion([p32], lr=0.05)
    opt32.step()
    assert p16.dtype == torch.bfloat16
    assert torch.equal(p16.detach(), p32.detach().bfloat16())


@pytest.mark.parametrize("variant,side", list(itertools.product(["lie_lie", "msign"], ["alternate", "both"])))
def test_all_state_is_top_level_tensors(variant, side):
    _, _, opt = _run_both((6, 4), steps=2, variant=variant, update_side=side)
    state = next(iter(opt.state.values()))
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
