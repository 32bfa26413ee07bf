"""What every optimizer step does to the weights, for AdamW, Muon and Pion alike, measured from outside.

:class:`OptimizerTelemetry` hooks into a torch optimizer (step pre/post hooks, state-dict hooks), so it works
the same for ``torch.optim.AdamW`` and for pion-rl's Pion and Muon, on one process, FSDP2, HSDP or DDP. Its
matrices are the tensors the routing (:mod:`pion_rl.optim.routing`) gives Pion, in Pion's units (q/k/v per
attention head, fused gate/up in halves, packed experts per expert, ``(in, out)`` storage as its maps),
whichever optimizer runs.

Cost per step: a snapshot of this rank's parameter shards during ``step()`` (for the update RMS), local sums,
one sum and one max all-reduce of a few thousand numbers. Every ``spectrum_every`` steps the matrices are
also gathered whole on owner ranks by the optimizers' own exchange (W only, nothing sent back), in parallel
across ranks, and their units' singular values compared with the first step's; packed experts are measured
where they are, by the rank holding each expert.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from pion_rl.optim.routing import UnroutedTensorWarning, route_pairs, route_parameters
from pion_rl.optim.sharding import local_tensor, make_exchange
from pion_rl.optim.units import is_experts, to_units

from .spectra import relative_sv_change, svd_cost, unit_singular_values, unit_square_norms

UPDATE_RMS = "optim/update_rms"
UPDATE_RMS_ADAMW = "optim/update_rms_adamw"
MAX_REL_FRO_CHANGE = "optim/max_rel_fro_change"
MAX_REL_SV_CHANGE = "optim/max_rel_sv_change"
MEAN_REL_SV_CHANGE = "optim/mean_rel_sv_change"
STEP_S = "optim/step_s"
TELEMETRY_S = "optim/telemetry_s"
STATE_GB_MAX_RANK = "optim/state_gb_max_rank"
PION_STEP_SIZE = "optim/pion/step_size"
PION_GENERATOR_NORM = "optim/pion/generator_norm"
#: How each metric combines over the optimizer steps of one RL step (mini-batches): the ``max_*`` ones keep
#: their max, the others are averaged.
REDUCTIONS = {
    UPDATE_RMS: "mean", UPDATE_RMS_ADAMW: "mean", MAX_REL_FRO_CHANGE: "max", MAX_REL_SV_CHANGE: "max",
    MEAN_REL_SV_CHANGE: "mean", STEP_S: "mean", TELEMETRY_S: "mean", STATE_GB_MAX_RANK: "max",
    PION_STEP_SIZE: "mean", PION_GENERATOR_NORM: "mean",
}
#: Key of the telemetry's entry in the optimizer's ``state_dict()``.
STATE_KEY = "telemetry"


class OptimizerTelemetry:
    """Measure each step of ``optimizer``; read the numbers with :meth:`pop_metrics` after ``step()``.

    Metrics (floats; ``optim/...`` names, the same on every rank):
      - ``optim/update_rms``: RMS of ``W_t - W_{t-1}`` over all matrices; ``optim/update_rms_adamw`` over the
        other parameters (embeddings, lm_head, norms, biases).
      - ``optim/max_rel_fro_change``: max over units of ``| ||W_t||_F - ||W_0||_F | / ||W_0||_F``.
      - ``optim/max_rel_sv_change``, ``optim/mean_rel_sv_change`` (every ``spectrum_every`` steps): max and
        mean over all singular values of all units of ``|s_i(t) - s_i(0)| / s_1(0)``.
      - ``optim/step_s``: wall time of ``optimizer.step()`` alone (slowest rank); ``optim/state_gb_max_rank``:
        optimizer state on the fullest rank, GB (1e9 bytes); ``optim/telemetry_s``: wall time of this
        telemetry's own work around the step (this rank's, reductions included), so its cost is on record.
      - Pion only: ``optim/pion/step_size`` and ``optim/pion/generator_norm``, means over units of the
        applied step (0 for a unit whose generator is 0: no rotation) and of the Frobenius norm of the
        applied generator.
    ``W_0`` is the weights before the first step this object saw; it is saved in ``optimizer.state_dict()``
    (key ``"telemetry"``), so a resumed run keeps measuring against the original.

    Args:
        optimizer: a torch optimizer updating (at least) the tensors of ``named_params``.
        named_params: a module or ``(name, tensor)`` pairs such as ``model.named_parameters()``.
        head_dim: rows per attention head; q/k/v units are heads (None: read from a module's config, else
            whole matrices).
        spectrum_every: singular values every this many steps (0: never; no SVD and no gather at all).
        process_group: for plain tensors replicated over ranks (DDP), as the optimizers take it.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        named_params: nn.Module | Iterable[tuple[str, Tensor]],
        *,
        head_dim: int | None = None,
        spectrum_every: int = 10,
        process_group=None,
    ):
        if isinstance(spectrum_every, bool) or not isinstance(spectrum_every, int) or spectrum_every < 0:
            raise ValueError(f"telemetry: spectrum_every must be an int >= 0 (0 turns singular values off), "
                             f"got {spectrum_every!r}")
        named = list(named_params.named_parameters()) if isinstance(named_params, nn.Module) else route_pairs(named_params)
        with warnings.catch_warnings():  # the optimizer itself warns about tensors no rule knows
            warnings.simplefilter("ignore", UnroutedTensorWarning)
            routes = route_parameters(named_params if isinstance(named_params, nn.Module) else named, head_dim=head_dim)
        params = dict(named)
        self.matrices = [(r.name, params[r.name], r) for r in routes if r.matrix]
        self.others = [(r.name, params[r.name]) for r in routes if not r.matrix]
        updated = {id(p) for g in optimizer.param_groups for p in g["params"]}
        missing = [name for name, p, *_ in self.matrices + self.others if id(p) not in updated]
        if missing:
            raise ValueError(f"telemetry: {len(missing)} trainable parameter(s) are not updated by the optimizer "
                             f"(e.g. {missing[:3]}); pass the named parameters the optimizer was built from")
        self.optimizer = optimizer
        self.spectrum_every = spectrum_every
        self.exchange = make_exchange([p for _, p, _ in self.matrices] + [p for _, p in self.others], process_group)
        # Experts are whole on the rank holding them (FSDP2 shards their dim 0): measured there, no owner.
        self.local = [i for i, (_, _, r) in enumerate(self.matrices) if is_experts(r.layout)]
        gathered = [i for i in range(len(self.matrices)) if i not in self.local]
        owners = self.exchange.assign_owners([svd_cost(*self.matrices[i][2].units()) for i in gathered])
        self.owners = [-1] * len(self.matrices)
        for i, owner in zip(gathered, owners):
            self.owners[i] = owner
        self.num_units = [r.units()[0] for _, _, r in self.matrices]
        self.step = 0  # optimizer steps measured, across resumes
        self.fro_reference: Tensor | None = None  # (units,) ||W_0||_F of every unit
        self.sv_reference: dict[int, Tensor] | None = None  # matrix index -> (B, k), owned matrices only
        self._snapshot: list[Tensor] | None = None
        self._started = 0.0
        self._own_s = 0.0
        self._metrics: dict[str, float] = {}
        optimizer.register_step_pre_hook(self._before_step)
        optimizer.register_step_post_hook(self._after_step)
        optimizer.register_state_dict_post_hook(self._save)
        optimizer.register_load_state_dict_pre_hook(self._load)

    def pop_metrics(self) -> dict[str, float]:
        """The metrics of the last step, once (``{}`` if no step ran since the last call)."""
        metrics, self._metrics = self._metrics, {}
        return metrics

    # ------------------------------------------------------------------ hooks
    @torch.no_grad()
    def _before_step(self, optimizer, args, kwargs) -> None:
        started = time.perf_counter()
        if self.fro_reference is None:
            partial = self._unit_square_norms() / self.exchange.row_copies
            self.fro_reference = self.exchange.sum_over_ranks(partial).sqrt()
        if self.spectrum_every and self.sv_reference is None:
            self.sv_reference = self._singular_values()
        self._snapshot = [local_tensor(p).detach().clone() for p in self._all_params()]
        self._synchronize()
        self._started = time.perf_counter()
        self._own_s = self._started - started

    @torch.no_grad()
    def _after_step(self, optimizer, args, kwargs) -> None:
        self._synchronize()
        after_started = time.perf_counter()
        step_s = after_started - self._started
        self.step += 1
        device = self._device()
        zero = torch.zeros((), dtype=torch.float64, device=device)
        # Spectrum first, so its owner-local numbers ride in the same two all-reduces as everything else.
        sv_max, sv_sum, sv_count = zero, zero, zero
        if self.spectrum_every and self.step % self.spectrum_every == 0:
            for index, values in self._singular_values().items():
                change = relative_sv_change(values, self.sv_reference[index]).double()
                sv_max = torch.maximum(sv_max, change.max())
                sv_sum, sv_count = sv_sum + change.sum(), sv_count + change.numel()
        # Sums of rows are divided by the ranks holding each row, so one plain sum counts every row once.
        copies = self.exchange.row_copies
        update_sq = [(local_tensor(p).detach() - old).float().square().sum().double() / copies
                     for p, old in zip(self._all_params(), self._snapshot)]
        self._snapshot = None
        num_matrices = len(self.matrices)
        stats = list(getattr(self.optimizer, "last_step_stats", {}).values())  # Pion: owner-local
        # Named local sums and maxima, reduced over ranks in one all-reduce each (with the unit norms).
        local_sums = {
            "matrix_update_sq": sum(update_sq[:num_matrices], zero), "other_update_sq": sum(update_sq[num_matrices:], zero),
            "step_size": sum((s["step_size"].double().sum() for s in stats), zero),
            "generator_norm": sum((s["generator_norm"].double().sum() for s in stats), zero),
            "blocks": zero + sum(s["step_size"].numel() for s in stats), "sv_change": sv_sum, "sv_count": sv_count,
        }
        local_maxima = {"sv_change": sv_max, "state_bytes": zero + self._local_state_bytes(), "step_s": zero + step_s}
        summed = self.exchange.sum_over_ranks(
            torch.cat([torch.stack(list(local_sums.values())), self._unit_square_norms() / copies])).tolist()
        sums = dict(zip(local_sums, summed))
        maxima = dict(zip(local_maxima, self.exchange.max_over_ranks(torch.stack(list(local_maxima.values()))).tolist()))
        fro = torch.tensor(summed[len(local_sums):], dtype=torch.float64).sqrt()
        reference = self.fro_reference.double().cpu()
        metrics = {
            UPDATE_RMS: math.sqrt(sums["matrix_update_sq"] / max(1, sum(p.numel() for _, p, _ in self.matrices))),
            MAX_REL_FRO_CHANGE: float(((fro - reference).abs() / reference).max()) if len(fro) else 0.0,
            STEP_S: maxima["step_s"],
            STATE_GB_MAX_RANK: maxima["state_bytes"] / 1e9,
        }
        if self.others:
            metrics[UPDATE_RMS_ADAMW] = math.sqrt(sums["other_update_sq"] / sum(p.numel() for _, p in self.others))
        if sums["sv_count"]:
            metrics[MAX_REL_SV_CHANGE] = maxima["sv_change"]
            metrics[MEAN_REL_SV_CHANGE] = sums["sv_change"] / sums["sv_count"]
        if sums["blocks"]:
            metrics[PION_STEP_SIZE] = sums["step_size"] / sums["blocks"]
            metrics[PION_GENERATOR_NORM] = sums["generator_norm"] / sums["blocks"]
        metrics[TELEMETRY_S] = self._own_s + time.perf_counter() - after_started
        self._metrics = metrics

    def _save(self, optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        names = [name for name, _, _ in self.matrices]
        state_dict[STATE_KEY] = {
            "step": self.step,
            "fro_reference": self.fro_reference,
            "sv_reference": None if self.sv_reference is None
            else {names[i]: values for i, values in self.sv_reference.items()},
        }
        return state_dict

    def _load(self, optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        saved = state_dict.pop(STATE_KEY, None)  # a shallow copy: the caller's dict keeps the entry
        self.fro_reference, self.sv_reference = None, None
        if saved is None:
            warnings.warn("telemetry: the loaded optimizer state has no telemetry reference (saved without "
                          "telemetry); optim/max_rel_*_change now measure against a new reference, the weights "
                          "before the next step", stacklevel=2)
            return state_dict
        self.step = int(saved["step"])
        names = {name: i for i, (name, _, _) in enumerate(self.matrices)}
        owned = {i for i, owner in enumerate(self.owners) if owner == self.exchange.rank} | {
            i for i in self.local if local_tensor(self.matrices[i][1]).shape[0]}
        fro, svs = saved["fro_reference"], saved["sv_reference"]
        if (fro is not None and fro.numel() != sum(self.num_units)) or (
                svs is not None and {names.get(n) for n in svs} != owned):
            warnings.warn("telemetry: the saved telemetry reference is for other matrices or another rank "
                          "layout; optim/max_rel_*_change now measure against a new reference, the weights "
                          "before the next step", stacklevel=2)
            return state_dict
        device = self._device()
        self.fro_reference = None if fro is None else fro.to(device)
        self.sv_reference = None if svs is None else {names[n]: v.to(device) for n, v in svs.items()}
        return state_dict

    # ------------------------------------------------------------------ measurements
    def _all_params(self) -> list[Tensor]:
        return [p for _, p, _ in self.matrices] + [p for _, p in self.others]

    def _device(self) -> torch.device:
        return local_tensor(self._all_params()[0]).device

    def _synchronize(self) -> None:
        # Step time on an accelerator needs the queued kernels finished (one sync before and one after).
        device = self._device()
        if device.type != "cpu":
            torch.get_device_module(device.type).synchronize(device)

    def _unit_square_norms(self) -> Tensor:
        """``(units,)`` this rank's partial squared Frobenius norms of every unit of every matrix."""
        parts = []
        for _, p, r in self.matrices:
            start, _ = self.exchange.local_rows(p.shape[0])
            parts.append(unit_square_norms(local_tensor(p).detach(), start, r.shape, r.layout, r.halves, r.head_rows))
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=self._device())

    def _singular_values(self) -> dict[int, Tensor]:
        """Singular values of the units of every matrix this rank owns (gathered whole by the exchange) and of the
        experts it holds: matrix index -> ``(units, k)``."""
        values: dict[int, Tensor] = {}

        def measure(index: int, weight: Tensor) -> None:
            r = self.matrices[index][2]
            values[index] = unit_singular_values(to_units(weight, r.layout, r.halves, r.head_rows)[0])

        gathered = [i for i, owner in enumerate(self.owners) if owner >= 0]
        self.exchange.visit_owned([self.matrices[i][1] for i in gathered], [self.owners[i] for i in gathered],
                                  lambda k, weight: measure(gathered[k], weight))
        for index in self.local:
            weight = local_tensor(self.matrices[index][1]).detach()
            if weight.shape[0]:
                measure(index, weight)
        return values

    def _local_state_bytes(self) -> int:
        return sum(local_tensor(t).numel() * t.element_size()
                   for state in self.optimizer.state.values() for t in state.values() if isinstance(t, Tensor))
