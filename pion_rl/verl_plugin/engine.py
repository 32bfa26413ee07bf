"""verl's FSDP engine, building pion-rl optimizers from ``named_parameters()``.

verl 0.9.1 builds the actor (and ref) of every trainer path through ``EngineRegistry`` (the v1 trainer and
``main_ppo_v0`` both use ``verl.workers.engine_workers.ActorRolloutRefWorker``), and
``FSDPEngine._build_optimizer`` passes ``module.parameters()``: no names, so Pion / Muon could not tell an
embedding from a hidden matrix. Importing this module registers :class:`NamedParamsFSDPEngine` for the
``fsdp`` and ``fsdp2`` backends of language models on this process's platform. The registry prefers a
(device, vendor) registration over verl's device-only default, so the engine replaces verl's only here.
verl imports the module in each worker through ``actor_rollout_ref.model.external_lib`` (the recipes set it),
before the actor engine is created.

Only ``optimizer_impl=pion_rl.optim`` changes anything; every other optimizer goes through verl's own method.
"""

from __future__ import annotations

import os

from verl.utils.device import get_device_name, get_vendor
from verl.workers.config.optimizer import build_optimizer
from verl.workers.engine import EngineRegistry, FSDPEngineWithLMHead

from .optimizer_config import check_optimizer_config, uses_pion_rl, with_head_dim


def _platform() -> tuple[str, str]:
    # The (device, vendor) key EngineRegistry.get_engine_cls looks up first, env overrides included.
    return os.getenv("VERL_ENGINE_DEVICE") or get_device_name(), os.getenv("VERL_ENGINE_VENDOR") or get_vendor()


_DEVICE, _VENDOR = _platform()


@EngineRegistry.register(model_type="language_model", backend=["fsdp", "fsdp2"], device=_DEVICE, vendor=_VENDOR)
class NamedParamsFSDPEngine(FSDPEngineWithLMHead):
    """``FSDPEngineWithLMHead`` whose optimizer gets parameter names when it comes from ``pion_rl.optim``."""

    def __init__(self, model_config, engine_config, optimizer_config, checkpoint_config):
        # Checked before the model is loaded, so a wrong strategy fails at start-up, not after minutes.
        if not engine_config.forward_only:
            check_optimizer_config(optimizer_config, engine_config.strategy)
        super().__init__(model_config, engine_config, optimizer_config, checkpoint_config)

    def _build_optimizer(self, module):
        if not uses_pion_rl(self.optimizer_config):
            return super()._build_optimizer(module)
        config = with_head_dim(self.optimizer_config, self.model_config.hf_config)
        return build_optimizer(module.named_parameters(), config)
