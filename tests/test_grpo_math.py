"""The demo's GRPO math (pion_rl.demo.grpo) against hand-computed groups and verl's definitions."""

import math

import numpy as np
import pytest
import torch

from pion_rl.demo.grpo import (
    actor_config,
    grpo_advantages,
    grpo_loss,
    outcome_token_rewards,
)


def test_outcome_reward_sits_on_the_last_response_token():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    rewards = outcome_token_rewards(torch.tensor([0.5, 1.0, -2.0]), mask)
    expected = torch.tensor([[0, 0, 0.5, 0], [1.0, 0, 0, 0], [0, 0, 0, -2.0]])
    assert torch.equal(rewards, expected)


def test_all_equal_rewards_in_a_group_give_zero_advantage():
    mask = torch.ones(6, 3)
    advantages = grpo_advantages(torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]), mask, np.array([0, 0, 0, 1, 1, 1]))
    assert torch.equal(advantages, torch.zeros(6, 3))


def test_advantages_are_group_normalised_by_hand():
    # Group 0: rewards (1, 0, 0, 1): mean 1/2, unbiased std sqrt(1/3) -> +-(1/2)/sqrt(1/3) = +-0.8660.
    # Group 1: rewards (1, 0, 0, 0): mean 1/4, unbiased std 1/2 -> 3/2 for the winner, -1/2 for the others.
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    mask = torch.ones(8, 5)
    mask[1, 3:] = 0  # padding after eos gets no advantage
    advantages = grpo_advantages(scores, mask, groups)
    a0 = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    per_sequence = torch.tensor([a0, -a0, -a0, a0, 0.75 / (0.5 + 1e-6), *[-0.25 / (0.5 + 1e-6)] * 3])
    assert torch.allclose(advantages, per_sequence[:, None] * mask, atol=1e-6)
    assert advantages[1, 3:].abs().sum() == 0


def _loss(log_prob, old_log_prob, advantages, ref_log_prob=None, mask=None, coef=0.001):
    log_prob = torch.tensor(log_prob, dtype=torch.float64, requires_grad=True)
    old = torch.tensor(old_log_prob, dtype=torch.float64)
    ref = old.clone() if ref_log_prob is None else torch.tensor(ref_log_prob, dtype=torch.float64)
    adv = torch.tensor(advantages, dtype=torch.float64)
    mask = torch.ones_like(adv) if mask is None else torch.tensor(mask, dtype=torch.float64)
    loss, metrics = grpo_loss(log_prob, old, ref, adv, mask, actor_config(group_size=2, kl_loss_coef=coef))
    loss.backward()
    return loss.item(), log_prob.grad, metrics


def test_on_policy_loss_is_minus_token_mean_advantage_and_its_gradient():
    # ratio 1 everywhere (the demo's single update per rollout): loss = -mean_t(A), dloss/dlogp_t = -A_t / n.
    loss, grad, metrics = _loss([[-1.0, -2.0, -0.5]], [[-1.0, -2.0, -0.5]], [[2.0, 2.0, 2.0]], coef=0.0)
    assert loss == pytest.approx(-2.0)
    assert torch.allclose(grad, torch.full((1, 3), -2.0 / 3, dtype=torch.float64))
    assert metrics["actor/pg_clipfrac"] == 0.0


def test_ratio_is_clipped_at_one_plus_minus_epsilon():
    r_hi, r_lo = 1.5, 0.5  # log-ratios log(1.5), log(0.5); clip range 0.2
    old = [[0.0, 0.0, 0.0, 0.0]]
    new = [[math.log(r_hi), math.log(r_lo), math.log(r_hi), math.log(r_lo)]]
    adv = [[1.0, 1.0, -1.0, -1.0]]
    loss, grad, metrics = _loss(new, old, adv, coef=0.0)
    # A>0: min(r, 1.2)*A -> 1.2 (clipped, no gradient) and 0.5 (unclipped).
    # A<0: max(r, 0.8)*|A| as loss -> 1.5 (unclipped) and 0.8 (clipped, no gradient).
    token_losses = [-1.2, -0.5, 1.5, 0.8]
    assert loss == pytest.approx(sum(token_losses) / 4)
    assert grad[0, 0] == 0 and grad[0, 3] == 0  # clipped tokens pass no gradient
    assert grad[0, 1].item() == pytest.approx(-r_lo / 4) and grad[0, 2].item() == pytest.approx(r_hi / 4)
    assert metrics["actor/pg_clipfrac"] == pytest.approx(0.5)


def test_dual_clip_caps_the_loss_of_negative_advantages_at_three():
    loss, grad, _ = _loss([[math.log(5.0)]], [[0.0]], [[-1.0]], coef=0.0)
    assert loss == pytest.approx(3.0)  # min(5 * 1, clip_ratio_c = 3)
    assert grad.item() == 0


def test_kl_term_is_low_var_kl_times_its_coefficient():
    # low_var_kl (k3) per token: exp(ref - logp) - (ref - logp) - 1, token-mean over the mask.
    logp, ref = [[-1.0, -2.0, -3.0]], [[-1.5, -1.0, -3.0]]
    k3 = [math.exp(r - p) - (r - p) - 1 for p, r in zip(logp[0], ref[0])]
    mask = [[1.0, 1.0, 0.0]]
    loss, _, metrics = _loss(logp, logp, [[0.0, 0.0, 0.0]], ref_log_prob=ref, mask=mask, coef=0.5)
    assert metrics["actor/kl_loss"] == pytest.approx((k3[0] + k3[1]) / 2)
    assert loss == pytest.approx(0.5 * (k3[0] + k3[1]) / 2)
