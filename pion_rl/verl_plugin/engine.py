"""verl's FSDP engine, building pion-rl optimizers from ``named_parameters()``.

verl 0.9.1 builds the actor (and ref) of every trainer path through ``EngineRegistry`` (the v1 trainer and
``main_ppo_v0`` both use ``verl.workers.engine_workers.ActorRolloutRefWorker``), and
``FSDPEngine._build_optimizer`` passes ``module.parameters()``: no names, so Pion / Muon could not tell an
embedding from a hidden matrix. Importing this module registers :class:`NamedParamsFSDPEngine` for the
``fsdp`` and ``fsdp2`` backends of language models on this process's platform, and
:class:`NamedParamsFSDPValueEngine` for value models (verl's PPO critic, ``critic.optim``). The registry prefers a
(device, vendor) registration over verl's device-only default, so the engine replaces verl's only here.
verl imports the module in each worker through ``actor_rollout_ref.model.external_lib`` (the recipes set it),
before the actor engine is created.

Only ``optimizer_impl=pion_rl.optim`` changes anything; every other optimizer goes through verl's own method.

Telemetry: with ``override_optimizer_config.telemetry`` (on in the recipes) the engine attaches
:class:`pion_rl.telemetry.OptimizerTelemetry` to the optimizer and adds its ``optim/*`` numbers to the metrics
``train_batch`` returns, next to verl's ``grad_norm``; verl's worker and trainer then log them as
``actor/optim/*`` with every actor metric.
"""

from __future__ import annotations

import logging
import os

from verl.utils.device import get_device_name, get_vendor
from verl.utils.metric import Metric
from verl.workers.engine import EngineRegistry, FSDPEngineWithLMHead
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithValueHead

from pion_rl.telemetry.monitor import REDUCTIONS

from .optimizer_config import ACTOR_OPTIM, build_optimizer_with_telemetry, check_optimizer_config, uses_pion_rl


def _platform() -> tuple[str, str]:
    # The (device, vendor) key EngineRegistry.get_engine_cls looks up first, env overrides included.
    return os.getenv("VERL_ENGINE_DEVICE") or get_device_name(), os.getenv("VERL_ENGINE_VENDOR") or get_vendor()


_DEVICE, _VENDOR = _platform()

# The routing table (pion_rl.optim.param_groups logs it at optimizer construction) goes to every worker's log.
_routing_log = logging.getLogger("pion_rl.optim.routing")
if not _routing_log.handlers:
    _routing_log.addHandler(logging.StreamHandler())
    _routing_log.setLevel(logging.INFO)


class _PionRLOptimizer:
    """What pion-rl's engines add to verl's: the optimizer from ``pion_rl.optim`` gets the module (routed by what
    each tensor is, :mod:`pion_rl.optim.routing`), and ``train_batch`` metrics carry its telemetry."""

    #: Where this engine's optimizer config sits in verl's trainer config: what its errors name.
    optim_section = ACTOR_OPTIM

    def __init__(self, model_config, engine_config, optimizer_config, checkpoint_config):
        # Checked before the model is loaded, so a wrong strategy fails at start-up, not after minutes.
        if not engine_config.forward_only:
            check_optimizer_config(optimizer_config, engine_config.strategy, self.optim_section)
        self.telemetry = None
        super().__init__(model_config, engine_config, optimizer_config, checkpoint_config)

    def _build_optimizer(self, module):
        if not uses_pion_rl(self.optimizer_config):
            return super()._build_optimizer(module)
        optimizer, self.telemetry = build_optimizer_with_telemetry(module, self.optimizer_config)
        return optimizer

    def train_batch(self, data, loss_function):
        outputs = super().train_batch(data, loss_function)
        metrics = self.optimizer_metrics()
        if metrics and self.is_mp_src_rank_with_outputs():
            outputs["metrics"].update(metrics)
        return outputs

    def optimizer_metrics(self) -> dict[str, Metric]:
        """The telemetry of the optimizer step just taken, as verl metrics (``{}`` without telemetry or step).

        Every rank holds the same numbers, so verl's aggregation over data-parallel ranks keeps them; over
        several mini-batches of one RL step each combines as its telemetry declares (``REDUCTIONS``).
        """
        if self.telemetry is None:
            return {}
        return {name: Metric(REDUCTIONS[name], value) for name, value in self.telemetry.pop_metrics().items()}


@EngineRegistry.register(model_type="language_model", backend=["fsdp", "fsdp2"], device=_DEVICE, vendor=_VENDOR)
class NamedParamsFSDPEngine(_PionRLOptimizer, FSDPEngineWithLMHead):
    """verl's actor (and ref) engine with pion-rl's optimizer building."""


@EngineRegistry.register(model_type="value_model", backend=["fsdp", "fsdp2"], device=_DEVICE, vendor=_VENDOR)
class NamedParamsFSDPValueEngine(_PionRLOptimizer, FSDPEngineWithValueHead):
    """verl's PPO critic engine with pion-rl's optimizer building (``critic.optim.optimizer_impl=pion_rl.optim``);
    the value head (``score``, 1 x hidden) is a readout and goes to AdamW."""

    optim_section = "critic.optim"
