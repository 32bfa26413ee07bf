"""Rules for verl's optimizer config (the actor's ``actor_rollout_ref.actor.optim``, the critic's ``critic.optim``)
when it selects pion-rl.

Plain functions on verl's ``FSDPOptimizerConfig`` (or the equivalent DictConfig): the engine applies them
when it builds the optimizer, and ``pion_rl.verl_plugin.compose`` applies them to a dry-run config, so a bad
config fails the same way before anything is launched.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import replace
from typing import Any

#: ``optimizer_impl`` value that selects pion-rl's optimizers.
PION_RL_IMPL = "pion_rl.optim"
#: Optimizers under :data:`PION_RL_IMPL`; all of them are built from ``named_parameters()``.
PION_RL_OPTIMIZERS = ("Pion", "Muon", "AdamW")
#: The ones that update whole matrices, so they need FSDP2's DTensor parameters (FSDP1 hands 1-D flat shards).
MATRIX_OPTIMIZERS = ("Pion", "Muon")
#: Entry of ``override_optimizer_config`` holding the telemetry settings: read by the plugin, never passed to the
#: optimizer (verl's ``FSDPOptimizerConfig`` takes no new keys, its ``override_optimizer_config`` is a free dict).
TELEMETRY_KEY = "telemetry"
#: Telemetry settings and their defaults (see :class:`pion_rl.telemetry.OptimizerTelemetry`).
TELEMETRY_DEFAULTS = {"enable": True, "spectrum_every": 10}
#: Where the actor's optimizer config sits in verl's trainer config (the critic's is ``critic.optim``).
ACTOR_OPTIM = "actor_rollout_ref.actor.optim"


def uses_pion_rl(optim_config: Any) -> bool:
    """True when the optimizer config selects ``optimizer_impl=pion_rl.optim`` (the only case the plugin changes)."""
    return optim_config.get("optimizer_impl") == PION_RL_IMPL


def check_optimizer_config(optim_config: Any, strategy: str, section: str = ACTOR_OPTIM) -> None:
    """Raise ValueError if a pion-rl optimizer is misnamed, given an option it does not take
    (``override_optimizer_config``), or cannot run under ``strategy``.

    Args:
        optim_config: verl's ``FSDPOptimizerConfig`` or the ``actor_rollout_ref.actor.optim`` DictConfig.
        strategy: the engine's strategy ("fsdp", "fsdp2", ...), ``actor_rollout_ref.actor.strategy`` for the actor.
        section: where ``optim_config`` sits in the trainer config, named in the errors.
    """
    if not uses_pion_rl(optim_config):
        return
    name = optim_config.get("optimizer")
    if name not in PION_RL_OPTIMIZERS:
        raise ValueError(
            f"{section}.optimizer={name!r} is not a pion-rl optimizer; with "
            f"optimizer_impl={PION_RL_IMPL} use one of {', '.join(PION_RL_OPTIMIZERS)} "
            f"(or the recipe group: optimizer=pion|muon|adamw)"
        )
    # What override_optimizer_config can set: the constructor's options, less the objects the engine passes
    # (params, process_group) and what verl's build_optimizer passes from the optim config's own keys.
    from_optim = {"lr", "weight_decay"} | ({"betas"} if "adam" in name.lower() else set())
    options = [o for o in inspect.signature(getattr(importlib.import_module(PION_RL_IMPL), name)).parameters
               if o not in {"params", "process_group"} | from_optim]
    telemetry_settings(optim_config, section)
    unknown = sorted(set(optim_config.get("override_optimizer_config") or {}) - set(options) - {TELEMETRY_KEY})
    if unknown:
        elsewhere = sorted(from_optim & set(unknown))
        raise ValueError(
            f"{section}.override_optimizer_config has option(s) {unknown} that {name} does "
            f"not take there; it takes {', '.join(options)}"
            + "".join(f"; set {key} as {section}.{key}" for key in elsewhere)
        )
    strategy_key = section.rsplit(".", 1)[0] + ".strategy"  # the actor's or the critic's strategy
    if name in MATRIX_OPTIMIZERS and strategy != "fsdp2":
        raise ValueError(
            f"{name} updates whole 2-D weight matrices, but {strategy_key}={strategy!r} does not "
            f"hand the optimizer 2-D parameters (FSDP1 flattens them into 1-D shards); "
            f"set {strategy_key}=fsdp2"
        )


def telemetry_settings(optim_config: Any, section: str = ACTOR_OPTIM) -> dict[str, Any] | None:
    """The telemetry settings under ``override_optimizer_config.telemetry`` with defaults filled in, or None when
    ``enable`` is false or the entry is absent. Raises ValueError for an unknown key or a bad value."""
    given = (optim_config.get("override_optimizer_config") or {}).get(TELEMETRY_KEY)
    if given is None:
        return None
    unknown = sorted(set(given) - set(TELEMETRY_DEFAULTS))
    if unknown:
        raise ValueError(f"{section}.override_optimizer_config.{TELEMETRY_KEY} has unknown "
                         f"key(s) {unknown}; valid keys: {', '.join(TELEMETRY_DEFAULTS)}")
    settings = {**TELEMETRY_DEFAULTS, **given}
    every = settings["spectrum_every"]
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise ValueError(f"{section}.override_optimizer_config.{TELEMETRY_KEY}.spectrum_every "
                         f"must be an int >= 0 (0 turns singular values off), got {every!r}")
    return {k: v for k, v in settings.items() if k != "enable"} if settings["enable"] else None


def without_telemetry(optim_config: Any) -> Any:
    """``optim_config`` without the telemetry entry, which is the plugin's and no optimizer's option."""
    overrides = dict(optim_config.override_optimizer_config or {})
    if TELEMETRY_KEY not in overrides:
        return optim_config
    overrides.pop(TELEMETRY_KEY)
    return replace(optim_config, override_optimizer_config=overrides or None)


def build_optimizer_with_telemetry(module: Any, optim_config: Any):
    """``(optimizer, telemetry or None)`` for a ``pion_rl.optim`` config, as the engine and the demo build them.

    The optimizer comes from verl's ``build_optimizer`` with the telemetry entry taken out: Pion and Muon get
    the module itself, so each tensor is routed by what it is and the head size and expert layout come from
    the model's config (:mod:`pion_rl.optim.routing`); AdamW gets ``module.named_parameters()``. The telemetry
    (:class:`pion_rl.telemetry.OptimizerTelemetry`) measures q/k/v per head of the same size for every optimizer.
    """
    from verl.workers.config.optimizer import build_optimizer

    from pion_rl.telemetry import OptimizerTelemetry

    settings = telemetry_settings(optim_config)
    config = without_telemetry(optim_config)
    params = module if config.optimizer in MATRIX_OPTIMIZERS else module.named_parameters()
    optimizer = build_optimizer(params, config)
    if settings is None:
        return optimizer, None
    head_dim = (config.override_optimizer_config or {}).get("head_dim")
    return optimizer, OptimizerTelemetry(optimizer, module, head_dim=head_dim, **settings)
