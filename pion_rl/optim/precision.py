"""How Pion's matrix products are rounded: ``"fp32"`` (the compute dtype: the reference path) or
``"bf16"`` (tensor-core inputs, with fp32 kept where the spectrum depends on it).

Under ``"bf16"`` the generators are built from bf16-rounded inputs and rounded to bf16 (exactly skew); the
rotation's terms ``W A``, ``(W A) A`` are precise in their left factor and fp32 out (:func:`times_generator`),
since any error there that is not a rotation bends the spectrum (a bf16 second-order term measured 2-3x the
fp32 path's singular-value drift). On CUDA, bf16 x bf16 -> fp32 is one tensor-core GEMM (``out_dtype``). The
CPU has no such kernel: there the precise products are fp32 GEMMs (of the rounded generator), and a generator
product is a native bf16 GEMM with a bf16 output (about 2.7x faster than fp32 on AVX-512 BF16; the extra
rounding of its output is of the same size as rounding its inputs, and only steers the momentum).
"""

from __future__ import annotations

import torch
from torch import Tensor

PRECISIONS = ("fp32", "bf16")

#: torch's bf16 x bf16 -> fp32 GEMM overloads (CUDA kernels only; the CPU raises NotImplementedError).
_HAS_FP32_OUT = hasattr(torch.ops.aten.mm, "dtype") and hasattr(torch.ops.aten.bmm, "dtype")


def tensor_core_products(t: Tensor) -> bool:
    """Whether bf16 x bf16 -> fp32 GEMMs run natively on ``t``'s device (CUDA): the ``"bf16"`` path then
    multiplies by bf16 generators and splits W into bf16 terms; elsewhere it uses fp32 GEMMs of the rounded
    generator (the same products). Tests switch this on to run the CUDA arithmetic on CPU."""
    return t.is_cuda and _HAS_FP32_OUT


def generator_dtype(precision: str, compute_dtype: torch.dtype) -> torch.dtype:
    """The dtype generators are rounded to before they enter a rotation."""
    return torch.bfloat16 if precision == "bf16" else compute_dtype


def _bf16_product_fp32(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` of bf16 ``a`` ``(..., m, k)`` and ``b`` ``(..., k, n)`` (same leading dims), accumulated
    and returned in fp32."""
    if a.is_cuda and _HAS_FP32_OUT:
        if a.ndim == 2:
            return torch.mm(a, b, out_dtype=torch.float32)
        lead = a.shape[:-2]
        out = torch.bmm(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]), out_dtype=torch.float32)
        return out.reshape(*lead, *out.shape[-2:])
    return a.float() @ b.float()  # bf16 -> fp32 is exact: an fp32 GEMM of the rounded inputs


def steering_product(a: Tensor, b: Tensor, precision: str) -> Tensor:
    """``a @ b`` for a product that only steers (a generator, a higher rotation term).

    ``"fp32"``: in the inputs' dtype. ``"bf16"``: bf16-rounded inputs; fp32 output on CUDA (free there),
    bf16 output on CPU (the fastest kernel there). Returns ``(..., m, n)``.
    """
    if precision != "bf16":
        return a @ b
    a, b = a.to(torch.bfloat16), b.to(torch.bfloat16)
    return _bf16_product_fp32(a, b) if tensor_core_products(a) else a @ b


def steering_inputs(*xs: Tensor, precision: str) -> tuple[Tensor, ...]:
    """The operands of the steering products, rounded once (to bf16 under ``"bf16"``) however many products
    use them."""
    return xs if precision != "bf16" else tuple(x.to(torch.bfloat16) for x in xs)


#: On CPU a bf16 steering product with a contraction this short or shorter is accumulated into its buffer by
#: one fp32 ``baddbmm_`` of the rounded inputs (the CUDA kernel's arithmetic): with so little work per output
#: the product is memory-bound there, and the fused GEMM passes over the buffer once, where a bf16 product
#: is written, cast and blended in three passes. The threshold is where the fused GEMM stops being faster
#: (measured: benchmarks/README.md, "Figures behind design choices").
FUSED_EMA_MAX_CONTRACTION = 128


def accumulate_product(buf: Tensor, a: Tensor, b: Tensor, beta: float, precision: str) -> None:
    """``buf <- beta * buf + (1 - beta) * (a @ b)`` in place: the EMA of a steering product.

    Args:
        buf: ``(B, m, n)`` or ``(m, n)``, in the compute dtype.
        a, b: ``(B, m, k)``, ``(B, k, n)`` (or 2-D), from :func:`steering_inputs`. ``"fp32"``: one fused GEMM in the
            compute dtype. ``"bf16"``: the product rounded as :func:`steering_product` says, then blended
            (fused on CPU for a short contraction, see :data:`FUSED_EMA_MAX_CONTRACTION`).
    """
    fused = buf.addmm_ if buf.ndim == 2 else buf.baddbmm_
    if precision != "bf16":
        fused(a, b, beta=beta, alpha=1.0 - beta)
    elif not tensor_core_products(a) and a.shape[-1] <= FUSED_EMA_MAX_CONTRACTION:
        fused(a.to(buf.dtype), b.to(buf.dtype), beta=beta, alpha=1.0 - beta)
    else:
        buf.lerp_(steering_product(a, b, precision).to(buf.dtype), 1.0 - beta)


def as_multiplier(a: Tensor, compute_dtype: torch.dtype) -> Tensor:
    """A rounded generator in the form this device multiplies it by: bf16 for CUDA's tensor cores; elsewhere,
    whose precise products are fp32 GEMMs, its (exact) copy in the compute dtype, made once per step."""
    return a if tensor_core_products(a) else a.to(compute_dtype)


def split_bf16(w: Tensor, parts: int = 3) -> list[Tensor]:
    """``parts`` bf16 matrices whose sum is ``w``: each carries the rounding residual of the ones before, so
    three carry an fp32 ``w`` to about 2^-27 relative, below fp32's own rounding (two: about 2^-17)."""
    terms, rest = [], w
    for _ in range(parts):
        terms.append(rest.to(torch.bfloat16))
        rest = rest - terms[-1].to(w.dtype)
    return terms


def times_generator(w: Tensor, a: Tensor, parts: int = 3, *, left: bool = False) -> Tensor:
    """``W @ A`` (``A @ W`` with ``left``) in ``w``'s dtype, precise in ``W``: the rotation's Taylor terms and
    the RMS scaling's base.

    Args:
        w: ``(..., r, c)`` in the compute dtype.
        a: ``(..., c, n)`` generator (``(..., n, r)`` with ``left``): in ``w``'s dtype (``"fp32"``, a plain
            product), or bf16 (``"bf16"``). Then only ``A``'s rounding remains, and a rounded skew ``A`` is
            still skew, so the step stays a rotation. On CUDA ``W`` enters the tensor cores as ``parts`` bf16
            terms (:func:`split_bf16`), with fp32 accumulation; on CPU as itself, in an fp32 GEMM: the same
            product to 2^-27.
        parts: 3 for the first-order term, whose error (2^-17 with a hi/lo pair) is not a rotation and adds
            to the singular-value drift (a pair measured within 1.2x of fp32's drift, three within 1.15x);
            2 suffice for the higher terms, ``theta`` times smaller.
    """
    if a.dtype == w.dtype:
        return a @ w if left else w @ a
    if tensor_core_products(a):
        out = None
        for term in split_bf16(w, parts):
            product = _bf16_product_fp32(a, term) if left else _bf16_product_fp32(term, a)
            out = product if out is None else out.add_(product)
        return out.to(w.dtype)
    a = a.to(w.dtype)
    return a @ w if left else w @ a
