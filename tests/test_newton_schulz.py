"""Newton-Schulz coefficient schedules against iterates worked by hand in float64 scalar arithmetic.

On ``x = U diag(s) V^T`` every iteration acts on the singular values alone, ``s <- a s + b s^3 + c s^5``, after
``x`` is divided by its Frobenius norm; so ``msign(x) = U diag(f(s / |s|)) V^T`` with ``f`` the scalar iteration.
"""

import math

import pytest
import torch

from pion_rl.optim import Pion
from pion_rl.optim.newton_schulz import (NS_COEFFICIENTS, NS_SCHEDULES, coefficient_schedule, msign,
                                         msign_of_skew_product)

#: The five triples of the official release's msign (``coefficient_type="quintic"`` of NVIDIA
#: Emerging-Optimizers' ``newton_schulz``, which ``megatron-lm/megatron/core/optimizer/pion_msign.py`` calls).
OFFICIAL_QUINTIC = [(4.0848, -6.8946, 2.9270), (3.9505, -6.3029, 2.6377), (3.7418, -5.5913, 2.3037),
                    (2.8769, -3.1427, 1.2046), (2.8366, -3.0525, 1.2012)]
MUON = [(3.4445, -4.7750, 2.0315)] * 5


def _by_hand(singular_values, triples):
    """The scalar iteration on singular values normalised by their root sum of squares."""
    norm = math.sqrt(sum(s * s for s in singular_values))
    out = []
    for s in singular_values:
        s /= norm
        for a, b, c in triples:
            s = a * s + b * s**3 + c * s**5
        out.append(s)
    return out


def _rotation(theta):
    return torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]],
                        dtype=torch.float64)


def test_schedules_are_the_sources_numbers():
    assert [tuple(t) for t in NS_SCHEDULES["quintic"]] == OFFICIAL_QUINTIC
    assert NS_SCHEDULES["simple"] == (NS_COEFFICIENTS,) and NS_COEFFICIENTS == MUON[0]
    assert coefficient_schedule(NS_SCHEDULES["quintic"], 10) == OFFICIAL_QUINTIC * 2  # cycled, in order
    assert coefficient_schedule((NS_COEFFICIENTS,), 3) == MUON[:3]


@pytest.mark.parametrize(("schedule", "steps", "triples"), [
    (NS_SCHEDULES["quintic"], 5, OFFICIAL_QUINTIC),
    (NS_SCHEDULES["quintic"], 10, OFFICIAL_QUINTIC * 2),
    ((NS_COEFFICIENTS,), 5, MUON),
])
def test_msign_of_a_2x2_matrix_is_the_hand_worked_iteration(schedule, steps, triples):
    u, v = _rotation(0.3), _rotation(-1.1)
    s = [3.0, 0.2]
    x = u @ torch.diag(torch.tensor(s, dtype=torch.float64)) @ v.T
    want = u @ torch.diag(torch.tensor(_by_hand(s, triples), dtype=torch.float64)) @ v.T
    got = msign(x, steps, schedule, dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-13)
    # Diagonal: the singular values themselves, and a tall matrix is iterated on its wide transpose.
    diag = torch.tensor([[0.5, 0.0], [0.0, 4.0], [0.0, 0.0]], dtype=torch.float64)
    got = msign(diag, steps, schedule, dtype=torch.float64)
    f = _by_hand([0.5, 4.0], triples)
    torch.testing.assert_close(got, torch.tensor([[f[0], 0.0], [0.0, f[1]], [0.0, 0.0]], dtype=torch.float64),
                               rtol=0, atol=1e-13)


def test_the_two_schedules_are_far_apart():
    # The same input, Muon's triple against the official schedule: 19-24% apart (relative Frobenius norm) on
    # Gaussian matrices from 16 x 256 to 256 x 256, 20% here; the choice matters.
    g = torch.randn(64, 96, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    quintic = msign(g, 5, NS_SCHEDULES["quintic"], dtype=torch.float64)
    simple = msign(g, 5, (NS_COEFFICIENTS,), dtype=torch.float64)
    assert 0.1 < (torch.linalg.norm(quintic - simple) / torch.linalg.norm(quintic)).item() < 0.3


@pytest.mark.parametrize("name", ["quintic", "simple"])
def test_gram_side_iteration_follows_the_schedule_step_by_step(name):
    # Each triple acts on the 2k x 2k carrier Z as on S = P^T J P, in the same order, so the Gram-side msign
    # of a skew product is the schedule's msign of S (and the two schedules give different results).
    gen = torch.Generator().manual_seed(5)
    w, m = (torch.randn(2, 4, 24, generator=gen, dtype=torch.float64) for _ in range(2))
    s = w.mT @ m - m.mT @ w
    got = msign_of_skew_product(torch.cat([w, m], dim=-2), 5, NS_SCHEDULES[name])
    torch.testing.assert_close(got, msign(s, 5, NS_SCHEDULES[name], dtype=torch.float64), rtol=0, atol=1e-12)
    other = msign(s, 5, NS_SCHEDULES["simple" if name == "quintic" else "quintic"], dtype=torch.float64)
    assert (got - other).abs().max() > 1e-2


def test_schedule_lengths_are_checked_with_a_clear_error():
    with pytest.raises(ValueError, match="steps=3 must be a positive multiple of the schedule's 5 triples"):
        msign(torch.eye(3), 3, NS_SCHEDULES["quintic"])
    with pytest.raises(ValueError, match=r"sequence of \(a, b, c\) triples"):
        msign(torch.eye(3), 5, NS_COEFFICIENTS)  # a bare triple is not a schedule
    p = torch.nn.Parameter(torch.eye(4))
    with pytest.raises(ValueError, match="msign_steps=3 is not a multiple of the 5 triples of msign_coefficients"):
        Pion([p], variant="msign", msign_steps=3)
    with pytest.raises(ValueError, match="unknown msign_coefficients 'cubic'"):
        Pion([p], variant="msign", msign_coefficients="cubic")
    Pion([p], variant="msign", msign_steps=3, msign_coefficients="simple")  # one triple: any number of steps
