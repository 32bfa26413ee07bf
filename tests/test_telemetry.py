"""Optimizer telemetry through verl's real FSDP2 engine on 2 gloo ranks, checked against direct computation.

Every metric the engine adds to ``train_batch``'s metrics is recomputed here, in one process and in float64,
from the full weights rank 0 saw before and after each step (singular values with ``torch.linalg.svdvals``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gloo_ranks import run_on_ranks
from telemetry_workers import LR, metrics_report, resume_report
from verl_plugin_workers import TINY_HEAD_DIM, TINY_QWEN3, write_tiny_qwen3

LAYERS = range(TINY_QWEN3["num_hidden_layers"])
PER_HEAD = {f"model.layers.{i}.self_attn.{n}_proj.weight" for i in LAYERS for n in "qkv"}
MATRICES = PER_HEAD | {f"model.layers.{i}.{n}.weight" for i in LAYERS
                       for n in ("self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    model_dir = write_tiny_qwen3(tmp_path_factory.mktemp("tiny_qwen3"))
    return run_on_ranks(metrics_report, 2, str(model_dir))


def _units(name: str, weight) -> torch.Tensor:
    w = torch.from_numpy(weight).double()
    return w.view(-1, TINY_HEAD_DIM, w.shape[1]) if name in PER_HEAD else w[None]


def expected_metrics(w0: dict, before: dict, after: dict) -> dict[str, float]:
    """The telemetry's definitions, computed directly: update RMS over matrices / the rest, max relative change
    of unit Frobenius norms, max / mean of |s_i - s0_i| / s0_max over all units' singular values (vs. w0)."""
    others = set(w0) - MATRICES

    def rms(names):
        diffs = [torch.from_numpy(after[n]).double() - torch.from_numpy(before[n]).double() for n in names]
        return math.sqrt(sum(float(d.square().sum()) for d in diffs) / sum(d.numel() for d in diffs))

    fro, changes = [], []
    for name in sorted(MATRICES):
        u0, u = _units(name, w0[name]), _units(name, after[name])
        n0, n = torch.linalg.matrix_norm(u0), torch.linalg.matrix_norm(u)
        fro.append(((n - n0).abs() / n0).max())
        s0, s = torch.linalg.svdvals(u0), torch.linalg.svdvals(u)
        changes.append(((s - s0).abs() / s0.amax(-1, keepdim=True)).flatten())
    changes = torch.cat(changes)
    return {"optim/update_rms": rms(MATRICES), "optim/update_rms_adamw": rms(others),
            "optim/max_rel_fro_change": float(max(fro)),
            "optim/max_rel_sv_change": float(changes.max()), "optim/mean_rel_sv_change": float(changes.mean())}


@pytest.mark.parametrize("optimizer", ["AdamW", "Pion", "Muon"])
def test_each_metric_equals_a_direct_computation_on_the_same_weights(runs, optimizer):
    run, rank1 = runs[0][optimizer], runs[1][optimizer]
    weights = run["weights"]
    for step, metrics in enumerate(run["metrics"], 1):
        own = "optim/telemetry_s"  # each rank's own time
        assert {k: v for k, v in metrics.items() if k != own} == {
            k: v for k, v in rank1["metrics"][step - 1].items() if k != own}  # every rank reports the same numbers
        expected = expected_metrics(weights[0], weights[step - 1], weights[step])
        if optimizer == "Muon":  # spectrum_every 0
            expected = {k: v for k, v in expected.items() if "sv_change" not in k}
        got = {k: metrics[k] for k in expected}
        # fp32 weights and fp32 singular values on the owner ranks against float64 here.
        assert got == pytest.approx(expected, rel=1e-4, abs=2e-7), (optimizer, step)
        assert 0 < metrics["optim/step_s"] < run["train_batch_s"][step - 1]
        assert 0 < metrics[own] < run["train_batch_s"][step - 1]
        has_pion_stats = "optim/pion/step_size" in metrics
        assert has_pion_stats == (optimizer == "Pion")


def test_state_size_is_the_fuller_ranks_optimizer_state(runs):
    for optimizer in ("AdamW", "Pion", "Muon"):
        fullest = max(r[optimizer]["local_state_bytes"] for r in runs)
        assert runs[0][optimizer]["metrics"][-1]["optim/state_gb_max_rank"] == pytest.approx(fullest / 1e9)
    # AdamW: exp_avg and exp_avg_sq over rank 0's FSDP2 rows (ceil(rows / 2)) plus a 4-byte step per tensor.
    w0 = runs[0]["AdamW"]["weights"][0]
    rank0_elements = sum(math.ceil(w.shape[0] / 2) * int(np.prod(w.shape[1:])) for w in w0.values())
    assert runs[0]["AdamW"]["metrics"][-1]["optim/state_gb_max_rank"] == pytest.approx(
        (8 * rank0_elements + 4 * len(w0)) / 1e9)


def test_pion_step_size_and_generator_norm_match_the_first_steps_rms_scaled_generator(runs):
    # Step 1 under `alternate` rotates the right side with the lie_lie momentum m_in = (1 - beta1) (W^T G - G^T W),
    # scaled by alpha = lr * 0.2 * sqrt(r c) / ||W m_in||_F per unit (q/k/v per head).
    run = runs[0]["Pion"]
    sizes, norms = [], []
    for name in sorted(MATRICES):
        w, g = _units(name, run["weights"][0][name]), _units(name, run["grads_after_first_step"][name])
        x = w.mT @ g
        m_in = 0.1 * (x - x.mT)
        r, c = w.shape[-2:]
        alpha = LR * 0.2 * math.sqrt(r * c) / torch.linalg.matrix_norm(w @ m_in)
        sizes.append(alpha)
        norms.append(alpha * torch.linalg.matrix_norm(m_in))
    metrics = run["metrics"][0]
    assert metrics["optim/pion/step_size"] == pytest.approx(float(torch.cat(sizes).mean()), rel=1e-4)
    assert metrics["optim/pion/generator_norm"] == pytest.approx(float(torch.cat(norms).mean()), rel=1e-4)


def test_pion_keeps_singular_values_within_the_taylor_bound_while_adamw_moves_them(runs):
    # Degree-2 Taylor map: E^T E = I + X^4 / 4 for the applied skew X (theta = ||X||_2 <= ||X||_F, the generator
    # norm), so each step scales every singular value by a factor in [1, sqrt(1 + theta^4 / 4)].
    pion, adamw = runs[0]["Pion"], runs[0]["AdamW"]
    growth = 1.0
    for metrics, theta in zip(pion["metrics"], pion["max_generator_norm"]):
        growth *= math.sqrt(1 + theta**4 / 4)
        assert metrics["optim/max_rel_sv_change"] <= growth - 1
    assert growth - 1 < 1e-4
    assert all(m["optim/max_rel_sv_change"] > 1e-4 for m in adamw["metrics"][1:])


def test_spectrum_every_zero_computes_no_singular_values(runs):
    for rank in runs:
        assert rank["Muon"]["svdvals_calls"] == 0
        assert not any("sv_change" in k for m in rank["Muon"]["metrics"] for k in m)
        # With spectrum_every 1: the reference, then one call per owned matrix and step, spread over both ranks.
        assert rank["AdamW"]["svdvals_calls"] > 0
    assert sum(r["AdamW"]["svdvals_calls"] for r in runs) == len(MATRICES) * (1 + 4)


def test_a_resumed_run_measures_against_the_original_reference(tmp_path):
    model_dir = write_tiny_qwen3(tmp_path / "model")
    ranks = run_on_ranks(resume_report, 2, str(model_dir), str(tmp_path / "checkpoint"))
    report = ranks[0]
    assert all(r["saved_had_entry"] for r in ranks)
    # Pion resumes bit for bit, so against the original reference the resumed steps repeat the straight ones.
    for straight, resumed in zip(report["after"]["metrics"], report["resumed"]["metrics"]):
        for key in ("optim/max_rel_sv_change", "optim/mean_rel_sv_change", "optim/max_rel_fro_change",
                    "optim/update_rms"):
            assert resumed[key] == straight[key], key
    # Loaded from optimizer files without the entry: said once per rank, and the weights at the save are the
    # new reference.
    for r in ranks:
        assert len(r["legacy_warnings"]) == 1 and "new reference" in r["legacy_warnings"][0]
    weights_at_save = report["before"]["weights"][-1]
    expected = expected_metrics(weights_at_save, weights_at_save, report["legacy"]["weights"][1])
    got = report["legacy"]["metrics"][0]
    assert {k: got[k] for k in expected} == pytest.approx(expected, rel=1e-4, abs=2e-7)
    assert got["optim/max_rel_sv_change"] != report["after"]["metrics"][0]["optim/max_rel_sv_change"]


def test_replicated_ranks_report_what_one_process_reports():
    from telemetry_workers import replicated_report

    for report in run_on_ranks(replicated_report, 2):
        for grouped, alone in zip(report["group"], report["alone"]):
            # State is split over the two owners; everything else is counted once, not once per replica.
            state = "optim/state_gb_max_rank"
            assert alone[state] / 2 < grouped[state] < alone[state]
            del grouped[state], alone[state]
            assert grouped == pytest.approx(alone, rel=1e-9, abs=1e-12)


def test_a_zero_gradient_reports_no_applied_step():
    """Zero gradients rotate by nothing: the telemetry reports step_size 0 there (not the RMS scale over a zero
    norm, ~1e7), and the mean over units counts that 0 beside a matrix that did move."""
    from pion_rl.optim import Pion
    from pion_rl.telemetry import OptimizerTelemetry

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 6, bias=False), torch.nn.Linear(6, 4, bias=False))
    optimizer = Pion(model.named_parameters(), lr=1e-3, update_side="alternate")
    telemetry = OptimizerTelemetry(optimizer, model.named_parameters(), spectrum_every=0)
    still, moving = model[0].weight, model[1].weight
    before = still.detach().clone()
    still.grad, moving.grad = torch.zeros_like(still), torch.randn_like(moving)
    optimizer.step()
    metrics, stats = telemetry.pop_metrics(), optimizer.last_step_stats
    assert torch.equal(still.detach(), before)
    assert stats[still]["step_size"].tolist() == [0.0] and stats[still]["generator_norm"].tolist() == [0.0]
    alpha = float(stats[moving]["step_size"])
    assert 0 < alpha < 1
    assert metrics["optim/pion/step_size"] == pytest.approx(alpha / 2, rel=1e-6)

    fresh = Pion(model.named_parameters(), lr=1e-3)
    telemetry = OptimizerTelemetry(fresh, model.named_parameters(), spectrum_every=0)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    fresh.step()
    metrics = telemetry.pop_metrics()
    assert metrics["optim/pion/step_size"] == 0.0 and metrics["optim/pion/generator_norm"] == 0.0
