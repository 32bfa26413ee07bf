"""torch.optim behaviour of Pion and Muon: AdamW fallback, state_dict resume, schedulers, closures,
parameters without gradients, non-finite gradients and bad input."""

import copy

import pytest
import torch

from pion_rl.optim import Muon, Pion

OPTIMIZERS = {
    "pion": lambda groups: Pion(groups, lr=0.01, update_side="alternate", second_moment=True),
    "pion_blocks": lambda groups: Pion(groups, lr=0.01, variant="transported_ambient_ambient", row_block=2),
    "muon": lambda groups: Muon(groups, lr=0.01),
}


def _model_groups(algorithm, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    matrix = torch.nn.Parameter(torch.randn(6, 4, generator=gen, dtype=dtype))
    other = torch.nn.Parameter(torch.randn(4, 2, 3, generator=gen, dtype=dtype))
    bias = torch.nn.Parameter(torch.randn(6, generator=gen, dtype=dtype))
    groups = [{"params": [matrix], "param_names": ["layer.weight"]},
              {"params": [other, bias], "param_names": ["conv.weight", "layer.bias"], "algorithm": "adamw"}]
    return groups, [matrix, other, bias]


def _grads(params, steps, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params] for _ in range(steps)]


def _step(opt, params, grads):
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step()


def test_adamw_fallback_matches_torch_adamw():
    groups, params = _model_groups("pion")
    opt = Pion(groups, lr=0.01, adamw_betas=(0.8, 0.99), adamw_eps=1e-6, adamw_weight_decay=0.1)
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params[1:]]
    ref = torch.optim.AdamW(twins, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
    for grads in _grads(params, 5):
        _step(opt, params, grads)
        _step(ref, twins, grads[1:])
    for p, t in zip(params[1:], twins):
        torch.testing.assert_close(p.detach(), t.detach(), rtol=1e-6, atol=1e-7)
    assert set(opt.state[params[1]]) == {"step", "exp_avg", "exp_avg_sq"}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_dict_round_trip_resumes_bit_for_bit(name):
    grads = None
    groups, params = _model_groups(name)
    grads = _grads(params, 6)
    straight = OPTIMIZERS[name](groups)
    for g in grads:
        _step(straight, params, g)

    groups2, params2 = _model_groups(name)
    first = OPTIMIZERS[name](groups2)
    for g in grads[:3]:
        _step(first, params2, g)
    saved = copy.deepcopy(first.state_dict())
    saved_weights = [p.detach().clone() for p in params2]

    groups3, params3 = _model_groups(name, seed=7)  # fresh objects, other values: everything comes from the save
    with torch.no_grad():
        for p, w in zip(params3, saved_weights):
            p.copy_(w)
    resumed = OPTIMIZERS[name](groups3)
    resumed.load_state_dict(saved)
    for g in grads[3:]:
        _step(resumed, params3, g)
    for a, b in zip(params, params3):
        assert torch.equal(a.detach(), b.detach())


def test_bf16_state_stays_fp32_through_save_and_load():
    p = torch.nn.Parameter(torch.randn(4, 4).bfloat16())
    opt = Pion([p], lr=0.01)
    p.grad = torch.randn(4, 4).bfloat16()
    opt.step()
    saved = copy.deepcopy(opt.state_dict())
    q = torch.nn.Parameter(p.detach().clone())
    again = Pion([q], lr=0.01)
    again.load_state_dict(saved)
    assert again.state[q]["m_in"].dtype == torch.float32
    assert torch.equal(again.state[q]["m_in"], opt.state[p]["m_in"])


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_lr_scheduler_drives_the_step_size(name):
    # With lr scheduled to 0 after the first step, nothing but weight decay may move afterwards.
    groups, params = _model_groups(name)
    for g in groups:
        g["adamw_weight_decay"] = 0.0
    opt = OPTIMIZERS[name](groups)
    if name == "muon":
        opt.param_groups[0]["weight_decay"] = 0.0
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 if step == 0 else 0.0)
    grads = _grads(params, 3)
    _step(opt, params, grads[0])
    sched.step()
    assert all(g["lr"] == 0.0 for g in opt.param_groups)
    frozen = [p.detach().clone() for p in params]
    _step(opt, params, grads[1])
    for p, f in zip(params, frozen):
        assert torch.equal(p.detach(), f)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_params_without_grad_are_skipped_and_closure_is_called(name):
    groups, params = _model_groups(name)
    opt = OPTIMIZERS[name](groups)
    before = [p.detach().clone() for p in params]
    params[0].grad = None
    for p in params[1:]:
        p.grad = torch.ones_like(p)
    calls = []

    def closure():
        calls.append(1)
        return torch.tensor(3.0)

    assert opt.step(closure).item() == 3.0 and calls == [1]
    assert torch.equal(params[0].detach(), before[0]) and not opt.state[params[0]]
    assert not torch.equal(params[1].detach(), before[1])


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_gradient_raises_naming_the_parameter_and_changes_nothing(name, bad):
    groups, params = _model_groups(name)
    opt = OPTIMIZERS[name](groups)
    _step(opt, params, _grads(params, 1)[0])
    weights = [p.detach().clone() for p in params]
    state = copy.deepcopy(opt.state_dict())
    grads = _grads(params, 1, seed=3)[0]
    grads[2][0] = bad  # the last parameter: everything before it would have been updated already
    with pytest.raises(FloatingPointError, match="layer.bias"):
        _step(opt, params, grads)
    for p, w in zip(params, weights):
        assert torch.equal(p.detach(), w)
    after = opt.state_dict()["state"]
    for key, entry in state["state"].items():
        for k, v in entry.items():
            assert torch.equal(v, after[key][k])


def test_bad_input_gives_clear_errors():
    matrix = torch.nn.Parameter(torch.zeros(6, 4))
    bias = torch.nn.Parameter(torch.zeros(6))
    with pytest.raises(ValueError, match=r"the parameter of shape \(6,\) is not 2-D"):
        Pion([matrix, bias])
    with pytest.raises(ValueError, match="unknown variant"):
        Pion([matrix], variant="lie-lie")
    with pytest.raises(ValueError, match="unknown update_side"):
        Pion([matrix], update_side="top")
    with pytest.raises(ValueError, match="unknown exp_map"):
        Pion([matrix], exp_map="pade")
    with pytest.raises(ValueError, match="row_block=4 does not divide the 6 rows"):
        Pion([matrix], row_block=4)
    with pytest.raises(ValueError, match=r"unknown param-group option\(s\) \['row_blok'\]"):
        Pion([{"params": [matrix], "row_blok": 2}])
    with pytest.raises(ValueError, match="algorithm 'sgd'"):
        Pion([{"params": [matrix], "algorithm": "sgd"}])
    with pytest.raises(ValueError, match="no second moment"):
        Pion([matrix], variant="msign", second_moment=True)
    with pytest.raises(TypeError):
        Pion([matrix], betaz=(0.9, 0.99))


def test_update_side_aliases_match_canonical_names():
    results = []
    for side in ("out", "left", "in", "right"):
        p = torch.nn.Parameter(torch.eye(5, 3, dtype=torch.float64) + 0.1)
        p.grad = torch.arange(15, dtype=torch.float64).reshape(5, 3) / 10
        Pion([p], lr=0.1, update_side=side).step()
        results.append(p.detach())
    assert torch.equal(results[0], results[1]) and torch.equal(results[2], results[3])
    assert not torch.equal(results[0], results[2])


def test_pion_weight_decay_is_explicit_shrinks_the_spectrum_and_warns():
    p = torch.nn.Parameter(torch.eye(4, dtype=torch.float64))
    with pytest.warns(UserWarning, match="shrinks the singular values"):
        opt = Pion([p], lr=0.1, weight_decay=0.5, exp_map="cayley")
    p.grad = torch.randn(4, 4, dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(torch.linalg.svdvals(p.detach()), torch.full((4,), 0.95, dtype=torch.float64))
