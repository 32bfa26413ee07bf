"""One GRPO run of the demo: the warm-started policy trained with one optimizer, logged every step.

Every optimizer sees the same prompts in the same order, the same sampling noise at each step and the
same evaluation noise, so their curves differ only through the optimizer.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from verl.workers.config.optimizer import FSDPOptimizerConfig

import pion_rl
from pion_rl.telemetry import OptimizerTelemetry
from pion_rl.telemetry.monitor import MAX_REL_SV_CHANGE, STEP_S
from pion_rl.verl_plugin.optimizer_config import TELEMETRY_KEY, build_optimizer_with_telemetry

from .config import DemoConfig
from .evaluation import save_policy
from .grpo import actor_config, grpo_advantages, grpo_loss
from .policy import build_policy
from .problems import DATA_SOURCE
from .rollout import response_log_probs, sample_groups
from .tracking import RunTracker, jsonl_path, wandb_dir

RECIPE_OPTIMIZER_DIR = Path(pion_rl.__file__).resolve().parent.parent / "configs" / "optimizer"
#: The optimizer telemetry's metrics are logged as verl logs them, an actor metric `m` as `actor/m`.
ACTOR_PREFIX = "actor/"
SPECTRUM_DRIFT = ACTOR_PREFIX + MAX_REL_SV_CHANGE
OPTIMIZER_STEP_S = ACTOR_PREFIX + STEP_S  # optimizer.step() alone, s
HELDOUT_ACC = f"val-core/{DATA_SOURCE}/acc/mean@{{n}}"  # verl's validation metric name; n = samples


def build_recipe_optimizer(
    model: PreTrainedModel, name: str, lr: float, spectrum_every: int
) -> tuple[torch.optim.Optimizer, OptimizerTelemetry]:
    """The optimizer exactly as the GPU recipe builds it: `configs/optimizer/<name>.yaml` (the recipe's
    `optimizer=<name>` group) -> verl's FSDPOptimizerConfig -> verl's `build_optimizer` with the model
    itself, so pion_rl.optim routes each tensor by what it is (pion_rl.optim.routing); and the
    recipe's optimizer telemetry, with singular values every `spectrum_every` steps."""
    path = RECIPE_OPTIMIZER_DIR / f"{name}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the demo from a pion-rl checkout (make demo)")
    recipe = OmegaConf.to_container(OmegaConf.load(path))
    telemetry = {"enable": True, "spectrum_every": spectrum_every}  # the recipe's block, with the demo's cadence
    recipe["override_optimizer_config"] = {**recipe.get("override_optimizer_config", {}), TELEMETRY_KEY: telemetry}
    config = FSDPOptimizerConfig(lr=lr, **recipe)
    return build_optimizer_with_telemetry(model, config)


@torch.no_grad()
def heldout_accuracy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict], config: DemoConfig
) -> dict[str, float]:
    """avg@k on the held-out problems (k = eval_samples sampled answers each, at the training temperature),
    under verl's validation metric name; evaluation noise is fixed and does not touch the training RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(config.seed + 1)
        rollout = sample_groups(model, tokenizer, rows, config.eval_samples, config.max_new_tokens,
                                config.temperature)
    return {HELDOUT_ACC.format(n=config.eval_samples): float(rollout.correct.mean())}


def prompt_batches(rows: list[dict], config: DemoConfig) -> list[list[dict]]:
    """`steps` batches of `prompts_per_step` training rows: seeded epochs of shuffled rows."""
    rng, order, batches = random.Random(config.seed), [], []
    for _ in range(config.steps):
        if len(order) < config.prompts_per_step:
            order += rng.sample(rows, len(rows))
        batches.append(order[: config.prompts_per_step])
        order = order[config.prompts_per_step :]
    return batches


def run_grpo(
    config: DemoConfig,
    optimizer_name: str,
    warm_state: dict[str, torch.Tensor],
    tokenizer: PreTrainedTokenizerBase,
    train_rows: list[dict],
    heldout_rows: list[dict],
    run_name: str | None = None,
    save: bool = True,
) -> Path:
    """Train the warm-started policy with GRPO and `optimizer_name` for `config.steps` steps; returns the
    run's JSONL, named `run_name` (default: the optimizer's; step 0 holds the warm start's held-out accuracy).
    With `save`, the final policy is written to `<out_dir>/models/<optimizer_name>` for the evaluation."""
    policy, reference = build_policy(config, tokenizer), build_policy(config, tokenizer)
    policy.load_state_dict(warm_state)
    reference.load_state_dict(warm_state)
    reference.requires_grad_(False).eval()
    optimizer, telemetry = build_recipe_optimizer(policy, optimizer_name, config.lr, config.spectrum_every)
    actor = actor_config(config.group_size, config.clip_ratio, config.kl_loss_coef)

    out = config.out_path
    run_name = run_name or optimizer_name
    tracker = RunTracker(run_name, jsonl_path(out, run_name), wandb_dir(out, optimizer_name), vars(config).copy(),
                         config.wandb)
    heldout = heldout_accuracy(policy, tokenizer, heldout_rows, config)
    tracker.log(heldout, step=0)
    # On a terminal a progress bar (stderr); elsewhere (logs, pipes, CI) a line every `log_every` steps.
    bar = tqdm(range(1, config.steps + 1), desc=f"GRPO {optimizer_name:>5}", file=sys.stderr, dynamic_ncols=True,
               disable=None)
    held_at = 0
    for step, rows in zip(bar, prompt_batches(train_rows, config)):
        started = time.perf_counter()
        with torch.random.fork_rng():
            torch.manual_seed(config.seed * 100_003 + step)  # same sampling noise per step for every optimizer
            rollout = sample_groups(policy, tokenizer, rows, config.group_size, config.max_new_tokens,
                                    config.temperature)
        advantages = grpo_advantages(rollout.scores, rollout.response_mask, rollout.group_ids)
        with torch.no_grad():
            ref_log_prob = response_log_probs(reference, rollout)
        policy.train()
        log_prob = response_log_probs(policy, rollout)
        # One optimizer step per RL step (ppo_mini_batch_size = train_batch_size): the rollout policy is the
        # current one, so old_log_prob equals log_prob's value and the PPO ratio starts at exactly 1.
        loss, metrics = grpo_loss(log_prob, log_prob.detach(), ref_log_prob, advantages, rollout.response_mask, actor)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), config.grad_clip)
        optimizer.step()

        metrics.update({
            "critic/score/mean": float(rollout.scores.mean()),
            "train/acc/mean": float(rollout.correct.mean()),
            "response_length/mean": float(rollout.response_mask.sum(-1).float().mean()),
            "actor/grad_norm": float(grad_norm),
            **{ACTOR_PREFIX + name: value for name, value in telemetry.pop_metrics().items()},
        })
        if step % config.eval_every == 0 or step == config.steps:
            heldout = heldout_accuracy(policy, tokenizer, heldout_rows, config)
            metrics.update(heldout)
            held_at = step
        metrics["timing_s/step"] = time.perf_counter() - started
        tracker.log(metrics, step)
        reward, acc, kl = metrics["critic/score/mean"], next(iter(heldout.values())), metrics["actor/kl_loss"]
        step_ms = 1e3 * metrics[OPTIMIZER_STEP_S]
        if bar.disable:
            if step % config.log_every == 0 or step == config.steps:
                print(f"GRPO {optimizer_name} step {step}/{config.steps}: reward {reward:.3f}, held-out acc "
                      f"{acc:.3f} (step {held_at}), KL {kl:.2e}, optimizer step {step_ms:.1f} ms", flush=True)
        else:
            bar.set_postfix(reward=f"{reward:.2f}", heldout=f"{acc:.3f}", kl=f"{kl:.1e}", opt_ms=f"{step_ms:.1f}")
    bar.close()
    tracker.finish()
    if save:
        save_policy(config, optimizer_name, policy, tokenizer)
    return Path(tracker.file_logger.filepath)

