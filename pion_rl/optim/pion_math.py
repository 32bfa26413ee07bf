"""One Pion step on plain tensors: momentum in the chosen space, generators, step size, rotations.

Everything here works on a batch of matrices ``W`` of shape ``(B, r, c)`` (``B`` row blocks, or 1), in the
compute dtype (fp32, or fp64 for fp64 parameters); ``precision`` (:mod:`pion_rl.optim.precision`) says how the
matrix products are rounded. The optimizer class owns state and bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from .exp_maps import EXP_MAPS, rotate_left, rotate_right
from .lie import left_generator, left_product, right_generator, right_product, rms_step_size, skew
from .newton_schulz import NS_SCHEDULES, coefficient_schedule, msign, msign_of_skew_product
from .options import Number
from .precision import (PRECISIONS, accumulate_product, as_multiplier, generator_dtype, steering_inputs,
                        times_generator)

VARIANTS = ("lie_lie", "transported_ambient_ambient", "msign")
UPDATE_SIDES = ("both", "alternate", "left", "right")
SIDE_ALIASES = {"out": "left", "in": "right"}
SCALINGS = ("rms", "none")
#: First-moment beta per variant when the caller gives none (the paper's msign uses 0.95).
DEFAULT_BETAS = {"lie_lie": (0.9, 0.999), "transported_ambient_ambient": (0.9, 0.999), "msign": (0.95, 0.999)}


#: The numeric options of :class:`PionSettings` and the values each may take.
NUMERIC_OPTIONS = {
    "degree": Number(low=1, integer=True), "rms_scale": Number(low=0.0, low_open=True),
    "betas": Number(low=0.0, high=1.0, high_open=True, length=2, optional=True),
    "eps": Number(low=0.0, low_open=True), "msign_steps": Number(low=1, integer=True),
    "msign_lambda": Number(low=0.0, low_open=True),
}
#: The named options of :class:`PionSettings` and their choices (``update_side`` also takes
#: :data:`SIDE_ALIASES`).
CHOICES = {"variant": VARIANTS, "update_side": UPDATE_SIDES, "exp_map": EXP_MAPS, "scaling": SCALINGS,
           "msign_coefficients": tuple(NS_SCHEDULES), "precision": PRECISIONS}


@dataclass(frozen=True)
class PionSettings:
    """The hyper-parameters of one Pion param group besides ``lr`` (which a scheduler changes every step),
    validated on construction: the one place Pion's options are checked. ``betas=None`` takes the variant's
    default (:data:`DEFAULT_BETAS`), ``update_side`` may be an alias (:data:`SIDE_ALIASES`); numbers are
    stored as Python floats and ints."""

    variant: str = "lie_lie"
    update_side: str = "both"
    exp_map: str = "taylor"
    degree: int = 2
    scaling: str = "rms"
    rms_scale: float = 0.2
    betas: tuple[float, float] | None = None
    second_moment: bool = False
    eps: float = 1e-8
    msign_steps: int = 5
    msign_coefficients: str = "quintic"
    msign_lambda: float = 1.0
    precision: str = "fp32"

    def __post_init__(self):
        for key, rule in NUMERIC_OPTIONS.items():
            rule.check("Pion", key, getattr(self, key))
        for key, choices in CHOICES.items():
            value = getattr(self, key)
            if value not in choices and not (key == "update_side" and value in SIDE_ALIASES):
                aliases = f" or {tuple(SIDE_ALIASES)}" if key == "update_side" else ""
                raise ValueError(f"Pion: unknown {key} {value!r}; expected one of {choices}{aliases}")
        if self.variant == "msign" and self.second_moment:
            raise ValueError("Pion: the msign variant has no second moment; set second_moment=False")
        schedule = NS_SCHEDULES[self.msign_coefficients]
        try:
            coefficient_schedule(schedule, self.msign_steps)  # the schedule's own rule for its step counts
        except ValueError:
            raise ValueError(
                f"Pion: msign_steps={self.msign_steps} is not a multiple of the {len(schedule)} triples of "
                f"msign_coefficients={self.msign_coefficients!r}; use a multiple, or msign_coefficients='simple' "
                f"(one triple, any steps)") from None
        betas = self.betas if self.betas is not None else DEFAULT_BETAS[self.variant]
        normal = dict(update_side=SIDE_ALIASES.get(self.update_side, self.update_side), degree=int(self.degree),
                      rms_scale=float(self.rms_scale), betas=tuple(float(b) for b in betas),
                      second_moment=bool(self.second_moment), eps=float(self.eps),
                      msign_steps=int(self.msign_steps), msign_lambda=float(self.msign_lambda))
        for key, value in normal.items():
            object.__setattr__(self, key, value)

    @classmethod
    def from_group(cls, group: dict) -> PionSettings:
        """The settings of a Pion param group (its options filled in)."""
        return cls(**{f.name: group[f.name] for f in fields(cls)})

    def sides(self, step: int) -> tuple[bool, bool]:
        """``(right, left)``: which rotations step ``step`` (counted from 1) applies."""
        if self.update_side == "alternate":
            return step % 2 == 1, step % 2 == 0
        return self.update_side in ("both", "right"), self.update_side in ("both", "left")


def state_shapes(settings: PionSettings, blocks: int, rows: int, cols: int) -> dict[str, tuple[int, ...]]:
    """Shapes of the state tensors of one parameter split into ``blocks`` blocks of ``rows x cols``.

    The batch dim is kept only for row-blocked parameters, so a plain matrix's state reads naturally.
    """
    lead = (blocks,) if blocks > 1 else ()
    if settings.variant == "lie_lie":
        shapes = {"m_in": lead + (cols, cols), "m_out": lead + (rows, rows)}
        if settings.second_moment:
            shapes.update(v_in=shapes["m_in"], v_out=shapes["m_out"])
        return shapes
    shapes = {"m": lead + (rows, cols)}
    if settings.second_moment:
        shapes["v"] = shapes["m"]
    return shapes


def _ema_square(buf: Tensor, value: Tensor, beta: float) -> None:
    value = value.to(buf.dtype)
    buf.mul_(beta).addcmul_(value, value, value=1.0 - beta)


def _precondition(m: Tensor, v: Tensor | None, eps: float) -> Tensor:
    return m if v is None else m / (v.sqrt() + eps)


def _lie_generator(m: Tensor, v: Tensor | None, eps: float, dtype: torch.dtype) -> Tensor:
    """The applied generator of a ``lie_lie`` side: the skew part of its momentum buffer (preconditioned by
    the symmetric ``v``, which keeps it skew), rounded once into ``dtype``."""
    if v is None:
        return skew(m, dtype)
    return _precondition(skew(m), v, eps).to(dtype)


def _msign_generator(w: Tensor, m: Tensor, right: bool, s: PionSettings, compute: torch.dtype) -> Tensor:
    """``msign`` of the half generator ``(W^T M - M^T W)/2`` (``right``) or ``(M W^T - W M^T)/2``, from the
    steering inputs ``w``, ``m`` ``(..., r, c)``.

    The generator is ``P^T J P`` with ``P = [W; M]`` (right) or ``[M^T; W^T]`` (left); when ``P`` has at most
    half as many rows as the generator has (per-head blocks: 256 against 2048), Newton-Schulz runs on the
    small Gram side in the compute dtype (:func:`msign_of_skew_product`, the same iteration; at that size it
    costs about what bf16 iterations on the generator do even at fp32's rate, and in bf16 it measured 2-3x
    their error). Otherwise it runs on the generator: in the compute dtype under ``fp32``; under ``bf16`` in
    bf16, as Muon's. A ``bf16`` result is projected back onto the skew matrices and rounded once (exact
    arithmetic keeps it skew, rounding does not)."""
    schedule = NS_SCHEDULES[s.msign_coefficients]
    p = torch.cat([w, m], dim=-2) if right else torch.cat([m.mT, w.mT], dim=-2)
    if 2 * p.shape[-2] <= p.shape[-1]:
        u = msign_of_skew_product(p.to(compute), s.msign_steps, schedule)
    else:
        half = 0.5 * (right_generator if right else left_generator)(w, m, s.precision, generator_dtype(s.precision, compute))
        ns_dtype = compute if s.precision == "fp32" else torch.bfloat16
        u = msign(half.to(ns_dtype), s.msign_steps, schedule, ns_dtype).to(compute)
    return u if s.precision == "fp32" else skew(0.5 * u, torch.bfloat16)  # halving is exact: one rounding


def pion_step(w: Tensor, g: Tensor, state: dict[str, Tensor], step: int, s: PionSettings,
              lr: float) -> dict[str, Tensor]:
    """Update ``w`` and the momentum buffers of ``state`` in place.

    Args:
        w: ``(B, r, c)`` weights in the compute dtype; ``B`` independent matrices (row blocks).
        g: ``(B, r, c)`` gradient, same dtype.
        state: buffers shaped as :func:`state_shapes` says (viewed to carry the batch dim here). ``lie_lie``
            keeps ``m_in = EMA(W^T G)`` ``(c, c)`` and ``m_out = EMA(G W^T)`` ``(r, r)``: the paper's momenta
            are their skew parts (the EMA is linear), so each update is one pass with no ``X - X^T`` formed,
            and only the applied side's skew part is ever formed.
        step: this parameter's step number, counting from 1 (selects the side under ``alternate``).
        s: the group's settings.
        lr: the learning rate (a Python float).
    Returns:
        ``{"step_size": (B,), "generator_norm": (B,)}`` in the compute dtype: the step applied to each block
        (the RMS-scaled alpha, ``lr``, or ``lr * msign_lambda``; positive, the descent sign excluded; 0 where
        the generator is 0, which applies no rotation) and the Frobenius norm of the applied generator
        ``alpha * A`` (for two sides, the mean of their norms).
    """
    blocks, compute = w.shape[0], w.dtype
    if blocks == 1:  # one matrix: 2-D GEMMs (CPU's batched kernels copy a transposed operand first)
        w, g = w[0], g[0]
    lead = w.shape[:-2]
    state = {k: t.view(*lead, *t.shape[-2:]) for k, t in state.items()}
    right, left = s.sides(step)
    beta1, beta2 = s.betas
    low = generator_dtype(s.precision, compute)
    carried = None  # the ambient momentum, rotated along with W by the transported variant

    # Each applied rotation is E(scale * a) with a skew `a`; the descent direction's sign and the step size
    # live in `scale`, so no generator-sized tensor is negated or scaled.
    if s.variant == "lie_lie":
        # Both momenta move every step, whichever side is applied.
        w_low, g_low = steering_inputs(w, g, precision=s.precision)
        if s.second_moment:  # the products themselves are needed
            x_in, x_out = right_product(w_low, g_low, s.precision), left_product(w_low, g_low, s.precision)
            state["m_in"].lerp_(x_in.to(compute), 1.0 - beta1)
            state["m_out"].lerp_(x_out.to(compute), 1.0 - beta1)
            _ema_square(state["v_in"], skew(x_in), beta2)
            _ema_square(state["v_out"], skew(x_out), beta2)
        else:
            accumulate_product(state["m_in"], w_low.mT, g_low, beta1, s.precision)  # EMA(W^T G)
            accumulate_product(state["m_out"], g_low, w_low.mT, beta1, s.precision)  # EMA(G W^T)
        a_in = _lie_generator(state["m_in"], state.get("v_in"), s.eps, low) if right else None
        a_out = _lie_generator(state["m_out"], state.get("v_out"), s.eps, low) if left else None
    else:
        m = state["m"]
        m.lerp_(g, 1.0 - beta1)
        if s.variant == "transported_ambient_ambient":
            if s.second_moment:
                _ema_square(state["v"], m, beta2)  # the square of m, not of g
            w_low, m_low = steering_inputs(w, _precondition(m, state.get("v"), s.eps), precision=s.precision)
            a_in = right_generator(w_low, m_low, s.precision, low) if right else None
            a_out = left_generator(w_low, m_low, s.precision, low) if left else None
            carried = m
        else:  # msign: orthogonalised half-generators with a fixed step, no RMS scaling
            w_low, m_low = steering_inputs(w, m, precision=s.precision)
            a_in = _msign_generator(w_low, m_low, True, s, compute) if right else None
            a_out = _msign_generator(w_low, m_low, False, s, compute) if left else None

    a_in, a_out = (None if a is None else as_multiplier(a, compute) for a in (a_in, a_out))
    wa = times_generator(w, a_in) if a_in is not None else None
    aw = times_generator(w, a_out, left=True) if a_out is not None else None
    if s.variant == "msign":
        step_size = torch.full((*lead, 1, 1), lr * s.msign_lambda, dtype=compute, device=w.device)
    elif s.scaling == "rms":
        base = wa if aw is None else aw if wa is None else wa + aw
        step_size = rms_step_size(base, lr, s.rms_scale)
    else:
        step_size = torch.full((*lead, 1, 1), lr, dtype=compute, device=w.device)
    scale = -step_size  # descend: rotate along -a

    # Right first, then left, as the paper's bilateral map says.
    if a_in is not None:
        rotate_right(w, a_in, scale, s.exp_map, s.degree, wa=wa, out=w)
        if carried is not None:
            rotate_right(carried, a_in, scale, s.exp_map, s.degree, out=carried)
    if a_out is not None:
        # A W is reusable only while W is still unrotated.
        rotate_left(w, a_out, scale, s.exp_map, s.degree, aw=aw if a_in is None else None, out=w)
        if carried is not None:
            rotate_left(carried, a_out, scale, s.exp_map, s.degree, out=carried)

    norm = torch.stack([torch.linalg.matrix_norm(a, dtype=compute) for a in (a_in, a_out) if a is not None]).mean(0)
    # A zero generator rotates by nothing, whatever alpha is (the RMS scale over a zero norm is about 1e7).
    step_size = torch.where(norm > 0, step_size.reshape(blocks), 0.0)
    return {"step_size": step_size, "generator_norm": step_size * norm}
