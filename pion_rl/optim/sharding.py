"""Where whole matrices are updated: the seam between the optimizers and the way weights are laid out.

Pion and Muon need each matrix whole. An *exchange* hands the optimizer every matrix it owns as a full
tensor in the compute dtype and carries the result back to wherever the parameter lives, in one of two ways:

- :meth:`~ShardedExchange.update_owned`: the owner gets ``W`` and ``G`` whole, updates ``W`` in place, and the
  new ``W`` goes back (Pion: its update depends on ``W``).
- :meth:`~ShardedExchange.step_owned`: the owner gets ``G`` whole and computes an update direction; the
  direction goes back and every rank applies it to its own rows (Muon: its direction does not depend on ``W``
  and is already bf16, so this moves about half the bytes).

The optimizer never sees the layout.

- :class:`LocalExchange`: one process holds and owns everything.
- :class:`ShardedExchange`: ranks of a process group hold row ranges of each matrix (:class:`RowLayout`):
  FSDP2 ``Shard(0)`` DTensors on a 1-D mesh, ``(Replicate(), Shard(0))`` on a 2-D HSDP mesh, or whole
  replicated tensors (DDP). Each matrix has one owner rank over the *whole* group (replicas split the work,
  they do not repeat it), so matrix state is sharded over every rank.

:func:`make_exchange` picks one from the parameters and an optional process group.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.tensor import DTensor, Replicate, Shard

#: ``update(index, weight, grad)``: update ``weight`` (full matrix, compute dtype) in place.
UpdateFn = Callable[[int, Tensor, Tensor], None]
#: ``visit(index, weight)``: read ``weight`` (full matrix, compute dtype); changes to it are not written back.
VisitFn = Callable[[int, Tensor], None]
#: ``direction(index, grad)``: the update direction (full matrix) from ``grad`` (full matrix, compute dtype).
DirectionFn = Callable[[int, Tensor], Tensor]
#: ``apply(index, weight_rows, direction_rows)``: apply the direction to some rows of the weight (compute dtype)
#: in place; elementwise, so it gives the same bits on any rows.
ApplyFn = Callable[[int, Tensor, Tensor], None]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Update math runs in fp32, or in fp64 for fp64 parameters."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@contextmanager
def in_compute_dtype(t: Tensor) -> Iterator[Tensor]:
    """``t`` in its compute dtype, to be updated in place: ``t`` itself, or an fp32 copy of a bf16/fp16 ``t``
    that is rounded back into ``t`` on a normal exit (after an exception ``t`` is left as it was)."""
    dtype = compute_dtype(t.dtype)
    if t.dtype == dtype:
        yield t
        return
    work = t.to(dtype)
    yield work
    t.copy_(work)


def local_tensor(t: Tensor) -> Tensor:
    """This process's part of ``t``: the local shard of a DTensor, else ``t`` itself."""
    to_local = getattr(t, "to_local", None)
    return to_local() if to_local is not None else t


def assign_owners(costs: Sequence[float], world_size: int) -> list[int]:
    """Owner rank of each matrix: largest cost first, each onto the least-loaded rank (fewest matrices, then
    lowest rank, on ties). Deterministic, so every rank computes the same answer without communicating.

    Largest-first keeps the heaviest rank within one matrix's cost of the lightest; counting matrices on ties
    spreads free matrices (and their work) evenly.

    Args:
        costs: per matrix, the elements of optimizer state it will hold.
        world_size: number of ranks to spread over.
    """
    loads = [0.0] * world_size
    counts = [0] * world_size
    owners = [0] * len(costs)
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        rank = min(range(world_size), key=lambda r: (loads[r], counts[r], r))
        owners[index] = rank
        loads[rank] += costs[index]
        counts[rank] += 1
    return owners


class LocalExchange:
    """Every matrix is whole on this process and owned by it: no communication."""

    rank = 0
    world_size = 1
    row_copies = 1  # how many ranks store each row

    def assign_owners(self, costs: Sequence[float]) -> list[int]:
        """Owner rank of each matrix, given its cost (state elements); identical on every rank."""
        return assign_owners(costs, self.world_size)

    def any_rank(self, flags: Tensor) -> Tensor:
        """Elementwise OR of a bool tensor over ranks."""
        return flags

    def update_owned(self, params: Sequence[Tensor], owners: Sequence[int], update: UpdateFn) -> None:
        """Run ``update`` on every matrix this rank owns and write the results back into ``params``."""
        for index, p in enumerate(params):
            with in_compute_dtype(p.detach()) as weight:
                update(index, weight, p.grad.to(weight.dtype))

    def step_owned(self, params: Sequence[Tensor], owners: Sequence[int], direction: DirectionFn, apply: ApplyFn,
                   direction_dtype: torch.dtype) -> None:
        """Compute every matrix's direction from its gradient and apply it to the matrix (see
        :meth:`ShardedExchange.step_owned`)."""
        for index, p in enumerate(params):
            with in_compute_dtype(p.detach()) as weight:
                apply(index, weight, direction(index, p.grad.to(weight.dtype)).to(direction_dtype))

    def visit_owned(self, params: Sequence[Tensor], owners: Sequence[int], visit: VisitFn) -> None:
        """Run ``visit`` on every matrix this rank owns, whole, in its compute dtype (read-only)."""
        for index, p in enumerate(params):
            visit(index, p.detach().to(compute_dtype(p.dtype)))

    def local_rows(self, num_rows: int) -> tuple[int, int]:
        """``[start, stop)`` rows of a ``num_rows``-row parameter stored on this rank: all of them."""
        return 0, num_rows

    def sum_over_ranks(self, values: Tensor) -> Tensor:
        """Elementwise sum of a tensor over ranks."""
        return values

    def max_over_ranks(self, values: Tensor) -> Tensor:
        """Elementwise max of a tensor over ranks."""
        return values


@dataclass(frozen=True)
class RowLayout:
    """Which rows of a matrix each rank of a process group stores.

    Rows are chunked as ``torch.chunk`` (and FSDP2) does: ``ceil(rows / num_shards)`` per shard coordinate,
    the last chunks short or empty. Ranks with equal ``replica`` ids together hold every row once.

    Attributes:
        shard: shard coordinate of each group rank, in ``range(num_shards)``.
        replica: replica id of each group rank.
        num_shards: 1 for whole replicated tensors.
    """

    shard: tuple[int, ...]
    replica: tuple[int, ...]
    num_shards: int

    @classmethod
    def replicated(cls, world_size: int) -> RowLayout:
        return cls(shard=(0,) * world_size, replica=tuple(range(world_size)), num_shards=1)

    @property
    def world_size(self) -> int:
        return len(self.shard)

    def rows(self, rank: int, num_rows: int) -> tuple[int, int]:
        """``[start, stop)`` rows of a ``num_rows``-row matrix stored on ``rank``."""
        chunk = math.ceil(num_rows / self.num_shards)
        start = min(self.shard[rank] * chunk, num_rows)
        return start, min(start + chunk, num_rows)

    def sources(self, owner: int) -> list[int]:
        """The ranks whose rows together make the whole matrix for ``owner``: those of its replica."""
        return [k for k in range(self.world_size) if self.replica[k] == self.replica[owner]]


class ShardedExchange:
    """Exchange over a process group whose ranks store row ranges of every matrix (see :class:`RowLayout`).

    Per round of matrices (at most one per owner, so every rank has work in each round): one
    ``all_to_all_single`` gathers what the owners need whole (each source sends its rows), the owners compute,
    and one more sends every rank its rows of the result. Uneven splits carry short and empty shards without
    padding. The next round's gather is in flight while this round computes.

    Args:
        group: the process group (None: the default group).
        layout: rows held by each rank of ``group``.
    """

    def __init__(self, group: dist.ProcessGroup | None, layout: RowLayout):
        if layout.world_size != dist.get_world_size(group):
            raise ValueError(f"layout covers {layout.world_size} ranks, the process group {dist.get_world_size(group)}")
        self.group = group
        self.layout = layout
        self.rank = dist.get_rank(group)
        self.world_size = layout.world_size

    def assign_owners(self, costs: Sequence[float]) -> list[int]:
        """Owner rank of each matrix, given its cost (state elements); identical on every rank."""
        return assign_owners(costs, self.world_size)

    def any_rank(self, flags: Tensor) -> Tensor:
        """Elementwise OR of a bool tensor over ranks."""
        return self.max_over_ranks(flags.to(torch.int32)).bool()

    def update_owned(self, params: Sequence[Tensor], owners: Sequence[int], update: UpdateFn) -> None:
        """Run ``update`` on every matrix this rank owns, gathered whole (W and G, compute dtype), and write the
        new W back into every rank's rows (compute dtype)."""

        def compute(index: int, weight: Tensor, grad: Tensor) -> Tensor:
            update(index, weight, grad)
            return weight

        def write(index: int, rows: Tensor) -> None:
            local_tensor(params[index]).copy_(rows)

        self._owned_rounds(params, owners, compute, write, with_weight=True, result_dtype=None)

    def step_owned(self, params: Sequence[Tensor], owners: Sequence[int], direction: DirectionFn, apply: ApplyFn,
                   direction_dtype: torch.dtype) -> None:
        """Run ``direction`` on the gradient of every matrix this rank owns, gathered whole (G only, compute
        dtype), send every rank its rows of the direction in ``direction_dtype``, and let every rank ``apply``
        them to its own rows of W. The result equals applying the whole direction to the whole W (``apply`` is
        elementwise); a direction exact in ``direction_dtype`` loses nothing on the way."""

        def compute(index: int, weight: None, grad: Tensor) -> Tensor:
            return direction(index, grad).to(direction_dtype)

        def write(index: int, rows: Tensor) -> None:
            with in_compute_dtype(local_tensor(params[index]).detach()) as weight:
                apply(index, weight, rows)

        self._owned_rounds(params, owners, compute, write, with_weight=False, result_dtype=direction_dtype)

    def _owned_rounds(self, params, owners, compute: Callable[[int, Tensor | None, Tensor], Tensor],
                      write: Callable[[int, Tensor], None], with_weight: bool,
                      result_dtype: torch.dtype | None) -> None:
        """Round by round: gather G (and W with ``with_weight``) on the owners, ``compute`` each owned matrix's
        full result, and scatter its rows, each rank passing its own rows to ``write``. The result travels in
        ``result_dtype`` (None: the compute dtype)."""
        rounds = self._rounds(params, owners)
        gather = self._start_gather(params, owners, rounds[0], with_weight=with_weight) if rounds else None
        scatter = None
        for r in range(len(rounds)):
            full = gather.finish()
            if r + 1 < len(rounds):
                gather = self._start_gather(params, owners, rounds[r + 1], with_weight=with_weight)
            results = {index: compute(index, weight, grad) for index, (weight, grad) in full.items()}
            if scatter is not None:
                scatter.finish()
            scatter = self._start_scatter(params, owners, rounds[r], results, write, result_dtype)
        if scatter is not None:
            scatter.finish()

    def visit_owned(self, params: Sequence[Tensor], owners: Sequence[int], visit: VisitFn) -> None:
        """Run ``visit`` on every matrix this rank owns, gathered whole (W only, no gradient); nothing is sent back."""
        rounds = self._rounds(params, owners)
        gather = self._start_gather(params, owners, rounds[0], with_grad=False) if rounds else None
        for r in range(len(rounds)):
            full = gather.finish()
            if r + 1 < len(rounds):
                gather = self._start_gather(params, owners, rounds[r + 1], with_grad=False)
            for index, (weight, _) in full.items():
                visit(index, weight)

    def local_rows(self, num_rows: int) -> tuple[int, int]:
        """``[start, stop)`` rows of a ``num_rows``-row parameter stored on this rank."""
        return self.layout.rows(self.rank, num_rows)

    @property
    def row_copies(self) -> int:
        """How many ranks store each row: 1 under FSDP2, the number of replicas under HSDP or DDP."""
        return len(set(self.layout.replica))

    def sum_over_ranks(self, values: Tensor) -> Tensor:
        """Elementwise sum of a tensor over ranks: one all-reduce."""
        out = values.clone()
        dist.all_reduce(out, group=self.group)
        return out

    def max_over_ranks(self, values: Tensor) -> Tensor:
        """Elementwise max of a tensor over ranks: one all-reduce."""
        out = values.clone()
        dist.all_reduce(out, op=dist.ReduceOp.MAX, group=self.group)
        return out

    # ------------------------------------------------------------------ planning
    def _rounds(self, params: Sequence[Tensor], owners: Sequence[int]) -> list[list[int]]:
        """Matrix indices per round: round j holds the j-th matrix of every owner; one compute dtype per round."""
        queues: dict[tuple[torch.dtype, int], list[int]] = {}
        for index, (p, owner) in enumerate(zip(params, owners)):
            queues.setdefault((compute_dtype(p.dtype), owner), []).append(index)
        rounds = []
        for dtype in dict.fromkeys(dtype for dtype, _ in queues):
            per_owner = [queues.get((dtype, owner), []) for owner in range(self.world_size)]
            for j in range(max(map(len, per_owner))):
                rounds.append(sorted(q[j] for q in per_owner if j < len(q)))
        return rounds

    # ------------------------------------------------------------------ communication
    def _start_gather(self, params, owners, batch: list[int], with_weight: bool = True,
                      with_grad: bool = True) -> _Transfer:
        """Sources send their rows of W and G (either may be left out; compute dtype) to each owner in
        ``batch``; the result maps each owned index to ``(weight or None, grad or None)``."""
        me, layout = self.rank, self.layout
        dtype = compute_dtype(params[batch[0]].dtype)
        sends: list[list[Tensor]] = [[] for _ in range(self.world_size)]
        recv_numel = [0] * self.world_size
        for index in batch:
            p, owner = params[index], owners[index]
            parts = [t for t, wanted in ((p, with_weight), (p.grad, with_grad)) if wanted]
            rows, cols = p.shape
            if owner == me:
                for k in layout.sources(me):
                    if k != me:
                        start, stop = layout.rows(k, rows)
                        recv_numel[k] += len(parts) * (stop - start) * cols
            elif me in layout.sources(owner):
                sends[owner] += [local_tensor(t) for t in parts]

        def assemble(received: list[_Received]) -> dict[int, tuple[Tensor | None, Tensor | None]]:
            full = {}
            for index in batch:
                p = params[index]
                if owners[index] != me:
                    continue
                rows, cols = p.shape
                parts = [(t, torch.empty(rows, cols, dtype=dtype, device=p.device))
                         for t, wanted in ((p, with_weight), (p.grad, with_grad)) if wanted]
                for k in layout.sources(me):
                    start, stop = layout.rows(k, rows)
                    for source, whole in parts:  # in the order the sources sent them
                        whole[start:stop] = local_tensor(source) if k == me else received[k].take((stop - start, cols))
                wholes = iter(whole for _, whole in parts)
                full[index] = (next(wholes) if with_weight else None, next(wholes) if with_grad else None)
            return full

        return _Transfer(sends, recv_numel, dtype, params[batch[0]].device, self.group, then=assemble)

    def _start_scatter(self, params, owners, batch: list[int], results: dict[int, Tensor],
                       write: Callable[[int, Tensor], None], dtype: torch.dtype | None) -> _Transfer:
        """Owners send every other rank its rows of each full result (in ``dtype``; None: the compute dtype);
        every rank, owner included, passes its own rows to ``write``."""
        me, layout = self.rank, self.layout
        dtype = dtype or compute_dtype(params[batch[0]].dtype)
        sends: list[list[Tensor]] = [[] for _ in range(self.world_size)]
        recv_numel = [0] * self.world_size
        for index in batch:
            p, owner = params[index], owners[index]
            rows, cols = p.shape
            start, stop = layout.rows(me, rows)
            if owner == me:
                result = results[index]
                for k in range(self.world_size):
                    if k == me:
                        continue
                    k_start, k_stop = layout.rows(k, rows)
                    sends[k].append(result[k_start:k_stop])
                write(index, result[start:stop])
            else:
                recv_numel[owner] += (stop - start) * cols

        def write_received(received: list[_Received]) -> None:
            for index in batch:
                p, owner = params[index], owners[index]
                if owner != me:
                    start, stop = layout.rows(me, p.shape[0])
                    write(index, received[owner].take((stop - start, p.shape[1])))

        return _Transfer(sends, recv_numel, dtype, params[batch[0]].device, self.group, then=write_received)


class _Received:
    """One source's received elements, consumed front to back in the order they were sent."""

    def __init__(self, flat: Tensor):
        self.flat = flat
        self.offset = 0

    def take(self, shape: tuple[int, int]) -> Tensor:
        numel = shape[0] * shape[1]
        out = self.flat[self.offset:self.offset + numel].view(shape)
        self.offset += numel
        return out


class _Transfer:
    """One asynchronous ``all_to_all_single`` with uneven splits, started on construction.

    Args:
        sends: per destination rank, the tensors to send it (flattened and cast to ``dtype``, in order).
        recv_numel: per source rank, how many elements arrive from it.
        then: called by :meth:`finish` with the received elements, per source rank.
    """

    def __init__(self, sends: list[list[Tensor]], recv_numel: list[int], dtype: torch.dtype,
                 device: torch.device, group: dist.ProcessGroup | None, then: Callable[[list[_Received]], object]):
        send_numel = [sum(t.numel() for t in parts) for parts in sends]
        parts = [t.reshape(-1).to(dtype) for per_rank in sends for t in per_rank]
        send = torch.cat(parts) if parts else torch.empty(0, dtype=dtype, device=device)
        self.output = torch.empty(sum(recv_numel), dtype=dtype, device=device)
        self.recv_numel = recv_numel
        self.then = then
        self.work = dist.all_to_all_single(self.output, send, recv_numel, send_numel, group=group, async_op=True)

    def finish(self):
        """Wait for the transfer, then hand what arrived to ``then``; returns its result."""
        self.work.wait()
        return self.then([_Received(part) for part in self.output.split(self.recv_numel)])


# ---------------------------------------------------------------------- choosing an exchange
def _dtensor_exchange(params: Sequence[DTensor]) -> ShardedExchange:
    mesh, placements = params[0].device_mesh, tuple(params[0].placements)
    for p in params:
        if p.device_mesh != mesh or tuple(p.placements) != placements:
            raise ValueError(
                f"all DTensor parameters must share one mesh and placements; found {placements} on {mesh} and "
                f"{tuple(p.placements)} on {p.device_mesh}. Wrap the whole model with one fully_shard mesh."
            )
    shard_dims = [d for d, pl in enumerate(placements) if type(pl) is Shard and pl.dim == 0]
    if len(shard_dims) > 1 or any(type(pl) is not Replicate for d, pl in enumerate(placements) if d not in shard_dims):
        raise ValueError(
            f"unsupported DTensor placements {placements}: Pion/Muon support FSDP2 layouts, i.e. Shard(0) on at "
            f"most one mesh dim and Replicate() on the others (e.g. (Shard(0),) or (Replicate(), Shard(0)))"
        )
    if mesh.ndim == 1:
        group = mesh.get_group()
    elif mesh.size() == dist.get_world_size():
        group = None  # a multi-dim mesh over every rank: its flat group is the default group
    else:
        raise ValueError(
            f"a {mesh.ndim}-D mesh over {mesh.size()} of {dist.get_world_size()} ranks is not supported: a "
            f"multi-dim mesh must span all ranks (or use a 1-D mesh)"
        )
    coords = []
    for k in range(dist.get_world_size(group)):
        global_rank = dist.get_global_rank(group, k) if group is not None else k
        coords.append(tuple(int(c) for c in (mesh.mesh == global_rank).nonzero()[0]))
    shard_dim = shard_dims[0] if shard_dims else None
    replica_coords = [tuple(c for d, c in enumerate(coord) if d != shard_dim) for coord in coords]
    replica_ids = {coord: i for i, coord in enumerate(dict.fromkeys(replica_coords))}
    layout = RowLayout(
        shard=tuple(coord[shard_dim] if shard_dim is not None else 0 for coord in coords),
        replica=tuple(replica_ids[c] for c in replica_coords),
        num_shards=mesh.size(shard_dim) if shard_dim is not None else 1,
    )
    exchange = ShardedExchange(group, layout)
    # Decided on every rank together: a rank alone raising here would leave the others hanging later.
    mismatch = []
    for p in params:
        if p.ndim:
            start, stop = layout.rows(exchange.rank, p.shape[0])
            mismatch.append(local_tensor(p).shape[0] != stop - start)
    if exchange.any_rank(torch.tensor(mismatch, device=local_tensor(params[0]).device)).any():
        raise ValueError(
            "a DTensor parameter's local rows differ from FSDP2's Shard(0) layout (ceil(rows / shards) rows per "
            "shard, in mesh order) on some rank; Pion/Muon support only that layout"
        )
    return exchange


def make_exchange(params: Sequence[Tensor], process_group: dist.ProcessGroup | None = None):
    """The exchange for ``params``: DTensors -> sharded over their mesh; plain tensors with ``process_group``
    -> replicated over it (DDP: every rank holds every weight and the averaged gradient); else local.
    """
    dtensors = [isinstance(p, DTensor) for p in params]
    if any(dtensors):
        if not all(dtensors):
            raise ValueError("parameters mix DTensors and plain tensors; shard the whole model with fully_shard")
        if process_group is not None:
            raise ValueError("DTensor parameters carry their own mesh; do not pass process_group with them")
        return _dtensor_exchange(params)
    if process_group is not None:
        return ShardedExchange(process_group, RowLayout.replicated(dist.get_world_size(process_group)))
    return LocalExchange()
