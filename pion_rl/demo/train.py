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
from verl.workers.config.optimizer import FSDPOptimizerConfig, build_optimizer

import pion_rl
from pion_rl.optim import param_groups
from pion_rl.verl_plugin.optimizer_config import with_head_dim

from .config import DemoConfig
from .evaluation import save_policy
from .grpo import actor_config, grpo_advantages, grpo_loss
from .policy import build_policy
from .problems import DATA_SOURCE
from .rollout import response_log_probs, sample_groups
from .tracking import RunTracker, jsonl_path, wandb_dir

RECIPE_OPTIMIZER_DIR = Path(pion_rl.__file__).resolve().parent.parent / "configs" / "optimizer"
SPECTRUM_DRIFT = "spectrum/max_rel_change"
HELDOUT_ACC = f"val-core/{DATA_SOURCE}/acc/mean@{{n}}"  # verl's validation metric name; n = samples


def build_recipe_optimizer(model: PreTrainedModel, name: str, lr: float) -> torch.optim.Optimizer:
    """The optimizer exactly as the GPU recipe builds it: `configs/optimizer/<name>.yaml` (the recipe's
    `optimizer=<name>` group) -> verl's FSDPOptimizerConfig -> the plugin's head_dim -> verl's
    `build_optimizer(model.named_parameters(), ...)`, so pion_rl.optim routes the parameters by name."""
    path = RECIPE_OPTIMIZER_DIR / f"{name}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the demo from a pion-rl checkout (make demo)")
    config = FSDPOptimizerConfig(lr=lr, **OmegaConf.to_container(OmegaConf.load(path)))
    return build_optimizer(model.named_parameters(), with_head_dim(config, model.config))


def spectral_units(model: PreTrainedModel, head_dim: int) -> dict[str, int | None]:
    """The matrices Pion rotates, with the rows per independently rotated block (a head for q/k/v):
    name -> row_block (None for a whole matrix). Used for every optimizer so the spectra compare."""
    return {
        name: group.get("row_block")
        for group in param_groups(model, optimizer="pion", head_dim=head_dim)
        if group["algorithm"] == "pion"
        for name in group["param_names"]
    }


def block_singular_values(weight: torch.Tensor, row_block: int | None) -> torch.Tensor:
    """(blocks, k) singular values of each row block of a (d_out, d_in) weight, in fp64."""
    blocks = weight.detach().double()
    blocks = blocks.reshape(-1, row_block, blocks.shape[1]) if row_block else blocks[None]
    return torch.linalg.svdvals(blocks)


def spectra(model: PreTrainedModel, units: dict[str, int | None]) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {name: block_singular_values(params[name], row_block) for name, row_block in units.items()}


def spectral_metrics(now: dict[str, torch.Tensor], start: dict[str, torch.Tensor], shown: list[str]) -> dict:
    """Largest singular value of the `shown` matrices, and the largest relative change of any singular
    value of any unit since the start (|s_i(t) - s_i(0)| / s_max(0)): ~0 under Pion, O(lr * steps) else."""
    drift = max(float(((now[n] - start[n]).abs().amax(-1) / start[n].amax(-1)).max()) for n in now)
    metrics = {f"spectral_norm/{_short(n)}": float(now[n].amax()) for n in shown}
    metrics[SPECTRUM_DRIFT] = drift
    return metrics


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
    optimizer = build_recipe_optimizer(policy, optimizer_name, config.lr)
    actor = actor_config(config.group_size, config.clip_ratio, config.kl_loss_coef)
    units = spectral_units(policy, config.head_dim)
    shown = [next(n for n in units if "q_proj" in n), next(n for n in units if "down_proj" in n)]
    start_spectra = spectra(policy, units)

    out = config.out_path
    run_name = run_name or optimizer_name
    tracker = RunTracker(run_name, jsonl_path(out, run_name), wandb_dir(out, optimizer_name), vars(config).copy(),
                         config.wandb)
    heldout = heldout_accuracy(policy, tokenizer, heldout_rows, config)
    tracker.log({**heldout, **spectral_metrics(start_spectra, start_spectra, shown)}, step=0)
    bar = tqdm(range(1, config.steps + 1), desc=f"GRPO {optimizer_name:>5}", file=sys.stderr, dynamic_ncols=True)
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
            **spectral_metrics(spectra(policy, units), start_spectra, shown),
        })
        if step % config.eval_every == 0 or step == config.steps:
            heldout = heldout_accuracy(policy, tokenizer, heldout_rows, config)
            metrics.update(heldout)
        metrics["timing_s/step"] = time.perf_counter() - started
        tracker.log(metrics, step)
        bar.set_postfix(reward=f"{metrics['critic/score/mean']:.2f}", heldout=f"{next(iter(heldout.values())):.3f}",
                        kl=f"{metrics['actor/kl_loss']:.4f}", sv_drift=f"{metrics[SPECTRUM_DRIFT]:.1e}")
    bar.close()
    tracker.finish()
    if save:
        save_policy(config, optimizer_name, policy, tokenizer)
    return Path(tracker.file_logger.filepath)


def _short(name: str) -> str:
    return name.removeprefix("model.").removesuffix(".weight")
