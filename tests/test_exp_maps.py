"""Orthogonality and spectrum properties of the exp maps, and Pion's spectrum over many steps."""

import math

import pytest
import torch

from pion_rl.optim import Pion
from pion_rl.optim.exp_maps import rotate_left, rotate_right
from pion_rl.optim.newton_schulz import msign, msign_of_skew_product


def _skew(n, theta, seed=0):
    """A random skew matrix with spectral norm exactly ``theta``."""
    a = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = a - a.T
    return x * theta / torch.linalg.matrix_norm(x, ord=2)


@pytest.mark.parametrize("theta", [0.01, 0.1, 0.3])
def test_taylor2_orthogonality_error_is_theta4_over_4(theta):
    x = _skew(16, theta)
    e = rotate_right(torch.eye(16, dtype=torch.float64), x, method="taylor", degree=2)
    error = torch.linalg.matrix_norm(e.T @ e - torch.eye(16, dtype=torch.float64), ord=2).item()
    assert error == pytest.approx(theta**4 / 4, rel=1e-6)


@pytest.mark.parametrize("method", ["cayley", "exp"])
@pytest.mark.parametrize("theta", [0.1, 1.0, 3.0])
def test_exact_maps_are_orthogonal_at_any_step(method, theta):
    e = rotate_right(torch.eye(12, dtype=torch.float64), _skew(12, theta), method=method)
    torch.testing.assert_close(e.T @ e, torch.eye(12, dtype=torch.float64), rtol=0, atol=1e-13)


def test_cayley_equals_taylor2_to_second_order():
    # E_cayley - E_taylor2 = O(theta^3): shrinking theta by 10 shrinks the gap by ~1000.
    gaps = []
    for theta in (1e-1, 1e-2):
        x = _skew(10, theta)
        eye = torch.eye(10, dtype=torch.float64)
        gaps.append(torch.linalg.matrix_norm(rotate_right(eye, x, method="cayley") - rotate_right(eye, x, method="taylor")).item())
    assert 700 < gaps[0] / gaps[1] < 1300


@pytest.mark.parametrize("method", ["taylor", "cayley", "exp"])
def test_scale_and_left_rotation_equal_explicit_products(method):
    w = torch.randn(7, 5, dtype=torch.float64)
    a = _skew(7, 1.0)
    eye = torch.eye(7, dtype=torch.float64)
    e = rotate_right(eye, -0.4 * a, method=method, degree=3)  # E(-0.4 A), formed explicitly
    torch.testing.assert_close(rotate_right(eye, a, -0.4, method=method, degree=3), e, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rotate_left(w, a, -0.4, method=method, degree=3), e @ w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rotate_left(w, a, -0.4, method=method, degree=3, aw=a @ w), e @ w,
                               rtol=1e-12, atol=1e-12)
    batch = torch.stack([w[:5, :5], w[2:, :5]])  # one step per matrix of a batch
    scales = torch.tensor([0.3, -0.2], dtype=torch.float64).view(2, 1, 1)
    b = _skew(5, 1.0, seed=1)
    got = rotate_right(batch, b, scales, method=method, degree=3)
    for i in range(2):
        want = batch[i] @ rotate_right(torch.eye(5, dtype=torch.float64), scales[i] * b, method=method, degree=3)
        torch.testing.assert_close(got[i], want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["taylor", "cayley", "exp"])
def test_rotation_written_into_w_equals_a_new_result(method):
    w = torch.randn(6, 9, dtype=torch.float64)
    for rotate, a in ((rotate_right, _skew(9, 1.0)), (rotate_left, _skew(6, 1.0, seed=3))):
        want = rotate(w, a, -0.3, method=method)
        target = w.clone()
        assert rotate(target, a, -0.3, method=method, out=target) is target
        torch.testing.assert_close(target, want, rtol=0, atol=1e-14)


def test_msign_returns_the_polar_factor_up_to_ns_scaling():
    g = torch.randn(24, 40, dtype=torch.float64)
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    y = msign(g, steps=5, dtype=torch.float64)
    core = u.T @ y @ vh.T  # diagonal if y shares g's singular vectors
    off = core - torch.diag(torch.diagonal(core))
    assert off.abs().max() < 1e-10
    assert 0.6 < torch.diagonal(core).min() and torch.diagonal(core).max() < 1.25
    # One matrix (2-D GEMMs) and a batch of one (batched GEMMs) are the same iteration.
    torch.testing.assert_close(msign(g[None], steps=5, dtype=torch.float64)[0], y, rtol=0, atol=1e-12)


def test_msign_of_a_skew_product_runs_the_same_iteration_on_the_gram_side():
    gen = torch.Generator().manual_seed(5)
    w, m = (torch.randn(3, 8, 40, generator=gen, dtype=torch.float64) for _ in range(2))
    s = w.mT @ m - m.mT @ w  # rank <= 16 in 40 dimensions
    got = msign_of_skew_product(torch.cat([w, m], dim=-2), steps=5)
    assert got.shape == (3, 40, 40)
    torch.testing.assert_close(got, msign(s, steps=5, dtype=torch.float64), rtol=0, atol=1e-12)
    assert msign_of_skew_product(torch.zeros(16, 40, dtype=torch.float64)).abs().max() == 0  # no 0/0


@pytest.mark.parametrize("method", ["cayley", "exp"])
@pytest.mark.parametrize("side", ["both", "alternate"])
def test_exact_maps_keep_singular_values_over_hundreds_of_steps(method, side):
    gen = torch.Generator().manual_seed(4)
    p = torch.nn.Parameter(torch.randn(20, 12, generator=gen, dtype=torch.float64))
    s0 = torch.linalg.svdvals(p.detach())
    opt = Pion([p], lr=0.05, exp_map=method, update_side=side)
    start = p.detach().clone()
    for _ in range(300):
        p.grad = torch.randn(20, 12, generator=gen, dtype=torch.float64)
        opt.step()
    assert (p.detach() - start).abs().max() > 0.1  # it really moved
    torch.testing.assert_close(torch.linalg.svdvals(p.detach()), s0, rtol=0, atol=1e-11)


def test_taylor2_spectral_drift_per_step_is_bounded_by_theta4_and_scales_as_theta4():
    gen = torch.Generator().manual_seed(5)
    w0 = torch.randn(16, 16, generator=gen, dtype=torch.float64) / 4
    g = torch.randn(16, 16, generator=gen, dtype=torch.float64)
    s0 = torch.linalg.svdvals(w0)
    drifts = []
    for lr in (0.05, 0.1):
        p = torch.nn.Parameter(w0.clone())
        p.grad = g.clone()
        opt = Pion([p], lr=lr, update_side="right")
        opt.step()
        # theta: spectral norm of the scaled generator actually used this step
        m = opt.state[p]["m_in"]  # EMA of W^T G: the momentum is its skew part
        a = -(m - m.T)
        alpha = lr * 0.2 * 16 / torch.linalg.matrix_norm(w0 @ a).item()
        theta = torch.linalg.matrix_norm(alpha * a, ord=2).item()
        rel = (torch.linalg.svdvals(p.detach()) / s0 - 1)
        # sigma(W E) lies in sigma(W) * [1, sqrt(1 + theta^4/4)]: drift is upward and O(theta^4).
        assert rel.min() > -1e-13
        assert rel.max() <= math.sqrt(1 + theta**4 / 4) - 1 + 1e-13
        drifts.append(rel.max().item())
    assert 12 < drifts[1] / drifts[0] < 20  # doubling the step multiplies the drift by ~2^4
