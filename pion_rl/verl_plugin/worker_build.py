"""Build, from a composed recipe config, what verl's workers build at start-up, so a dry run rejects what they would.

verl's ``ActorRolloutRefWorker`` turns ``actor_rollout_ref.actor`` into its config dataclass, whose ``engine``
carries the strategy and whose ``optim`` is the ``FSDPOptimizerConfig`` the engine hands to ``build_optimizer``;
the reward loop loads ``reward.custom_reward_function`` and calls it with ``reward_kwargs``. Here the same
steps run on a stand-in module (an embedding, a q_proj of the model's heads, an MLP matrix, a norm, and the
model's config) through the engine's own optimizer sequence, and pion-rl's reward checks its options instead of
scoring. No GPU, model weights or data: the model's attention head size comes from its config when that is on
this machine, and a model that a run could not load (a missing directory; an uncached Hub id while offline) is
an error, as in the preflight.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

from torch import nn

from pion_rl.optim.routing import WholeMatrixAttentionWarning, attention_head_size

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

    from .optimizer_config import build_optimizer_with_telemetry, check_optimizer_config, uses_pion_rl
    from .preflight import model_problem

    actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)  # as ActorRolloutRefWorker.init_model does
    optim = actor.optim
    # NamedParamsFSDPEngine.__init__ checks against the engine's strategy, which verl copies from actor.strategy.
    check_optimizer_config(optim, actor.engine.strategy)
    problem = model_problem(str(config.actor_rollout_ref.model.path))  # the preflight's rule, as a real run meets it
    if problem:
        raise ValueError(problem)
    hf_config = _local_model_config(config.actor_rollout_ref.model)
    head_dim = (optim.override_optimizer_config or {}).get("head_dim")
    if uses_pion_rl(optim) and hf_config is None and optim.optimizer == "Pion" and not head_dim:
        print(f"dry run: no config of model {config.actor_rollout_ref.model.path!r} on this machine, so "
              f"Pion's per-head blocks are not checked against its head size", file=sys.stderr)
    module = _StandInDecoder(hf_config, head_dim)
    # The engine's _build_optimizer: pion-rl's sequence for pion_rl.optim, verl's own for any other optimizer.
    with warnings.catch_warnings():  # without the model's config the note above already says q/k/v are unchecked
        warnings.simplefilter("ignore", WholeMatrixAttentionWarning)
        if uses_pion_rl(optim):
            build_optimizer_with_telemetry(module, optim)
        else:
            build_optimizer(module.parameters(), optim)


class _StandInDecoder(nn.Module):
    """One module of each kind the optimizers route differently, named and typed as in a HF decoder, with the
    model's config: q_proj has the model's attention rows (heads x head size) when its config is here, so a
    head_dim that does not split them fails as it would in a worker. Weights are ones: Pion refuses an all-zero
    matrix it could never move."""

    def __init__(self, hf_config: Any, head_dim: int | None):
        super().__init__()
        width = _STAND_IN_WIDTH
        head_size = attention_head_size(hf_config) if hf_config is not None else None
        q_rows = getattr(hf_config, "num_attention_heads", 2) * head_size if head_size else 2 * (head_dim or width)
        self.config = hf_config
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(2 * width, width)
        layer = nn.Module()
        layer.input_layernorm = nn.RMSNorm(width)
        layer.self_attn = nn.Module()
        layer.self_attn.q_proj = nn.Linear(width, q_rows, bias=False)
        layer.mlp = nn.Module()
        layer.mlp.down_proj = nn.Linear(2 * width, width, bias=False)
        self.model.layers = nn.ModuleList([layer])
        for p in self.parameters():
            nn.init.ones_(p)


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
