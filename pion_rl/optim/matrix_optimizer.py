"""What Pion and Muon share: routing of param groups, the AdamW fallback, finite-gradient checks, state.

Subclasses supply the matrix algorithm (``_matrix_update``, or ``_matrix_group`` for another exchange) and its
state size; the exchange (see
:mod:`pion_rl.optim.sharding`), chosen from the parameters' layout, decides where each matrix is updated.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from .adamw_math import EPS_FORMS, adamw_step
from .options import Number
from .param_groups import param_groups
from .sharding import compute_dtype, in_compute_dtype, local_tensor, make_exchange
from .units import is_experts, unit_shape

#: Group keys every matrix optimizer understands besides its own defaults (``layout``, ``halves``: how a
#: matrix group's tensors split into units, :mod:`pion_rl.optim.units`).
_BOOKKEEPING_KEYS = {"params", "param_names", "algorithm", "initial_lr", "layout", "halves"}


#: The AdamW fallback's options (and the lr every group has).
ADAMW_OPTIONS = {
    "lr": Number(low=0.0),
    "adamw_betas": Number(low=0.0, high=1.0, high_open=True, length=2),
    "adamw_eps": Number(low=0.0, low_open=True),
    "adamw_weight_decay": Number(low=0.0),
}


def _is_named(params: list) -> bool:
    return bool(params) and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in params)


class MatrixOptimizer(torch.optim.Optimizer):
    """Base class: groups with ``algorithm`` equal to :attr:`algorithm` hold 2-D matrices; ``"adamw"`` groups
    hold anything and are updated by decoupled AdamW with bias correction (options ``adamw_betas``,
    ``adamw_eps``, ``adamw_weight_decay``, ``adamw_eps_form``: :data:`pion_rl.optim.adamw_math.EPS_FORMS`).

    ``params`` may be a module, tensors, group dicts, or ``(name, tensor)`` pairs such as
    ``model.named_parameters()``; a module and named parameters are routed by :func:`pion_rl.optim.param_groups`
    (``head_dim``, ``router`` and ``routes`` are passed on; a module's own config gives the head size when None).
    A matrix group's tensors split into units as its ``layout`` / ``halves`` keys say (:mod:`pion_rl.optim.units`);
    packed experts (``experts_*`` layouts) are updated where they lie, expert by expert, with no exchange.

    Distributed layouts: FSDP2 DTensor parameters are handled from their mesh; plain tensors replicated over a
    process group (DDP) need ``process_group``. Each matrix then has one owner rank, the only one holding its
    state; ``state_dict()`` is per rank and records the layout, so loading it elsewhere is an error.
    """

    algorithm: str = ""
    #: The matrix algorithm's numeric options and their valid values (checked for every group).
    numeric_options: dict[str, Number] = {}

    def __init__(self, params, defaults: dict[str, Any], *, head_dim: int | None = None, process_group=None,
                 router: str = "adamw", routes: dict[str, str] | None = None):
        routing = dict(head_dim=head_dim, router=router, routes=routes)
        if isinstance(params, torch.nn.Module):
            params = param_groups(params, optimizer=self.algorithm, **routing)
        else:
            params = list(params)
            if _is_named(params):
                params = param_groups(params, optimizer=self.algorithm, **routing)
            elif head_dim is not None or routes or router != "adamw":
                raise ValueError("head_dim needs named parameters, as do router and routes (pass the model or "
                                 "model.named_parameters())")
        self._owners: dict[Tensor, int] | None = None
        super().__init__(params, dict(defaults, algorithm=self.algorithm))
        self._exchange = make_exchange([p for g in self.param_groups for p in g["params"]], process_group)
        self._check_trainable()

    def _check_trainable(self) -> None:
        """Raise, on every rank together, if a matrix cannot be trained by this algorithm (subclasses)."""

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        unknown = set(param_group) - set(self.defaults) - _BOOKKEEPING_KEYS
        if unknown:
            raise ValueError(
                f"{type(self).__name__}: unknown param-group option(s) {sorted(unknown)}; "
                f"valid options are {sorted(self.defaults)}"
            )
        super().add_param_group(param_group)
        try:
            self._check_group(self.param_groups[-1])
        except Exception:
            self.param_groups.pop()  # a rejected group leaves the optimizer as it was
            raise
        self._owners = None  # ownership is recomputed over the new set of matrices

    def _check_group(self, group: dict[str, Any]) -> None:
        """Raise TypeError / ValueError if ``group`` (options filled in, ``params`` tensors) is not valid."""
        name = type(self).__name__
        for key, rule in {**ADAMW_OPTIONS, **self.numeric_options}.items():
            if key in group:
                rule.check(name, key, group[key])
        if group["adamw_eps_form"] not in EPS_FORMS:
            raise ValueError(f"{name}: unknown adamw_eps_form {group['adamw_eps_form']!r}; expected one of "
                             f"{EPS_FORMS}")
        if group["algorithm"] not in (self.algorithm, "adamw"):
            raise ValueError(
                f"{name}: param group algorithm {group['algorithm']!r} must be "
                f"{self.algorithm!r} (2-D matrices) or 'adamw'"
            )
        if group["algorithm"] == self.algorithm:
            for i, p in enumerate(group["params"]):
                layout = group.get("layout", "out_in")
                try:
                    unit_shape(tuple(p.shape), layout, group.get("halves"))
                except ValueError as error:
                    what = "is not 2-D" if not is_experts(layout) and p.ndim != 2 else f"does not fit its units ({error})"
                    raise ValueError(
                        f"{name}: {self._name(group, i)} {what}, but a {self.algorithm!r} group takes 2-D matrices "
                        f"(and 3-D packed experts with layout 'experts_out_in' or 'experts_in_out'); put it in an "
                        f"'adamw' group (pion_rl.optim.param_groups routes a model's tensors)"
                    ) from None
            self._check_matrix_group(group)

    def _check_matrix_group(self, group: dict[str, Any]) -> None:
        """Validate a matrix group's options (subclasses raise ValueError)."""

    @staticmethod
    def _in_place(group: dict[str, Any]) -> bool:
        """True for packed experts: FSDP2 shards them on the expert dim, so every rank holds whole experts and
        updates its own where they lie (state sized by its local experts); other matrices go to an owner."""
        return is_experts(group.get("layout", "out_in"))

    def _unit_shape(self, p: Tensor, group: dict[str, Any], row_block: int | None = None) -> tuple[int, int, int]:
        """``(B, r, c)`` units of the matrix ``p`` as this rank updates it (its local experts when in place)."""
        shape = tuple(local_tensor(p).shape) if self._in_place(group) else tuple(p.shape)
        return unit_shape(shape, group.get("layout", "out_in"), group.get("halves"), row_block)

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
        """Owners: a rank, or -1 for matrices every rank updates in place (its own experts)."""
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
        """torch's ``load_state_dict``, after checking, before anything changes, that the saved state is this
        optimizer kind's, for param groups of the same sizes and algorithms, with valid options, and that every
        saved tensor has the shape and dtype this optimizer keeps for its parameter (ValueError otherwise)."""
        groups = self._loadable_groups(state_dict)
        self._check_sharding(state_dict.get("sharding"))
        params = self._check_saved_state(state_dict["state"], state_dict["param_groups"], groups)
        # torch casts loaded state to each parameter's dtype; our state is kept in the compute dtype (fp32
        # for bf16 params, full-matrix shapes on owner ranks), so it is restored as saved, only moved to the
        # parameter's device; otherwise a resume would not be bit-exact.
        saved_state = state_dict["state"]
        super().load_state_dict({**state_dict, "state": {}, "param_groups": groups})
        for index, entry in saved_state.items():
            p = params[index]
            self.state[p] = {
                k: v.detach().to(p.device, copy=True) if isinstance(v, Tensor) else v for k, v in entry.items()
            }

    def _loadable_groups(self, state_dict: dict[str, Any]) -> list[dict[str, Any]]:
        """The saved param groups, checked against this optimizer's and with options this version added (and
        the save lacks) taken from the current groups."""
        name = type(self).__name__
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError(f"{name}: an optimizer state dict has 'state' and 'param_groups'; this one has "
                             f"{sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__}")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}: the saved state has {len(saved_groups)} param group(s), this optimizer "
                             f"{len(self.param_groups)}; load it into the same model and param groups")
        groups = []
        for i, (saved, now) in enumerate(zip(saved_groups, self.param_groups)):
            algorithm = saved.get("algorithm")
            if algorithm not in (self.algorithm, "adamw"):
                raise ValueError(
                    f"{name}: the saved state is not {name}'s: its param group {i} has algorithm {algorithm!r} "
                    f"(expected {self.algorithm!r} or 'adamw'); a state saved by another optimizer cannot be "
                    f"resumed, start the optimizer state afresh")
            if algorithm != now["algorithm"]:
                raise ValueError(f"{name}: saved param group {i} is {algorithm!r}, this optimizer's is "
                                 f"{now['algorithm']!r}; the parameters were routed differently when it was saved")
            if len(saved["params"]) != len(now["params"]):
                raise ValueError(f"{name}: saved param group {i} has {len(saved['params'])} parameters, this "
                                 f"optimizer's {len(now['params'])}; load it into the same model and param groups")
            unknown = set(saved) - set(self.defaults) - _BOOKKEEPING_KEYS
            if unknown:
                raise ValueError(f"{name}: saved param group {i} has option(s) {sorted(unknown)} that {name} "
                                 f"does not take; it was saved by another optimizer or version")
            group = {**{k: v for k, v in now.items() if k != "params"}, **saved}
            with warnings.catch_warnings():  # construction already warned about these options
                warnings.simplefilter("ignore")
                self._check_group({**group, "params": now["params"]})
            groups.append(group)
        return groups

    def _check_saved_state(self, saved_state: dict, saved_groups: list[dict], groups: list[dict]) -> dict:
        """Map saved state ids to parameters, checking every entry's keys, shapes and dtypes."""
        name = type(self).__name__
        params, options = {}, {}
        for saved, now, group in zip(saved_groups, self.param_groups, groups):
            for i, (index, p) in enumerate(zip(saved["params"], now["params"])):
                params[index], options[index] = p, ({**group, "params": now["params"]}, i)
        for index, entry in saved_state.items():
            if index not in params:
                raise ValueError(f"{name}: the saved state has an entry for parameter id {index!r}, which is in "
                                 f"none of its param groups; the state dict is damaged")
            group, i = options[index]
            expected = self._expected_state(params[index], group)
            what = self._name(group, i)
            if set(entry) != set(expected):
                raise ValueError(f"{name}: the saved state of {what} has {sorted(entry)}, but {name} keeps "
                                 f"{sorted(expected)} for it; it was saved with other options or by another "
                                 f"optimizer")
            for key, (shape, dtype) in expected.items():
                value = entry[key]
                if (not isinstance(value, Tensor) or tuple(value.shape) != shape
                        or dtype is not None and value.dtype != dtype):
                    got = (f"{tuple(value.shape)} {value.dtype}" if isinstance(value, Tensor)
                           else type(value).__name__)
                    raise ValueError(f"{name}: the saved {key!r} of {what} is {got}, but this parameter needs "
                                     f"{shape} {dtype}; the state was saved for another model (or other "
                                     f"options); nothing was loaded")
        return params

    def _expected_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], Any]]:
        """Shape and dtype of every state tensor ``p`` has once stepped: in the compute dtype, full-matrix shapes
        for matrices (on their owner rank), local-shard shapes for AdamW; ``step`` is a scalar (of torch's
        default dtype when it was made, so its dtype is not checked: None)."""
        dtype = compute_dtype(p.dtype)
        if group["algorithm"] == "adamw":
            shape = tuple(local_tensor(p).shape)
            shapes = {"exp_avg": shape, "exp_avg_sq": shape}
        else:
            shapes = self._matrix_state_shapes(p, group)
        return {"step": ((), None), **{k: (tuple(s), dtype) for k, s in shapes.items()}}

    def _matrix_state_shapes(self, p: Tensor, group: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """Shapes of the matrix state tensors of ``p`` (besides ``step``), in the compute dtype."""
        raise NotImplementedError

    def _matrix_state_numel(self, p: Tensor, group: dict[str, Any]) -> int:
        """Elements of matrix state ``p`` will need: the cost the exchange balances across ranks."""
        return sum(math.prod(shape) for shape in self._matrix_state_shapes(p, group).values())

    def _matrix_update(self, p: Tensor, weight: Tensor, grad: Tensor, group: dict[str, Any]) -> None:
        """Update the full matrix ``weight`` (compute dtype) of ``p`` in place, using ``self.state[p]``."""
        raise NotImplementedError

    def _matrices(self) -> dict[Tensor, dict[str, Any]]:
        """Every matrix, in group order, with its group."""
        return {p: g for g in self.param_groups if g["algorithm"] == self.algorithm for p in g["params"]}

    def matrix_state_numel(self) -> list[int]:
        """Elements of state each matrix will hold, in group order, experts updated in place included (their
        state stays with the rank holding them); the exchanged matrices' costs are what owners are balanced by."""
        return [self._matrix_state_numel(p, g) for p, g in self._matrices().items()]

    def _ensure_owners(self) -> dict[Tensor, int]:
        # Assigned once over every matrix (with a gradient or not) so ownership, and with it where the state
        # lives, is the same at every step and on every rank.
        if self._owners is None:
            matrices = self._matrices()
            exchanged = [p for p, g in matrices.items() if not self._in_place(g)]
            costs = [self._matrix_state_numel(p, matrices[p]) for p in exchanged]
            owners = dict(zip(exchanged, self._exchange.assign_owners(costs)))
            self._owners = {p: owners.get(p, -1) for p in matrices}
        return self._owners

    # ------------------------------------------------------------------ step
    def _check_finite(self) -> None:
        """Raise FloatingPointError, before anything changes, if any gradient has a NaN or inf."""
        entries = [(g, i) for g in self.param_groups for i, p in enumerate(g["params"]) if p.grad is not None]
        if not entries:
            return
        grads = [local_tensor(g["params"][i].grad) for g, i in entries]
        # A NaN or inf makes the sum non-finite: one reducing pass per gradient (isfinite().all() makes three;
        # benchmarks/README.md, "Figures behind design choices"). A finite gradient can overflow its sum, so a
        # non-finite sum is confirmed elementwise.
        bad = ~torch.isfinite(torch.stack([grad.sum().float() for grad in grads]))
        if bad.any():
            bad = torch.stack([flagged & ~torch.isfinite(grad).all() for flagged, grad in zip(bad, grads)])
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
            elif self._in_place(group):
                for p in params:
                    if local_tensor(p).numel():  # a rank may hold no expert of a small tensor
                        with in_compute_dtype(local_tensor(p).detach()) as weight:
                            self._matrix_update(p, weight, local_tensor(p.grad).to(weight.dtype), group)
            else:
                self._matrix_group(group, params, [owners[p] for p in params])
        return loss

    def _matrix_group(self, group: dict[str, Any], params: list[Tensor], owners: list[int]) -> None:
        """Update a matrix group's ``params`` (those with a gradient; ``owners`` their owner ranks): by default
        each owner updates its whole matrices with :meth:`_matrix_update`."""
        self._exchange.update_owned(
            params, owners, lambda i, weight, grad: self._matrix_update(params[i], weight, grad, group))

    def _adamw_group(self, group: dict[str, Any], params: Iterable[Tensor]) -> None:
        # AdamW is elementwise: each rank updates its own shard, no communication; one multi-tensor step.
        with contextlib.ExitStack() as stack:
            weights, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for p in params:
                weight = stack.enter_context(in_compute_dtype(local_tensor(p)))
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(weight)
                    state["exp_avg_sq"] = torch.zeros_like(weight)
                state["step"] += 1
                weights.append(weight)
                grads.append(local_tensor(p.grad).to(weight.dtype))
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(int(state["step"].item()))
            adamw_step(
                weights, grads, exp_avgs, exp_avg_sqs, steps, lr=group["lr"], betas=group["adamw_betas"],
                eps=group["adamw_eps"], weight_decay=group["adamw_weight_decay"], eps_form=group["adamw_eps_form"],
            )
