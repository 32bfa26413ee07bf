"""Build, from a composed recipe config, what verl's workers build at start-up, so a dry run rejects what they would.

verl's ``ActorRolloutRefWorker`` turns ``actor_rollout_ref.actor`` into its config dataclass, whose ``engine``
carries the strategy and whose ``optim`` is the ``FSDPOptimizerConfig`` the engine hands to ``build_optimizer``;
the reward loop loads ``reward.custom_reward_function`` and calls it with ``reward_kwargs``. Here the same
steps run on a few stand-in parameters (an embedding, a q_proj of the model's heads, an MLP matrix, a norm)
instead of the model, and pion-rl's reward checks its options instead of scoring. No GPU, model weights or
data: the model's attention head size comes from its config when that is on this machine, and a model that a
run could not load (a missing directory; an uncached Hub id while offline) is an error, as in the preflight.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import torch
from torch import nn

from pion_rl.optim.param_groups import WholeMatrixAttentionWarning

#: Columns of the stand-in matrices: their routing and options are what is checked, not their size.
_STAND_IN_WIDTH = 8


def build_as_workers(config: Any) -> None:
    """Raise the error a worker would raise when building the actor's optimizer or calling the reward.

    Args:
        config: the composed recipe config (``DictConfig``), as ``verl.trainer.main_ppo`` receives it.
    """
    _build_actor_optimizer(config)
    _check_reward_options(config)


def _build_actor_optimizer(config: Any) -> None:
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.config.optimizer import build_optimizer

    from .optimizer_config import (attention_head_dim, build_optimizer_with_telemetry, check_optimizer_config,
                                   uses_pion_rl)
    from .preflight import model_problem

    actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)  # as ActorRolloutRefWorker.init_model does
    optim = actor.optim
    # NamedParamsFSDPEngine.__init__ checks against the engine's strategy, which verl copies from actor.strategy.
    check_optimizer_config(optim, actor.engine.strategy)
    problem = model_problem(str(config.actor_rollout_ref.model.path))  # the preflight's rule, as a real run meets it
    if problem:
        raise ValueError(problem)
    hf_config = _local_model_config(config.actor_rollout_ref.model)
    if hf_config is None and optim.optimizer == "Pion" and "head_dim" not in (optim.override_optimizer_config or {}):
        print(f"dry run: no config of model {config.actor_rollout_ref.model.path!r} on this machine, so "
              f"Pion's per-head blocks are not checked against its head size", file=sys.stderr)
    # q_proj gets the model's rows when its config is here, so a head_dim that does not split them fails.
    q_rows = 2 * ((optim.override_optimizer_config or {}).get("head_dim") or _STAND_IN_WIDTH)
    if hf_config is not None:
        try:
            q_rows = getattr(hf_config, "num_attention_heads", 2) * attention_head_dim(hf_config)
        except ValueError:
            pass  # not an attention model's config; the stand-in's rows stay
    named = _stand_in_parameters(q_rows)
    with warnings.catch_warnings():  # without the model's config the note above already says q/k/v are unchecked
        warnings.simplefilter("ignore", WholeMatrixAttentionWarning)
        if uses_pion_rl(optim):  # the engine's own sequence: head_dim, telemetry out, build, telemetry
            build_optimizer_with_telemetry(_StandInModule(named), optim, hf_config)
        else:  # every other optimizer gets plain parameters, as in verl
            build_optimizer([p for _, p in named], optim)


class _StandInModule:
    """What :func:`build_optimizer_with_telemetry` reads of a module: its named parameters."""

    def __init__(self, named: list[tuple[str, nn.Parameter]]):
        self._named = named

    def named_parameters(self):
        return iter(self._named)


def _stand_in_parameters(q_rows: int) -> list[tuple[str, nn.Parameter]]:
    """One parameter of each kind the optimizers route differently, named as in a HF decoder."""
    width = _STAND_IN_WIDTH
    shapes = {
        "model.embed_tokens.weight": (2 * width, width),
        "model.layers.0.input_layernorm.weight": (width,),
        "model.layers.0.self_attn.q_proj.weight": (q_rows, width),
        "model.layers.0.mlp.down_proj.weight": (width, 2 * width),
    }
    return [(name, nn.Parameter(torch.zeros(shape))) for name, shape in shapes.items()]


def _local_model_config(model: Any):
    """The model's HF config if it is on this machine (a local directory or the HF cache), else None."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(
            str(model.path), local_files_only=True, trust_remote_code=bool(model.get("trust_remote_code", False))
        )
    except (OSError, ValueError):
        return None


def _check_reward_options(config: Any) -> None:
    from verl.utils.import_utils import load_extern_object

    from pion_rl.reward import check_options, compute_score

    reward_fn = config.reward.get("custom_reward_function") or {}
    if not reward_fn.get("path"):
        return
    # verl.trainer.ppo.reward.get_custom_reward_fn loads it the same way (an unknown path or name fails here).
    function = load_extern_object(module_path=reward_fn.path, object_name=reward_fn.name)
    if function is compute_score:
        check_options(**dict(reward_fn.get("reward_kwargs") or {}))
