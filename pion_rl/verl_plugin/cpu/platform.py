"""verl's platform for a machine with no accelerator: torch on CPU, gloo, no memory pools.

verl 0.9.1 reaches the device only through ``verl.plugin.platform`` (``verl.utils.device``). It has no CPU
platform, and with no GPU its detection falls back to "nvidia" (``cuda``, ``nccl``). :class:`PlatformCPU` is
registered as ``cpu`` and chosen with ``VERL_PLATFORM=cpu``.

Ray: verl's placement bundles ask for one unit of ``ray_resource_name()`` per worker and its resource check
counts only GPU/NPU, so the platform names ``GPU`` and the run declares as many as it has workers
(``+ray_kwargs.ray_init.num_gpus=<workers>``): Ray then only counts them, no device is touched.
"""

from __future__ import annotations

import contextlib
import types

import psutil
import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry

NAME = "cpu"  # VERL_PLATFORM value and the device name verl's registries are keyed by


def _cpu_device_module() -> types.ModuleType:
    """``torch.cpu`` with what verl calls on ``get_torch_device()`` that it lacks: the generator's RNG state,
    cache and memory queries (no caching allocator on CPU: nothing to free, 0 bytes held in pools)."""
    module = types.ModuleType("pion_rl_cpu_device")
    module.__dict__.update({k: v for k, v in vars(torch.cpu).items() if not k.startswith("__")})
    no_op = lambda *args, **kwargs: None  # noqa: E731
    zero = lambda *args, **kwargs: 0  # noqa: E731
    module.empty_cache = module.ipc_collect = module.set_per_process_memory_fraction = no_op
    module.memory_allocated = module.memory_reserved = zero
    module.max_memory_allocated = module.max_memory_reserved = zero
    module.mem_get_info = lambda *args: (psutil.virtual_memory().available, psutil.virtual_memory().total)
    module.get_rng_state = lambda *args: torch.get_rng_state()
    module.set_rng_state = lambda state, *args: torch.set_rng_state(state)
    module.manual_seed = module.manual_seed_all = torch.manual_seed
    module.get_device_name = lambda *args: "cpu"
    return module


@PlatformRegistry.register(platform=NAME)
class PlatformCPU(PlatformBase):
    """torch on CPU: device ``cpu``, backend ``gloo``; profiling and allocator settings are no-ops."""

    _device_module = _cpu_device_module()

    @property
    def device_name(self) -> str:
        return NAME

    @property
    def vendor_name(self) -> str:
        return NAME

    @property
    def device_module(self) -> types.ModuleType:
        return self._device_module

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check=False) -> bool:
        # Never auto-detected: a GPU machine must keep verl's own platform; VERL_PLATFORM=cpu selects this one.
        return False

    def current_device(self) -> str:
        # verl passes get_device_id() to .to(device=...): an int there means an accelerator, so this returns
        # what torch.cpu.current_device() returns.
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        pass

    def synchronize(self, device_index=None) -> None:
        pass

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        pass

    def empty_cache(self) -> None:
        pass

    def get_device_capability(self, device_index: int = 0):
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"  # what Ray sets for the declared GPU resource; nothing reads it on CPU

    @contextlib.contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        pass

    def profiler_stop(self) -> None:
        pass

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self):
        return None
