"""The two things in verl 0.9.1 no config reaches on a CPU-only machine, patched from outside.

Each patch first checks that its target still has the exact shape it was written against; if a verl or torch
upgrade changed it, :func:`apply_patches` raises :class:`PatchTargetChanged` with one line naming the patch,
so a run fails at start instead of training on a silently different path.

- ``gloo-backend``: ``verl.utils.distributed`` builds ``"cpu:gloo,<device>:<backend>"``, which on the CPU
  platform is ``"cpu:gloo,cpu:gloo"`` and torch rejects ("Duplicate device type cpu"). The patch drops repeated
  device entries in the backend string ``torch.distributed.init_process_group`` receives.
- ``unpinned-offload``: the FSDP2 engine builds the ref's ``CPUOffloadPolicy(pin_memory=True)`` (pinning needs
  an accelerator). The call site passes the keyword itself, so the patch replaces the class the engine module
  refers to by one whose ``pin_memory`` is always False.
"""

from __future__ import annotations

import functools
import inspect
import types
from dataclasses import dataclass, fields, is_dataclass


class PatchTargetChanged(RuntimeError):
    """A patch's target in verl or torch no longer has the shape the patch was written for."""


def _changed(patch: str, what: str) -> PatchTargetChanged:
    return PatchTargetChanged(
        f"pion_rl.verl_plugin.cpu patch {patch!r} cannot apply: {what}; pion-rl's CPU path is written for "
        f"verl 0.9.1 (`make setup` installs it with torch 2.13.0)"
    )


def dedupe_backend(backend: str | None) -> str | None:
    """``"cpu:gloo,cpu:gloo"`` -> ``"cpu:gloo"``: the first entry for each device; anything else unchanged."""
    if not isinstance(backend, str) or "," not in backend:
        return backend
    kept: dict[str, str] = {}
    for entry in backend.split(","):
        kept.setdefault(entry.split(":", 1)[0], entry)
    return ",".join(kept.values())


def patch_gloo_backend(distributed: types.ModuleType) -> None:
    """Make ``torch.distributed.init_process_group`` drop repeated device entries of its backend string.

    Process-wide, because ``verl.utils.distributed`` imports torch inside the function that calls it; the
    wrapper changes only a string torch would reject, so every other caller sees torch's behaviour.
    """
    import torch.distributed

    name = "gloo-backend"
    init = torch.distributed.init_process_group
    if getattr(init, "_pion_rl_patch", None) == name:
        return
    if "cpu:gloo,{get_device_name()}:{get_nccl_backend()}" not in inspect.getsource(distributed):
        raise _changed(name, f"{distributed.__name__} no longer builds the backend string "
                             f"'cpu:gloo,{{get_device_name()}}:{{get_nccl_backend()}}'")
    if "backend" not in inspect.signature(init).parameters:
        raise _changed(name, "torch.distributed.init_process_group has no 'backend' parameter")

    @functools.wraps(init)
    def init_process_group(*args, backend=None, **kwargs):
        return init(*args, backend=dedupe_backend(backend), **kwargs)

    init_process_group._pion_rl_patch = name
    torch.distributed.init_process_group = init_process_group


def patch_unpinned_offload(transformer_impl: types.ModuleType) -> None:
    """Replace ``transformer_impl.CPUOffloadPolicy`` (torch's FSDP2 dataclass) by a subclass that never pins."""
    name = "unpinned-offload"
    policy = getattr(transformer_impl, "CPUOffloadPolicy", None)
    if getattr(policy, "_pion_rl_patch", None) == name:
        return
    if policy is None or not is_dataclass(policy) or "pin_memory" not in {f.name for f in fields(policy)} \
            or "CPUOffloadPolicy(pin_memory=True)" not in inspect.getsource(transformer_impl):
        raise _changed(name, f"{transformer_impl.__name__} no longer builds torch's dataclass "
                             f"CPUOffloadPolicy(pin_memory=True)")

    @dataclass
    class UnpinnedCPUOffloadPolicy(policy):
        _pion_rl_patch = name

        def __post_init__(self):
            self.pin_memory = False  # page-locked memory needs an accelerator

    UnpinnedCPUOffloadPolicy.__name__ = UnpinnedCPUOffloadPolicy.__qualname__ = "CPUOffloadPolicy"
    transformer_impl.CPUOffloadPolicy = UnpinnedCPUOffloadPolicy


def apply_patches() -> None:
    """Apply both patches (idempotent); raises PatchTargetChanged naming the first whose target changed."""
    from verl.utils import distributed
    from verl.workers.engine.fsdp import transformer_impl

    patch_gloo_backend(distributed)
    patch_unpinned_offload(transformer_impl)
