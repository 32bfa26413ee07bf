"""The demo's settings and its `key=value` command line (the override words the GPU recipes use)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

OPTIMIZERS = ("adamw", "muon", "pion")


@dataclass
class DemoConfig:
    """Everything a demo run depends on. Defaults are the ~10-minute, 2-core `make demo`."""

    optimizer: str = "all"  # adamw | muon | pion | all (all three, then the comparison)
    out_dir: str = "outputs/demo"
    seed: int = 0
    # Policy: a tiny Qwen3 over the byte-level tokenizer.
    hidden_size: int = 64
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 16
    rope_theta: float = 10000.0
    # Supervised warm start (cached under out_dir/cache, keyed by every field it depends on).
    warm_start_steps: int = 350
    warm_start_batch: int = 64
    warm_start_lr: float = 5e-3
    # GRPO (the spec's recipe at demo scale: one optimizer step per RL step, KL loss, clip 1.0).
    steps: int = 250
    prompts_per_step: int = 16
    group_size: int = 8
    max_new_tokens: int = 16
    temperature: float = 1.0
    lr: float = 3e-4
    clip_ratio: float = 0.2
    kl_loss_coef: float = 0.001
    grad_clip: float = 1.0
    weight_decay: float = 0.01
    # Optimizer telemetry (actor/optim/*, as the GPU recipes log it): singular values every this many steps.
    spectrum_every: int = 10
    # Held-out evaluation: mean accuracy over `eval_samples` sampled answers per problem (avg@k).
    eval_every: int = 10
    eval_problems: int = 128
    eval_samples: int = 4
    threads: int = 2
    wandb: str = "auto"  # auto (online if WANDB_API_KEY is set, else offline) | online | offline | disabled

    def optimizers(self) -> tuple[str, ...]:
        return OPTIMIZERS if self.optimizer == "all" else (self.optimizer,)

    @property
    def out_path(self) -> Path:
        return Path(self.out_dir)


#: The settings the warm-start weights depend on (with the tokenizer and the training rows).
WARM_START_FIELDS = (
    "seed", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
    "rope_theta", "warm_start_steps", "warm_start_batch", "warm_start_lr",
)


def parse_overrides(args: list[str]) -> DemoConfig:
    """`["optimizer=pion", "steps=2"]` -> DemoConfig; values are converted to each field's type."""
    fields = {f.name: f for f in dataclasses.fields(DemoConfig)}
    values = {}
    for arg in args:
        key, sep, raw = arg.partition("=")
        key = key.lstrip("+")  # accept Hydra's "+key=value" spelling too
        if not sep or key not in fields:
            raise SystemExit(
                f"bad argument {arg!r}: expected key=value with key one of {', '.join(fields)}"
            )
        kind = type(fields[key].default)
        try:
            values[key] = kind(raw)
        except ValueError:
            raise SystemExit(f"bad value for {key}: {raw!r} is not a {kind.__name__}") from None
    config = DemoConfig(**values)
    if config.optimizer not in OPTIMIZERS + ("all",):
        raise SystemExit(f"unknown optimizer={config.optimizer!r}: expected one of {', '.join(OPTIMIZERS)} or all")
    if config.wandb not in ("auto", "online", "offline", "disabled"):
        raise SystemExit(f"unknown wandb={config.wandb!r}: expected auto, online, offline or disabled")
    return config
