"""What Pion and Muon share: routing of param groups, the AdamW fallback, finite-gradient checks, state.

Subclasses supply the matrix algorithm (``_matrix_update``) and its state size; the exchange (see
:mod:`pion_rl.optim.sharding`), chosen from the parameters' layout, decides where each matrix is updated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from .adamw_math import adamw_step
from .param_groups import param_groups
from .sharding import in_compute_dtype, local_tensor, make_exchange

#: Group keys every matrix optimizer understands besides its own defaults.
_BOOKKEEPING_KEYS = {"params", "param_names", "algorithm", "initial_lr"}


def _is_named(params: list) -> bool:
    return bool(params) and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in params)


class MatrixOptimizer(torch.optim.Optimizer):
    """Base class: groups with ``algorithm`` equal to :attr:`algorithm` hold 2-D matrices; ``"adamw"`` groups
    hold anything and are updated by decoupled AdamW with bias correction (options ``adamw_betas``,
    ``adamw_eps``, ``adamw_weight_decay``).

    ``params`` may be tensors, group dicts, or ``(name, tensor)`` pairs such as ``model.named_parameters()``;
    named parameters are routed by :func:`pion_rl.optim.param_groups` (``head_dim`` is passed on).

    Distributed layouts: FSDP2 DTensor parameters are handled from their mesh; plain tensors replicated over a
    process group (DDP) need ``process_group``. Each matrix then has one owner rank, the only one holding its
    state; ``state_dict()`` is per rank and records the layout, so loading it elsewhere is an error.
    """

    algorithm: str = ""

    def __init__(self, params, defaults: dict[str, Any], *, head_dim: int | None = None, process_group=None):
        params = list(params)
        if _is_named(params):
            params = param_groups(params, optimizer=self.algorithm, head_dim=head_dim)
        elif head_dim is not None:
            raise ValueError("head_dim needs named parameters (pass model.named_parameters())")
        self._owners: dict[Tensor, int] | None = None
        super().__init__(params, dict(defaults, algorithm=self.algorithm))
        self._exchange = make_exchange([p for g in self.param_groups for p in g["params"]], process_group)

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        unknown = set(param_group) - set(self.defaults) - _BOOKKEEPING_KEYS
        if unknown:
            raise ValueError(
                f"{type(self).__name__}: unknown param-group option(s) {sorted(unknown)}; "
                f"valid options are {sorted(self.defaults)}"
            )
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if group["algorithm"] not in (self.algorithm, "adamw"):
            raise ValueError(
                f"{type(self).__name__}: param group algorithm {group['algorithm']!r} must be "
                f"{self.algorithm!r} (2-D matrices) or 'adamw'"
            )
        if group["algorithm"] == self.algorithm:
            for i, p in enumerate(group["params"]):
                if p.ndim != 2:
                    raise ValueError(
                        f"{type(self).__name__}: {self._name(group, i)} is not 2-D, but a "
                        f"{self.algorithm!r} group takes only 2-D matrices; put it in an 'adamw' group "
                        f"(pion_rl.optim.param_groups does this by name)"
                    )
            self._check_matrix_group(group)
        self._owners = None  # ownership is recomputed over the new set of matrices

    def _check_matrix_group(self, group: dict[str, Any]) -> None:
        """Validate a matrix group's options (subclasses raise ValueError)."""

    @staticmethod
    def _name(group: dict[str, Any], index: int) -> str:
        p = group["params"][index]
        names = group.get("param_names")
        return f"parameter {names[index]!r} {tuple(p.shape)}" if names else f"the parameter of shape {tuple(p.shape)}"

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """torch's per-rank state dict plus ``"sharding"``: world size, rank and owner of every matrix."""
        return {**super().state_dict(), "sharding": self._sharding()}

    def _sharding(self) -> dict[str, Any]:
        owners = self._ensure_owners()
        return {"world_size": self._exchange.world_size, "rank": self._exchange.rank,
                "owners": [owners[p] for p in self._matrices()]}

    def _check_sharding(self, saved: dict[str, Any] | None) -> None:
        name, now = type(self).__name__, self._sharding()
        if saved is None:
            if now["world_size"] > 1:
                raise ValueError(f"{name}: this optimizer state has no 'sharding' record (it was not saved by "
                                 f"{name}.state_dict()), so it cannot be matched to this rank's matrix state")
            return
        if saved["world_size"] != now["world_size"]:
            raise ValueError(
                f"{name}: the optimizer state was saved at world size {saved['world_size']} but this run has world "
                f"size {now['world_size']}. Matrix state lives only on its owner rank, so resume at world size "
                f"{saved['world_size']} (or start the optimizer state afresh)."
            )
        if saved["rank"] != now["rank"]:
            raise ValueError(f"{name}: this is rank {saved['rank']}'s optimizer state, loaded on rank {now['rank']}; "
                             f"load each rank's own file")
        if saved["owners"] != now["owners"]:
            raise ValueError(f"{name}: the matrices (their number or sizes) differ from the saved run's, so their "
                             f"owner ranks differ; load the state into the same model and param groups")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._check_sharding(state_dict.get("sharding"))
        # torch casts loaded state to each parameter's dtype; our state is kept in the compute dtype (fp32
        # for bf16 params, full-matrix shapes on owner ranks), so it is restored as saved, only moved to the
        # parameter's device; otherwise a resume would not be bit-exact.
        saved_state = state_dict["state"]
        super().load_state_dict({**state_dict, "state": {}})
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = dict(zip(saved_ids, (p for g in self.param_groups for p in g["params"])))
        for index, entry in saved_state.items():
            p = params[index]
            self.state[p] = {
                k: v.detach().to(p.device, copy=True) if isinstance(v, Tensor) else v for k, v in entry.items()
            }

    def _matrix_state_numel(self, p: Tensor, group: dict[str, Any]) -> int:
        """Elements of matrix state ``p`` will need: the cost the exchange balances across ranks."""
        raise NotImplementedError

    def _matrix_update(self, p: Tensor, weight: Tensor, grad: Tensor, group: dict[str, Any]) -> None:
        """Update the full matrix ``weight`` (compute dtype) of ``p`` in place, using ``self.state[p]``."""
        raise NotImplementedError

    def _matrices(self) -> dict[Tensor, dict[str, Any]]:
        """Every matrix, in group order, with its group."""
        return {p: g for g in self.param_groups if g["algorithm"] == self.algorithm for p in g["params"]}

    def matrix_state_numel(self) -> list[int]:
        """Elements of state each matrix will hold, in group order: the costs owners are balanced by."""
        return [self._matrix_state_numel(p, g) for p, g in self._matrices().items()]

    def _ensure_owners(self) -> dict[Tensor, int]:
        # Assigned once over every matrix (with a gradient or not) so ownership, and with it where the state
        # lives, is the same at every step and on every rank.
        if self._owners is None:
            self._owners = dict(zip(self._matrices(), self._exchange.assign_owners(self.matrix_state_numel())))
        return self._owners

    # ------------------------------------------------------------------ step
    def _check_finite(self) -> None:
        """Raise FloatingPointError, before anything changes, if any gradient has a NaN or inf."""
        entries = [(g, i) for g in self.param_groups for i, p in enumerate(g["params"]) if p.grad is not None]
        if not entries:
            return
        bad = torch.stack([~torch.isfinite(local_tensor(g["params"][i].grad)).all() for g, i in entries])
        bad = self._exchange.any_rank(bad)
        if bad.any():
            group, index = entries[int(bad.nonzero()[0])]
            raise FloatingPointError(
                f"{type(self).__name__}: the gradient of {self._name(group, index)} has NaN or inf values; "
                f"no parameter was changed. Check the loss scale / learning rate, or skip this batch."
            )

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._check_finite()
        owners = self._ensure_owners()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if group["algorithm"] == "adamw":
                self._adamw_group(group, params)
            else:
                self._exchange.update_owned(
                    params, [owners[p] for p in params],
                    lambda i, weight, grad: self._matrix_update(params[i], weight, grad, group),
                )
        return loss

    def _adamw_group(self, group: dict[str, Any], params: Iterable[Tensor]) -> None:
        # AdamW is elementwise: each rank updates its own shard, no communication.
        for p in params:
            state = self.state[p]
            with in_compute_dtype(local_tensor(p)) as param:
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                state["step"] += 1
                adamw_step(
                    param, local_tensor(p.grad).to(param.dtype), state["exp_avg"], state["exp_avg_sq"],
                    int(state["step"].item()), lr=group["lr"], betas=group["adamw_betas"], eps=group["adamw_eps"],
                    weight_decay=group["adamw_weight_decay"],
                )
