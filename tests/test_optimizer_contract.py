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


@pytest.mark.parametrize("foreach", [False, True])
def test_adamw_fallback_matches_torch_adamw_to_the_bit(foreach):
    # torch's AdamW puts eps after the bias correction, as the fallback's default form does; fp32 and fp64
    # tensors in one group, and one tensor that sits out a step so the tensors' step counts differ.
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape, generator=gen, dtype=dtype))
              for shape, dtype in (((4, 2, 3), torch.float32), ((6,), torch.float32), ((5, 2), torch.float64))]
    opt = Pion([{"params": params, "algorithm": "adamw"}], lr=0.01, adamw_betas=(0.8, 0.99), adamw_eps=1e-6,
               adamw_weight_decay=0.1)
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    initial = [p.detach().clone() for p in params]
    ref = torch.optim.AdamW(twins, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, foreach=foreach)
    for step in range(5):
        grads = [None if step == 2 and i == 1 else torch.randn(p.shape, generator=gen, dtype=p.dtype)
                 for i, p in enumerate(params)]
        for p, t, g in zip(params, twins, grads):
            p.grad, t.grad = g, None if g is None else g.clone()
        opt.step()
        ref.step()
    for p, t, before in zip(params, twins, initial):
        assert torch.equal(p.detach(), t.detach())
        assert (p.detach() - before).abs().max() > 0.01  # the comparison is not vacuous
    assert [int(opt.state[p]["step"]) for p in params] == [5, 4, 5]
    assert set(opt.state[params[0]]) == {"step", "exp_avg", "exp_avg_sq"}


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


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_a_finite_gradient_whose_sum_overflows_is_not_an_error(name):
    groups, params = _model_groups(name)
    opt = OPTIMIZERS[name](groups)
    grads = _grads(params, 1)[0]
    grads[2].fill_(3e38)  # finite, but its sum is inf in fp32
    _step(opt, params, grads)
    assert all(torch.isfinite(p).all() for p in params) and opt.state[params[2]]


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


def _matrix():
    return torch.nn.Parameter(torch.arange(24.0).view(6, 4) / 24)  # not all zeros: Pion refuses those


@pytest.mark.parametrize("make, option, value, error, message", [
    (Muon, "lr", -1, ValueError, r"Muon: lr must be a number >= 0, got -1"),
    (Pion, "lr", -1, ValueError, r"Pion: lr must be a number >= 0, got -1"),
    (Pion, "rms_scale", -1, ValueError, r"Pion: rms_scale must be a number > 0, got -1"),
    (Muon, "rms_scale", 0.0, ValueError, r"rms_scale must be a number > 0"),
    (Pion, "lr", "1e-3", TypeError, r"Pion: lr must be a number >= 0, got '1e-3' \(a string: give the number"),
    (Muon, "lr", "1e-3", TypeError, r"Muon: lr must be a number"),
    (Pion, "lr", float("nan"), ValueError, r"lr must be a number >= 0, got nan"),
    (Pion, "betas", (0.9, 1.0), ValueError, r"betas must be 2 numbers each in \[0, 1\) or None"),
    (Pion, "betas", 0.9, TypeError, r"betas must be 2 numbers"),
    (Pion, "eps", 0.0, ValueError, r"eps must be a number > 0"),
    (Pion, "degree", 2.0, TypeError, r"degree must be an integer >= 1"),
    (Pion, "row_block", 0, ValueError, r"row_block must be an integer >= 1 or None"),
    (Pion, "msign_steps", 0, ValueError, r"msign_steps must be an integer >= 1"),
    (Pion, "msign_lambda", -0.5, ValueError, r"msign_lambda must be a number > 0"),
    (Pion, "weight_decay", -0.1, ValueError, r"weight_decay must be a number >= 0"),
    (Pion, "adamw_betas", (0.9, -0.1), ValueError, r"adamw_betas must be 2 numbers each in \[0, 1\)"),
    (Pion, "adamw_eps", -1e-8, ValueError, r"adamw_eps must be a number > 0"),
    (Muon, "adamw_weight_decay", -1, ValueError, r"adamw_weight_decay must be a number >= 0"),
    (Muon, "momentum", 1.0, ValueError, r"momentum must be a number in \[0, 1\)"),
    (Muon, "ns_steps", True, TypeError, r"ns_steps must be an integer >= 1"),
    (Muon, "ns_coefficients", (3.4, -4.7), TypeError, r"ns_coefficients must be 3 numbers"),
    (Muon, "weight_decay", "0.01", TypeError, r"weight_decay must be a number >= 0"),
])
def test_bad_numeric_options_are_rejected_at_construction_and_in_add_param_group(make, option, value, error,
                                                                                 message):
    with pytest.raises(error, match=message):
        make([_matrix()], **{option: value})
    # The same option in a group added later is rejected too, and leaves the optimizer as it was.
    opt = make([_matrix()])
    groups_before = copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])
    with pytest.raises(error, match=message):
        opt.add_param_group({"params": [_matrix()], option: value})
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups_before


def test_good_numeric_options_of_every_accepted_kind_train():
    # Ints, numpy-free plain floats, lists from a YAML config and a 0-dim tensor lr are all numbers.
    p = _matrix()
    opt = Pion([p], lr=torch.tensor(1e-2), betas=[0.9, 0.99], degree=3, row_block=3, rms_scale=1)
    before = p.detach().clone()
    p.grad = torch.randn(6, 4)
    opt.step()
    assert not torch.equal(p.detach(), before)
    q = torch.nn.Parameter(torch.eye(4))
    Muon([q], lr=1, ns_coefficients=[3.4445, -4.7750, 2.0315], weight_decay=0).step()  # no grad: no change
    assert torch.equal(q.detach(), torch.eye(4))


def _snapshot(opt):
    """Everything load_state_dict may change: the groups' options and every state tensor, by parameter."""
    groups = [{k: (v if k != "params" else [id(p) for p in v]) for k, v in g.items()} for g in opt.param_groups]
    state = {id(p): {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()}
    return copy.deepcopy(groups), state


def _assert_unchanged(opt, snapshot):
    groups, state = _snapshot(opt)
    assert groups == snapshot[0]
    assert state.keys() == snapshot[1].keys()
    for key, entry in snapshot[1].items():
        assert entry.keys() == state[key].keys()
        assert all(torch.equal(v, state[key][k]) for k, v in entry.items())


def _stepped(make, groups, params, steps=2):
    opt = make(groups)
    for g in _grads(params, steps):
        _step(opt, params, g)
    return opt


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_load_state_dict_of_another_models_sizes_fails_before_anything_changes(name):
    # Same number of matrices and tensors as _model_groups, other sizes.
    gen = torch.Generator().manual_seed(5)
    other = [torch.nn.Parameter(torch.randn(*shape, generator=gen)) for shape in ((8, 4), (4, 2, 3), (8,))]
    other_groups = [{"params": [other[0]], "param_names": ["layer.weight"]},
                    {"params": other[1:], "param_names": ["conv.weight", "layer.bias"], "algorithm": "adamw"}]
    saved = copy.deepcopy(_stepped(OPTIMIZERS[name], other_groups, other).state_dict())

    groups, params = _model_groups(name)
    opt = _stepped(OPTIMIZERS[name], groups, params)
    before = _snapshot(opt)
    weights = [p.detach().clone() for p in params]
    with pytest.raises(ValueError, match=r"saved '\w+' of parameter 'layer.weight' \(6, 4\) is \(.+\) torch.float32, "
                                         r"but this parameter needs \(.+\) torch.float32"):
        opt.load_state_dict(saved)
    _assert_unchanged(opt, before)
    # The optimizer still works: the next step runs on the state it had.
    _step(opt, params, _grads(params, 1, seed=9)[0])
    assert not all(torch.equal(p.detach(), w) for p, w in zip(params, weights))


def test_load_state_dict_checks_dtypes_and_keys():
    groups, params = _model_groups("pion")
    saved = copy.deepcopy(_stepped(OPTIMIZERS["pion"], groups, params).state_dict())
    opt = _stepped(OPTIMIZERS["pion"], *_model_groups("pion"))
    before = _snapshot(opt)
    wrong_dtype = copy.deepcopy(saved)
    wrong_dtype["state"][2]["exp_avg"] = wrong_dtype["state"][2]["exp_avg"].double()
    with pytest.raises(ValueError, match=r"saved 'exp_avg' of parameter 'layer.bias' \(6,\) is \(6,\) torch.float64, "
                                         r"but this parameter needs \(6,\) torch.float32"):
        opt.load_state_dict(wrong_dtype)
    missing = copy.deepcopy(saved)
    del missing["state"][0]["v_in"]  # saved without second_moment, loaded with it
    with pytest.raises(ValueError, match=r"'layer.weight' \(6, 4\) has \['m_in', 'm_out', 'step', 'v_out'\]"):
        opt.load_state_dict(missing)
    bad_option = copy.deepcopy(saved)
    bad_option["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr must be a number >= 0, got -1.0"):
        opt.load_state_dict(bad_option)
    _assert_unchanged(opt, before)


def test_muon_state_into_pion_is_a_clear_error_and_changes_nothing():
    groups, params = _model_groups("muon")
    saved = copy.deepcopy(_stepped(OPTIMIZERS["muon"], groups, params).state_dict())
    opt = _stepped(OPTIMIZERS["pion"], *_model_groups("pion"))
    before = _snapshot(opt)
    with pytest.raises(ValueError, match=r"the saved state is not Pion's: its param group 0 has algorithm 'muon'"):
        opt.load_state_dict(saved)
    _assert_unchanged(opt, before)


def test_pion_settings_are_built_when_groups_are_added_or_loaded_not_per_step(monkeypatch):
    from pion_rl.optim import pion_math

    built = []
    original = pion_math.PionSettings.from_group
    monkeypatch.setattr(pion_math.PionSettings, "from_group", classmethod(
        lambda cls, group: built.append(group["update_side"]) or original(group)))
    params = [torch.nn.Parameter(torch.randn(5, 3, generator=torch.Generator().manual_seed(i))) for i in range(3)]
    opt = Pion([{"params": params[:2]}], lr=0.05, update_side="right")
    opt.add_param_group({"params": params[2:], "update_side": "both"})
    built.clear()
    for grads in _grads(params, 3):
        _step(opt, params, grads)
    assert built == []  # three steps of three matrices: nothing rebuilt
    # A state saved with update_side="left" steps as "left" once loaded: the loaded groups' settings are rebuilt.
    left = Pion([{"params": params[:2]}, {"params": params[2:]}], lr=0.05, update_side="left")
    twin = Pion([{"params": params[:2]}, {"params": params[2:]}], lr=0.05, update_side="right")
    twin.load_state_dict(left.state_dict())
    grads = _grads(params, 1, seed=7)[0]
    snapshot = [p.detach().clone() for p in params]
    _step(left, params, grads)
    after_left = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, s in zip(params, snapshot):
            p.copy_(s)
    built.clear()
    _step(twin, params, grads)
    assert all(torch.equal(p.detach(), a) for p, a in zip(params, after_left))
    assert built == []
