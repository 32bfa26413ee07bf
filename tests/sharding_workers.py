"""Process-side code of tests/test_sharding_on_cpu.py: Pion and Muon on FSDP2 / HSDP / DDP ranks under gloo.

Spawned children import this module by its bare name (pytest puts tests/ on sys.path and spawn passes the
parent's sys.path on), so it must stay importable without pytest. Workers return plain Python data.
"""

from __future__ import annotations

import copy
import functools
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from pion_rl.optim import Muon, Pion
from pion_rl.optim.sharding import local_tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from exchange_bytes import count_sent_bytes  # noqa: E402  (benchmarks/exchange_bytes.py counts the same way)

LR = 0.02
STEPS = 3
HEAD_DIM = 4  # q_proj's 12 rows -> 3 row blocks, which straddle the shard boundaries at world size 4

#: name -> (optimizer, options). Row blocks (head_dim) everywhere but one case, which updates q_proj whole.
CASES = {
    "pion/lie_lie/both": ("pion", dict(head_dim=HEAD_DIM)),
    "pion/lie_lie/alternate+v": ("pion", dict(head_dim=HEAD_DIM, update_side="alternate", second_moment=True)),
    "pion/lie_lie/left": ("pion", dict(head_dim=HEAD_DIM, update_side="left")),
    "pion/lie_lie/right/cayley": ("pion", dict(head_dim=HEAD_DIM, update_side="right", exp_map="cayley")),
    "pion/lie_lie/both/whole": ("pion", dict()),
    "pion/transported/both+v": ("pion", dict(head_dim=HEAD_DIM, variant="transported_ambient_ambient",
                                             second_moment=True)),
    "pion/transported/alternate": ("pion", dict(head_dim=HEAD_DIM, variant="transported_ambient_ambient",
                                                update_side="alternate")),
    "pion/msign/alternate": ("pion", dict(head_dim=HEAD_DIM, variant="msign", update_side="alternate")),
    "muon": ("muon", dict()),
}


class TinyNet(nn.Module):
    """Layers picked for the shard layouts they produce under Shard(0) at world sizes 2 and 4."""

    def __init__(self):
        super().__init__()
        self.frozen = nn.Linear(6, 16, bias=False).requires_grad_(False)
        self.q_proj = nn.Linear(16, 12)  # row blocks; its bias goes to AdamW
        self.norm = nn.LayerNorm(12)  # AdamW
        self.mid = nn.Linear(12, 7, bias=False)  # 7 rows: shards 4+3 and 2+2+2+1
        self.narrow = nn.Linear(7, 3, bias=False)  # 3 rows: an empty shard at world size 4
        self.out = nn.Linear(3, 1, bias=False)  # 1 row: empty shards at every world size

    def forward(self, x):
        x = self.norm(torch.tanh(self.q_proj(self.frozen(x))))
        return self.out(torch.tanh(self.narrow(torch.tanh(self.mid(x)))))


# ---------------------------------------------------------------------- training
def _build(layout: str, case: str, with_reference: bool = True):
    """Identically initialised model (in ``layout``) and optimizer, and a one-process reference copy."""
    torch.manual_seed(0)
    model = TinyNet()
    reference = copy.deepcopy(model) if with_reference else None
    if layout in ("fsdp", "hsdp"):
        fully_shard(model, mesh=_mesh(layout))
    elif layout == "ddp":
        model = DistributedDataParallel(model)
    kind, options = CASES[case]
    make = Pion if kind == "pion" else Muon
    group = dist.group.WORLD if layout == "ddp" else None
    optimizer = make(model.named_parameters(), lr=LR, process_group=group, **options)
    ref_optimizer = make(reference.named_parameters(), lr=LR, **options) if with_reference else None
    return model, optimizer, reference, ref_optimizer


@functools.cache
def _mesh(layout: str):
    world = dist.get_world_size()
    if layout == "fsdp":
        return init_device_mesh("cpu", (world,))
    if layout == "hsdp":
        return init_device_mesh("cpu", (2, world // 2), mesh_dim_names=("replicate", "shard"))
    return None


def _backward(model: nn.Module, step: int) -> None:
    """Each rank its own batch; FSDP2 / DDP average the gradients."""
    generator = torch.Generator().manual_seed(1000 * step + dist.get_rank())
    x = torch.randn(5, 6, generator=generator)
    target = torch.randn(5, 1, generator=generator)
    ((model(x) - target) ** 2).mean().backward()


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t.detach()


def _train_step(model, optimizer, step, reference=None, ref_optimizer=None) -> None:
    _backward(model, step)
    if reference is not None:  # the reference sees exactly the gradients the sharded run reduced
        for p, ref in zip(model.parameters(), reference.parameters()):
            ref.grad = None if p.grad is None else _full(p.grad).clone()
        ref_optimizer.step()
        ref_optimizer.zero_grad()
    optimizer.step()
    optimizer.zero_grad()


def _names(model: nn.Module) -> dict[torch.Tensor, str]:
    return {p: name.removeprefix("module.") for name, p in model.named_parameters()}


def _matrix_state_bytes(model: nn.Module, optimizer) -> dict[str, int]:
    """Bytes of state per matrix this rank holds (matrices without state on this rank are absent)."""
    names = _names(model)
    return {
        names[p]: sum(t.numel() * t.element_size() for t in optimizer.state[p].values() if torch.is_tensor(t))
        for g in optimizer.param_groups if g["algorithm"] != "adamw" for p in g["params"] if optimizer.state[p]
    }


# ---------------------------------------------------------------------- workers
def run_suite(compare: dict[str, list[str]], resume: tuple[str, list[str]], nonfinite: tuple[str, str],
              traffic: tuple[str, list[str]], save_dir: str) -> dict:
    """Everything one launch checks (process start-up dominates the cost of a launch).

    Args:
        compare: layout -> cases for :func:`compare_with_single_device`.
        resume: (layout, cases) for :func:`resume_matches_uninterrupted`, files under ``save_dir``.
        nonfinite: (layout, case) for :func:`nonfinite_grad_on_one_rank`.
        traffic: (layout, cases) for :func:`step_traffic`.
    Also runs :func:`bad_inputs`.
    """
    return dict(
        compare={layout: compare_with_single_device(layout, cases) for layout, cases in compare.items()},
        resume=resume_matches_uninterrupted(*resume, save_dir),
        nonfinite=nonfinite_grad_on_one_rank(*nonfinite),
        traffic=step_traffic(*traffic),
        bad_inputs=bad_inputs(),
    )


def compare_with_single_device(layout: str, cases: list[str]) -> dict:
    """Per case: max |sharded - single-device| over all weights after STEPS steps, how far the weights moved,
    this rank's matrix state bytes (and the reference's), and whether AdamW state has the local shard shapes."""
    out = {}
    for case in cases:
        model, optimizer, reference, ref_optimizer = _build(layout, case)
        initial = [_full(p).clone() for p in model.parameters()]
        for step in range(STEPS):
            _train_step(model, optimizer, step, reference, ref_optimizer)
        final = [_full(p) for p in model.parameters()]
        out[case] = dict(
            max_diff=max((a - b).abs().max().item() for a, b in zip(final, reference.parameters())),
            bitwise=all(torch.equal(a, b) for a, b in zip(final, reference.parameters())),
            moved={name: (a - b).abs().max().item()
                   for name, a, b in zip(_names(reference).values(), final, initial)},
            state_bytes=_matrix_state_bytes(model, optimizer),
            reference_state_bytes=_matrix_state_bytes(reference, ref_optimizer),
            adamw_state_is_local=all(
                optimizer.state[p]["exp_avg"].shape == local_tensor(p).shape
                for g in optimizer.param_groups if g["algorithm"] == "adamw" for p in g["params"]
            ),
        )
    return out


def resume_matches_uninterrupted(layout: str, cases: list[str], save_dir: str) -> dict:
    """Per case: run STEPS steps, save every rank's optimizer state (as verl does), run STEPS more; then a
    rebuilt model + optimizer loads the weights and state and runs the same STEPS. Are the results equal?
    Also: loading another rank's file must fail, naming the rank."""
    rank, world = dist.get_rank(), dist.get_world_size()
    out = {}
    for case in cases:
        model, optimizer, _, _ = _build(layout, case, with_reference=False)
        for step in range(STEPS):
            _train_step(model, optimizer, step)
        path = os.path.join(save_dir, f"{case.replace('/', '_')}_optim_world_size_{world}_rank_{{}}.pt")
        torch.save(optimizer.state_dict(), path.format(rank))
        saved_weights = [local_tensor(p).detach().clone() for p in model.parameters()]
        for step in range(STEPS, 2 * STEPS):
            _train_step(model, optimizer, step)

        resumed, resumed_optimizer, _, _ = _build(layout, case, with_reference=False)
        with torch.no_grad():
            for p, saved in zip(resumed.parameters(), saved_weights):
                local_tensor(p).copy_(saved)
        dist.barrier()  # every rank's file is written
        resumed_optimizer.load_state_dict(torch.load(path.format(rank), weights_only=False))
        for step in range(STEPS, 2 * STEPS):
            _train_step(resumed, resumed_optimizer, step)

        try:
            _build(layout, case, with_reference=False)[1].load_state_dict(
                torch.load(path.format((rank + 1) % world), weights_only=False))
            wrong_rank_error = None
        except ValueError as error:
            wrong_rank_error = str(error)
        out[case] = dict(
            bitwise=all(torch.equal(local_tensor(a), local_tensor(b))
                        for a, b in zip(model.parameters(), resumed.parameters())),
            state_files=path,
            wrong_rank_error=wrong_rank_error,
        )
    return out


def nonfinite_grad_on_one_rank(layout: str, case: str) -> dict:
    """One good step, then a NaN in the last rank's shard of ``mid.weight``'s gradient: does every rank raise
    FloatingPointError, leaving weights and optimizer state as they were?"""
    model, optimizer, _, _ = _build(layout, case, with_reference=False)
    _train_step(model, optimizer, 0)
    _backward(model, 1)
    if dist.get_rank() == dist.get_world_size() - 1:
        local_tensor(model.mid.weight.grad)[0, 0] = float("nan")
    weights = [local_tensor(p).detach().clone() for p in model.parameters()]
    state = copy.deepcopy(optimizer.state_dict()["state"])
    try:
        optimizer.step()
        error = None
    except FloatingPointError as e:
        error = str(e)
    after = optimizer.state_dict()["state"]
    return dict(
        error=error,
        weights_unchanged=all(torch.equal(w, local_tensor(p)) for w, p in zip(weights, model.parameters())),
        state_unchanged=state.keys() == after.keys() and all(
            state[i].keys() == after[i].keys() and all(torch.equal(state[i][k], after[i][k]) for k in state[i])
            for i in state
        ),
    )


def step_traffic(layout: str, cases: list[str]) -> dict:
    """Per case: the bytes this rank sent, per collective, during one ``optimizer.step()``, and the
    ``(rows, cols, owner)`` of every matrix that step updated."""
    out = {}
    for case in cases:
        model, optimizer, _, _ = _build(layout, case, with_reference=False)
        _backward(model, 0)
        owners = optimizer._ensure_owners()
        matrices = [(*p.shape, owners[p]) for g in optimizer.param_groups if g["algorithm"] != "adamw"
                    for p in g["params"] if p.grad is not None]
        with count_sent_bytes() as counts:
            optimizer.step()
        out[case] = dict(sent=dict(counts), matrices=matrices)
    return out


def bad_inputs() -> dict[str, str | None]:
    """The ValueError message (None if none was raised) for each layout the optimizers must refuse."""
    from torch.distributed.tensor import Shard, distribute_tensor

    model = TinyNet()
    fully_shard(model, mesh=_mesh("fsdp"))
    column_sharded = distribute_tensor(torch.randn(4, 6), _mesh("fsdp"), [Shard(1)])
    attempts = {
        "process_group with DTensors": lambda: Pion(model.named_parameters(), process_group=dist.group.WORLD),
        "DTensors mixed with plain tensors": lambda: Pion([*model.named_parameters(), ("extra", torch.zeros(3, 3, requires_grad=True))]),
        "column-sharded DTensor": lambda: Muon([column_sharded]),
    }
    messages = {}
    for what, attempt in attempts.items():
        try:
            attempt()
            messages[what] = None
        except ValueError as error:
            messages[what] = str(error)
    return messages
