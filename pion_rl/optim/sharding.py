"""Where whole matrices are updated: the seam between the optimizers and the way weights are laid out.

Pion and Muon need each matrix whole. An *exchange* hands the optimizer every matrix it owns as a full
tensor in the compute dtype, lets it update that tensor in place, and writes the result back to wherever the
parameter lives. The optimizer never sees the layout. :class:`LocalExchange` is the single-process layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

#: ``update(index, weight, grad)``: update ``weight`` (full matrix, compute dtype) in place.
UpdateFn = Callable[[int, Tensor, Tensor], None]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Update math runs in fp32, or in fp64 for fp64 parameters."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def local_tensor(t: Tensor) -> Tensor:
    """This process's part of ``t``: the local shard of a DTensor, else ``t`` itself."""
    to_local = getattr(t, "to_local", None)
    return to_local() if to_local is not None else t


class LocalExchange:
    """Every matrix is whole on this process and owned by it: no communication."""

    rank = 0
    world_size = 1

    def assign_owners(self, costs: Sequence[float]) -> list[int]:
        """Owner rank of each matrix, given its cost (state bytes); identical on every rank."""
        return [0] * len(costs)

    def any_rank(self, flags: Tensor) -> Tensor:
        """Elementwise OR of a bool tensor over ranks."""
        return flags

    def update_owned(self, params: Sequence[Tensor], owners: Sequence[int], update: UpdateFn) -> None:
        """Run ``update`` on every matrix this rank owns and write the results back into ``params``."""
        for index, p in enumerate(params):
            dtype = compute_dtype(p.dtype)
            weight = p.detach()
            if weight.dtype == dtype:
                update(index, weight, p.grad.to(dtype))
            else:  # e.g. bf16: compute in fp32, write back rounded
                full = weight.to(dtype)
                update(index, full, p.grad.to(dtype))
                weight.copy_(full)
