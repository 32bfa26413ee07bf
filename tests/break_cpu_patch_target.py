"""Imported before pion_rl.verl_plugin.cpu (VERL_USE_EXTERNAL_MODULES order) to simulate a verl or torch upgrade
that changed one patch target: BREAK_CPU_PATCH_TARGET names which (see pion_rl/verl_plugin/cpu/patches.py)."""

import importlib.util
import os
from pathlib import Path

import torch.distributed

# verl's engine modules read the platform when imported: register the CPU one first, from its file, so that the
# plugin package (whose import applies the patches) is imported only after the target is broken.
_platform = Path(__file__).resolve().parents[1] / "pion_rl" / "verl_plugin" / "cpu" / "platform.py"
_spec = importlib.util.spec_from_file_location("cpu_platform_for_the_test", _platform)
_spec.loader.exec_module(importlib.util.module_from_spec(_spec))

from verl.workers.engine.fsdp import transformer_impl  # noqa: E402
from verl.workers.rollout import base  # noqa: E402

target = os.environ["BREAK_CPU_PATCH_TARGET"]
if target == "gloo-backend":
    def init_process_group(init_method=None, **kwargs):  # a torch whose entry point lost its backend argument
        raise AssertionError("never called")

    torch.distributed.init_process_group = init_process_group
elif target == "unpinned-offload":
    del transformer_impl.CPUOffloadPolicy
elif target == "rollout-table":
    del base._ROLLOUT_REGISTRY
else:
    raise ValueError(f"unknown BREAK_CPU_PATCH_TARGET={target!r}")
