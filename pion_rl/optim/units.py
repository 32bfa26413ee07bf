"""How a stored weight tensor splits into the units Pion rotates and Muon orthogonalizes, on plain tensors.

A *unit* is one linear map ``out x in`` updated on its own. A parameter's units form a batch ``(B, r, c)``:

- ``layout`` says how the tensor stores its map(s): ``"out_in"`` (``nn.Linear.weight``), ``"in_out"``
  (transformers' ``Conv1D``), ``"experts_out_in"`` ``[E, out, in]`` (transformers 5's packed experts) or
  ``"experts_in_out"`` ``[E, in, out]`` (gpt-oss, Llama 4). Each expert is its own map.
- ``halves`` splits every map's ``out`` rows into two equal maps: ``"stacked"`` (``[gate; up]``) or
  ``"interleaved"`` (gate rows even, up rows odd, as gpt-oss stores them); None keeps them whole.
- ``row_block`` splits every map's ``out`` rows into blocks of that many rows (attention heads); None keeps
  them whole.

Unit ``b`` of the batch is expert ``b // (B / E)``; within an expert, halves (gate first) then row blocks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor

LAYOUTS = ("out_in", "in_out", "experts_out_in", "experts_in_out")
HALVES = ("stacked", "interleaved")


def is_experts(layout: str) -> bool:
    """True for the packed-experts layouts (leading dim = experts)."""
    return layout.startswith("experts")


def map_shape(shape: tuple[int, ...], layout: str) -> tuple[int, int, int]:
    """``(E, out, in)`` of a tensor of ``shape`` stored in ``layout`` (``E`` = 1 for a single matrix)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown unit layout {layout!r}; expected one of {LAYOUTS}")
    if len(shape) != (3 if is_experts(layout) else 2):
        raise ValueError(f"layout {layout!r} needs a {3 if is_experts(layout) else 2}-D tensor, got shape {tuple(shape)}")
    experts, a, b = shape if is_experts(layout) else (1, *shape)
    return (experts, b, a) if layout.endswith("in_out") else (experts, a, b)


def unit_shape(shape: tuple[int, ...], layout: str = "out_in", halves: str | None = None,
               row_block: int | None = None) -> tuple[int, int, int]:
    """``(B, r, c)``: the number of units of a tensor of ``shape`` and the shape of each.

    Raises ValueError when ``halves`` or ``row_block`` does not divide the ``out`` rows of each map.
    """
    experts, rows, cols = map_shape(shape, layout)
    blocks = experts
    if halves is not None:
        if halves not in HALVES:
            raise ValueError(f"unknown halves {halves!r}; expected one of {HALVES} or None")
        if rows % 2:
            raise ValueError(f"{rows} output rows do not split into two halves")
        blocks, rows = 2 * blocks, rows // 2
    if row_block is not None:
        if row_block < 1 or rows % row_block:
            raise ValueError(f"row_block={row_block} does not divide the {rows} output rows of each map")
        blocks, rows = blocks * (rows // row_block), row_block
    return blocks, rows, cols


def to_units(t: Tensor, layout: str = "out_in", halves: str | None = None,
             row_block: int | None = None) -> tuple[Tensor, bool]:
    """``(units, aliases)``: ``t`` as a contiguous ``(B, r, c)`` batch (:func:`unit_shape`), and whether the
    batch shares ``t``'s memory (so in-place changes to it are changes to ``t``; otherwise it is a copy)."""
    blocks, rows, cols = unit_shape(tuple(t.shape), layout, halves, row_block)
    x = t if is_experts(layout) else t.unsqueeze(0)
    if layout.endswith("in_out"):
        x = x.mT
    if halves == "interleaved":
        experts, out, inp = x.shape
        x = x.reshape(experts, out // 2, 2, inp).transpose(1, 2)
    units = x.reshape(blocks, rows, cols).contiguous()
    aliases = t.is_contiguous() and units.data_ptr() == t.data_ptr()
    return units, aliases


def from_units(units: Tensor, shape: tuple[int, ...], layout: str = "out_in", halves: str | None = None) -> Tensor:
    """The inverse of :func:`to_units`: ``units`` ``(B, r, c)`` back as a tensor of ``shape`` in ``layout``
    (row blocks need no argument: they are consecutive rows)."""
    experts, out, inp = map_shape(shape, layout)
    x = units.reshape(experts, out, inp)
    if halves == "interleaved":
        x = x.reshape(experts, 2, out // 2, inp).transpose(1, 2).reshape(experts, out, inp)
    if layout.endswith("in_out"):
        x = x.mT
    return x.reshape(shape)


@contextmanager
def units_of(t: Tensor, layout: str = "out_in", halves: str | None = None,
             row_block: int | None = None) -> Iterator[Tensor]:
    """``t`` as its unit batch, to be updated in place; a copy is written back into ``t`` on a normal exit."""
    units, aliases = to_units(t, layout, halves, row_block)
    yield units
    if not aliases:
        t.copy_(from_units(units, tuple(t.shape), layout, halves))
