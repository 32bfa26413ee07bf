"""Pion and Muon on sharded weights (FSDP2 1-D mesh, HSDP 2-D mesh, DDP) under gloo on CPU.

Each world size is one launch of spawned ranks (see tests/sharding_workers.py); the tests below check its
results. The reference everywhere is the one-process optimizer fed the very gradients the sharded run reduced.
"""

from __future__ import annotations

import pytest
import torch
import sharding_workers as workers
from gloo_ranks import run_on_ranks
from pion_rl.optim import Muon, Pion
from pion_rl.optim.sharding import RowLayout, assign_owners

#: What each launch runs: every case at world size 2; at 4, cases covering variants, sides and Muon.
PLANS = {
    2: dict(
        compare={"fsdp": list(workers.CASES), "ddp": ["pion/lie_lie/alternate+v", "pion/msign/alternate", "muon"]},
        resume=("fsdp", ["pion/lie_lie/alternate+v", "pion/transported/both+v", "muon"]),
        nonfinite=("fsdp", "pion/lie_lie/both"),
        traffic=("fsdp", ["pion/lie_lie/both", "muon"]),
    ),
    4: dict(
        compare={"fsdp": ["pion/lie_lie/alternate+v", "pion/lie_lie/left", "pion/transported/both+v",
                          "pion/msign/alternate", "muon"],
                 "hsdp": ["pion/lie_lie/both", "pion/transported/alternate", "muon"]},
        resume=("hsdp", ["pion/lie_lie/alternate+v", "muon"]),
        nonfinite=("fsdp", "muon"),
        traffic=("fsdp", ["pion/lie_lie/both", "muon"]),
    ),
}
#: Sharded and one-process runs do the same fp32 math on the same full matrices (bitwise equal on our CPUs);
#: the slack only allows for elementwise AdamW kernels vectorising a shard and the whole tensor differently.
TOLERANCE = 1e-6


@pytest.fixture(scope="module", params=sorted(PLANS), ids=lambda world: f"world{world}")
def launch(request, tmp_path_factory):
    world = request.param
    save_dir = tmp_path_factory.mktemp(f"world{world}")
    ranks = run_on_ranks(workers.run_suite, world, *PLANS[world].values(), str(save_dir))
    return world, ranks


def test_sharded_weights_equal_single_device_run(launch):
    world, ranks = launch
    for rank, result in enumerate(ranks):
        for layout, cases in result["compare"].items():
            for case, r in cases.items():
                where = f"{layout} {case} at world size {world}, rank {rank}"
                assert r["max_diff"] <= TOLERANCE, f"{where}: weights differ from one process by {r['max_diff']:.3g}"
                moved = r["moved"]
                assert moved["frozen.weight"] == 0.0, f"{where}: the frozen layer changed"
                for name in ("q_proj.weight", "mid.weight", "narrow.weight", "norm.weight"):
                    assert moved[name] > 1e-3, f"{where}: {name} did not move, so the comparison proves nothing"


def test_each_matrix_state_lives_on_exactly_one_rank_balanced(launch):
    world, ranks = launch
    for layout in ranks[0]["compare"]:
        for case in ranks[0]["compare"][layout]:
            per_rank = [result["compare"][layout][case] for result in ranks]
            reference = per_rank[0]["reference_state_bytes"]
            holders = {name: [rank for rank, r in enumerate(per_rank) if name in r["state_bytes"]]
                       for name in reference}
            assert all(len(h) == 1 for h in holders.values()), f"{layout} {case}: state holders {holders}"
            for name, (rank,) in holders.items():  # the owner holds the whole matrix's state, not a part of it
                assert per_rank[rank]["state_bytes"][name] == reference[name], (layout, case, name)
            totals = [sum(r["state_bytes"].values()) for r in per_rank]
            # Largest-first assignment keeps the heaviest rank within one matrix of the lightest.
            assert max(totals) - min(totals) <= max(reference.values()), (layout, case, totals)
            assert all(r["adamw_state_is_local"] for r in per_rank), f"{layout} {case}: AdamW state is not per shard"


def test_resume_continues_bit_for_bit_and_rejects_another_ranks_state(launch):
    world, ranks = launch
    for rank, result in enumerate(ranks):
        for case, r in result["resume"].items():
            assert r["bitwise"], f"{case}, rank {rank}: the resumed run diverged from the uninterrupted one"
            assert r["wrong_rank_error"] is not None and f"rank {(rank + 1) % world}'s" in r["wrong_rank_error"]


def test_loading_at_another_world_size_is_a_clear_error(launch):
    world, ranks = launch
    for case, r in ranks[0]["resume"].items():
        kind, options = workers.CASES[case]
        optimizer = (Pion if kind == "pion" else Muon)(workers.TinyNet().named_parameters(), **options)
        saved = torch.load(r["state_files"].format(0), weights_only=False)
        with pytest.raises(ValueError, match=f"saved at world size {world} but this run has world size 1"):
            optimizer.load_state_dict(saved)


def test_nonfinite_grad_on_one_rank_raises_on_every_rank_and_changes_nothing(launch):
    world, ranks = launch
    for rank, result in enumerate(ranks):
        r = result["nonfinite"]
        assert r["error"] is not None and "mid.weight" in r["error"], f"rank {rank} of {world}: {r['error']}"
        assert r["weights_unchanged"] and r["state_unchanged"], f"rank {rank} of {world}"


def test_muon_moves_the_gradient_in_and_a_bf16_update_out_pion_w_and_g_in_and_w_out(launch):
    # Bytes per rank in the step's all-to-alls, from the FSDP2 row layout alone: a rank sends its rows of each
    # matrix it does not own to the owner (Muon: G, fp32; Pion: W and G, fp32), and the owner sends every
    # other rank its rows of the result (Muon: the orthogonalised update, bf16; Pion: the new W, fp32).
    world, ranks = launch
    layout = RowLayout(shard=tuple(range(world)), replica=(0,) * world, num_shards=world)
    per_element = {"muon": (4, 2), "pion/lie_lie/both": (8, 4)}  # (sent to the owner, sent by the owner)
    for case, (to_owner, from_owner) in per_element.items():
        for rank, result in enumerate(ranks):
            r = result["traffic"][case]
            expected = 0
            for rows, cols, owner in r["matrices"]:
                if owner == rank:
                    expected += from_owner * cols * sum(
                        stop - start for k in range(world) if k != rank for start, stop in [layout.rows(k, rows)])
                else:
                    start, stop = layout.rows(rank, rows)
                    expected += to_owner * (stop - start) * cols
            assert r["sent"]["all_to_all_single"] == expected, (case, world, rank, r["sent"])
            # The rest is the finite-gradient check's one small all-reduce.
            assert set(r["sent"]) <= {"all_to_all_single", "all_reduce"} and r["sent"]["all_reduce"] < 100, r["sent"]


def test_unsupported_layouts_are_clear_errors(launch):
    _, ranks = launch
    expected = {"process_group with DTensors": "do not pass process_group",
                "DTensors mixed with plain tensors": "mix DTensors and plain tensors",
                "column-sharded DTensor": "unsupported DTensor placements"}
    for result in ranks:
        for what, message in result["bad_inputs"].items():
            assert message is not None and expected[what] in message, (what, message)


def test_assign_owners_is_deterministic_and_within_one_matrix_of_even():
    generator = torch.Generator().manual_seed(0)
    costs = torch.randint(1, 10_000, (200,), generator=generator).tolist()
    for world in (2, 3, 8):
        owners = assign_owners(costs, world)
        assert owners == assign_owners(list(costs), world)
        loads = [sum(c for c, o in zip(costs, owners) if o == rank) for rank in range(world)]
        assert max(loads) - min(loads) <= max(costs)
        assert max(loads) <= sum(costs) / world * 1.01  # many small matrices: near-perfect balance


def test_assign_owners_spreads_free_matrices_by_count():
    # Rank 0 takes the costly matrix; without counting matrices, every free one would pile onto rank 1.
    assert assign_owners([0.0] * 6 + [5.0], 3) == [1, 2, 1, 2, 1, 2, 0]
