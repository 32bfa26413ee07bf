"""Packed experts and MLA heads under FSDP2 (gloo, 2 and 4 ranks) equal one device, and so does the optimizer
telemetry; expert state stays on the rank that holds the expert."""

import pytest
import torch

from gloo_ranks import run_on_ranks
from routing_workers import make_optimizer, run, step_model, tiny_deepseek


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("name", ["pion", "muon"])
def test_moe_and_mla_on_fsdp2_equal_one_device_with_expert_state_local(world, name):
    model = tiny_deepseek()
    optimizer = make_optimizer(name, model)
    expected_metrics = step_model(model, optimizer, 3)
    expected = dict(model.named_parameters())
    results = run_on_ranks(run, world, name)
    for weights, experts, owners, metrics in results:
        # The telemetry measures experts on the ranks holding them, the rest on owners, and reports what one
        # device does (Pion's drifts are rounding-level, so they are compared absolutely).
        assert metrics.keys() == expected_metrics.keys()
        for key in ("optim/max_rel_fro_change", "optim/max_rel_sv_change", "optim/mean_rel_sv_change"):
            assert metrics[key] == pytest.approx(expected_metrics[key], rel=1e-4, abs=1e-6), key
        for n, w in weights.items():
            torch.testing.assert_close(torch.from_numpy(w), expected[n].detach(), rtol=1e-5, atol=1e-6, msg=n)
        assert -1 in owners  # experts are updated where they lie, with no owner
        for n, (local_shape, state) in experts.items():
            local_experts = local_shape[0]
            assert local_experts == 4 // world
            units_per_expert = 2 if "gate_up" in n else 1
            # Only this rank's experts have state here: its units (a lone unit keeps no batch dim).
            units = local_experts * units_per_expert
            assert state and all((s[0] if len(s) == 3 else 1) == units for k, s in state.items() if k != "step"), state
