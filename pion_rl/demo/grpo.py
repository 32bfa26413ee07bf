"""GRPO's math for the demo, delegated to verl's own functions so the demo optimises verl's objective.

Shapes: B sequences (prompts x group size), T response tokens. `response_mask` (B, T) is 1 on the tokens
the policy generated up to and including its eos.
"""

from __future__ import annotations

import numpy as np
import torch
from verl.trainer.ppo import core_algos
from verl.workers.config import ActorConfig


def actor_config(group_size: int, clip_ratio: float = 0.2, kl_loss_coef: float = 0.001) -> ActorConfig:
    """The verl actor settings the loss reads, as in the paper's recipe: vanilla clipped PPO loss, token-mean
    aggregation, KL loss (low_var_kl) against the reference policy, no entropy bonus."""
    return ActorConfig(
        strategy="fsdp",  # required by the dataclass; the demo runs no FSDP
        rollout_n=group_size,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio=clip_ratio,
        clip_ratio_low=clip_ratio,
        clip_ratio_high=clip_ratio,
        use_kl_loss=True,
        kl_loss_coef=kl_loss_coef,
        kl_loss_type="low_var_kl",
        entropy_coeff=0.0,
        loss_agg_mode="token-mean",
    )


def outcome_token_rewards(scores: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """(B,) sequence scores -> (B, T) token-level rewards: the score on each response's last token, as
    verl's reward manager places it."""
    rewards = torch.zeros(response_mask.shape, dtype=torch.float32)
    last = response_mask.sum(-1).clamp(min=1).long() - 1
    rewards[torch.arange(len(scores)), last] = scores.float()
    return rewards


def grpo_advantages(scores: torch.Tensor, response_mask: torch.Tensor, group_ids: np.ndarray) -> torch.Tensor:
    """(B, T) advantages: each score normalised within its group, (r - mean) / (std + 1e-6) with the
    unbiased std, broadcast over the response tokens (verl's `compute_grpo_outcome_advantage`)."""
    advantages, _ = core_algos.compute_grpo_outcome_advantage(
        token_level_rewards=outcome_token_rewards(scores, response_mask),
        response_mask=response_mask.float(),
        index=group_ids,
    )
    return advantages


def grpo_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    ref_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    config: ActorConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """verl's actor loss: clipped policy-gradient loss + kl_loss_coef * low_var_kl(policy || reference),
    both token-mean over the response tokens. Returns the scalar loss and verl-named metrics."""
    mask = response_mask.bool()
    pg_loss, pg_metrics = core_algos.get_policy_loss_fn(config.policy_loss.loss_mode)(
        old_log_prob=old_log_prob,
        log_prob=log_prob,
        advantages=advantages,
        response_mask=mask,
        loss_agg_mode=config.loss_agg_mode,
        config=config,
    )
    kld = core_algos.kl_penalty(logprob=log_prob, ref_logprob=ref_log_prob, kl_penalty=config.kl_loss_type)
    kl_loss = core_algos.agg_loss(loss_mat=kld, loss_mask=mask, loss_agg_mode=config.loss_agg_mode)
    metrics = {**pg_metrics, "actor/pg_loss": pg_loss.item(), "actor/kl_loss": kl_loss.item()}
    return pg_loss + config.kl_loss_coef * kl_loss, metrics
