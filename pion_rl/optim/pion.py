"""The Pion optimizer: spectrum-preserving updates ``W <- R W P`` with rotations from skew generators."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from .matrix_optimizer import MatrixOptimizer
from .options import Number
from .pion_math import PionSettings, pion_step, state_shapes
from .sharding import local_tensor
from .units import to_units, units_of


class Pion(MatrixOptimizer):
    """Pion for linear maps (matrices, heads, packed experts), with an AdamW fallback for everything else (see ``pion_rl/optim/ALGORITHM.md``).

    Args:
        params: a module (``Pion(model, ...)``), tensors, param-group dicts (``algorithm`` ``"pion"`` or
            ``"adamw"``), or ``(name, tensor)`` pairs; a module is routed by what each tensor is, pairs by name
            (:mod:`pion_rl.optim.routing`: embeddings, readouts, norms, biases, routers to AdamW).
        lr: learning rate; under ``scaling="rms"`` the first-order change of each matrix has RMS ``lr * rms_scale``.
        variant: ``"lie_lie"`` (momentum in the Lie algebra), ``"transported_ambient_ambient"`` or ``"msign"``.
        update_side: ``"both"``, ``"alternate"`` (odd steps right, even steps left), ``"left"``/``"out"``,
            ``"right"``/``"in"``.
        exp_map: ``"taylor"`` (degree ``degree``), ``"cayley"`` or ``"exp"`` (both exactly orthogonal).
        betas: momentum betas; None means (0.9, 0.999), or (0.95, 0.999) for ``msign``.
        second_moment: RMS-normalise the momentum elementwise (``lie_lie``, ``transported_ambient_ambient``).
        row_block: rows per independent block (per-head q/k/v, split fused weights); must divide d_out.
        msign_steps, msign_lambda: Newton-Schulz steps and step multiplier of the ``msign`` variant.
        msign_coefficients: its Newton-Schulz schedule (:data:`pion_rl.optim.newton_schulz.NS_SCHEDULES`):
            ``"quintic"``, five triples as in the official release (``msign_steps`` a multiple of 5), or
            ``"simple"``, Muon's one triple at every step.
        precision: how the matrix products are rounded (:mod:`pion_rl.optim.precision`). ``"fp32"``: all in
            the compute dtype (fp32; fp64 for fp64 params), the reference fp32 path. ``"bf16"``: the tensor-core
            path: generators from bf16 inputs, rounded to bf16 (still exactly skew, so every map stays a
            rotation); the rotation's terms ``W A``, ``(W A) A`` precise in W (split into bf16 terms on CUDA)
            with fp32 accumulation; msign's Newton-Schulz in bf16. Only A's rounding remains (about 2^-9
            relative, which steers the step but does not bend the spectrum).
        weight_decay: decoupled decay of Pion matrices. 0 by default: decay shrinks singular values, which
            is exactly what Pion is built not to do.
        adamw_betas, adamw_eps, adamw_weight_decay, adamw_eps_form: the AdamW fallback's options
            (``adamw_eps_form``: where eps enters, :data:`pion_rl.optim.adamw_math.EPS_FORMS`).
        head_dim: with a module or named params, q/k/v get ``row_block=head_dim``; None reads it from a
            module's ``config`` (``head_dim``, else ``hidden_size // num_attention_heads``). Named params
            without it update q/k/v as whole matrices, with a warning naming them.
        router, routes: where MoE routers go (``"adamw"`` or ``"matrix"``) and routes for tensors no rule
            knows (:func:`pion_rl.optim.routing.route_parameters`); with a module or named params.
        process_group: for plain tensors replicated over ranks (DDP): each matrix is then updated on one owner
            rank, which alone keeps its state, and the result is sent to all. FSDP2 DTensor parameters need
            nothing: their mesh is used.

    State per matrix (top-level tensors of ``optimizer.state[p]``): ``step`` and, for ``lie_lie``, ``m_in``
    ``(d_in, d_in)`` and ``m_out`` ``(d_out, d_out)`` (with a leading block dim under ``row_block``; they hold
    the EMAs of ``W^T G`` and ``G W^T``, whose skew parts are the paper's momenta), plus
    ``v_in``/``v_out`` with ``second_moment``; for the other variants ``m`` (and ``v``) shaped like ``W``.
    """

    algorithm = "pion"
    #: The options :class:`~pion_rl.optim.pion_math.PionSettings` does not hold (it checks the rest).
    numeric_options = {"row_block": Number(low=1, integer=True, optional=True), "weight_decay": Number(low=0.0)}

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        *,
        variant: str = "lie_lie",
        update_side: str = "both",
        exp_map: str = "taylor",
        degree: int = 2,
        scaling: str = "rms",
        rms_scale: float = 0.2,
        betas: tuple[float, float] | None = None,
        second_moment: bool = False,
        eps: float = 1e-8,
        row_block: int | None = None,
        msign_steps: int = 5,
        msign_coefficients: str = "quintic",
        msign_lambda: float = 1.0,
        precision: str = "fp32",
        weight_decay: float = 0.0,
        adamw_betas: tuple[float, float] = (0.9, 0.999),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 0.01,
        adamw_eps_form: str = "after_bias_correction",
        head_dim: int | None = None,
        process_group=None,
        router: str = "adamw",
        routes: dict[str, str] | None = None,
    ):
        defaults = dict(
            lr=lr, variant=variant, update_side=update_side, exp_map=exp_map, degree=degree, scaling=scaling,
            rms_scale=rms_scale, betas=betas, second_moment=second_moment, eps=eps, row_block=row_block,
            msign_steps=msign_steps, msign_coefficients=msign_coefficients, msign_lambda=msign_lambda,
            precision=precision,
            weight_decay=weight_decay,
            adamw_betas=adamw_betas, adamw_eps=adamw_eps, adamw_weight_decay=adamw_weight_decay,
            adamw_eps_form=adamw_eps_form,
        )
        #: Per Pion group (by id, with the group itself): its settings, built when the group is added or loaded.
        self._settings: dict[int, tuple[dict[str, Any], PionSettings]] = {}
        super().__init__(params, defaults, head_dim=head_dim, process_group=process_group, router=router,
                         routes=routes)
        #: Per matrix updated on this rank in the last step: ``pion_step``'s ``step_size`` and ``generator_norm``
        #: tensors ``(blocks,)`` (see :func:`pion_rl.optim.pion_math.pion_step`); read by the telemetry.
        self.last_step_stats: dict[Tensor, dict[str, Tensor]] = {}

    def step(self, closure=None):
        self.last_step_stats = {}  # only this step's matrices
        return super().step(closure)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._build_settings()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._build_settings()  # the loaded groups are new dicts, possibly with other options

    def _build_settings(self) -> None:
        self._settings = {id(g): (g, self._settings_of(g)) for g in self.param_groups if g["algorithm"] == "pion"}

    def _settings_of(self, group: dict[str, Any]) -> PionSettings:
        """``group``'s settings: those built when it was added or loaded, or (for a group being checked) new."""
        built = self._settings.get(id(group))
        return built[1] if built is not None and built[0] is group else PionSettings.from_group(group)

    def _check_matrix_group(self, group: dict[str, Any]) -> None:
        self._settings_of(group)  # PionSettings checks its options
        if group["weight_decay"]:
            # verl passes its optim.weight_decay (0.01 by default) to every optimizer; say what it does here.
            warnings.warn(
                f"Pion: weight_decay={group['weight_decay']} shrinks the singular values of Pion matrices every "
                f"step, which Pion otherwise preserves; the paper's Pion uses 0 (the AdamW fallback has its own "
                f"adamw_weight_decay)", stacklevel=3)
        block = group["row_block"]
        for i, p in enumerate(group["params"]):
            rows = self._unit_shape(p, group)[1]
            if block is not None and (block < 1 or rows % block):
                raise ValueError(f"Pion: row_block={block} does not divide the {rows} rows of each unit of "
                                 f"{self._name(group, i)}")

    def _check_trainable(self) -> None:
        # Decided over every rank together (a rank raising alone would leave the others waiting).
        matrices = list(self._matrices().items())
        if not matrices or local_tensor(matrices[0][0]).is_meta:
            return  # a model on the meta device (shapes only, e.g. to size the state) has no values to check
        nonzero = torch.stack([local_tensor(p).detach().count_nonzero() > 0 for p, _ in matrices])
        zero = ~self._exchange.any_rank(nonzero.to(local_tensor(matrices[0][0]).device))
        if zero.any():
            p, group = matrices[int(zero.nonzero()[0])]
            index = next(i for i, q in enumerate(group["params"]) if q is p)
            raise ValueError(
                f"Pion: {self._name(group, index)} is all zeros, and a rotation of zero stays "
                f"zero, so Pion could never move it (LoRA's lora_B starts at zero); train it with Muon or AdamW "
                f"(put it in an 'adamw' group, or use optimizer=Muon / AdamW for adapters)")

    def _matrix_state_shapes(self, p: Tensor, group: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        return state_shapes(self._settings_of(group), *self._unit_shape(p, group, group["row_block"]))

    def _matrix_update(self, p: Tensor, weight: Tensor, grad: Tensor, group: dict[str, Any]) -> None:
        settings = self._settings_of(group)
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            for key, shape in self._matrix_state_shapes(p, group).items():
                state[key] = torch.zeros(shape, dtype=weight.dtype, device=weight.device)
        state["step"] += 1
        if group["weight_decay"]:
            weight.mul_(1.0 - float(group["lr"]) * group["weight_decay"])
        buffers = {k: v for k, v in state.items() if k != "step"}
        units = (group.get("layout", "out_in"), group.get("halves"), group["row_block"])
        with units_of(weight, *units) as w:
            g = to_units(grad, *units)[0]
            self.last_step_stats[p] = pion_step(w, g, buffers, int(state["step"].item()), settings,
                                                float(group["lr"]))
