"""The demo's settings and its `key=value` command line (the override words the GPU recipes use)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from .problems import load_split

OPTIMIZERS = ("adamw", "muon", "pion")
WANDB_SETTINGS = ("auto", "online", "offline", "disabled")
#: Every int field must be >= 1 and every float field finite and > 0, except these.
ANY_INT = ("seed",)
MAY_BE_ZERO = ("warm_start_steps", "kl_loss_coef", "weight_decay")


@dataclass
class DemoConfig:
    """Everything a demo run depends on. Defaults are the ~10-minute, 2-core `make demo`."""

    optimizer: str = "all"  # adamw | muon | pion | all (all three, then the comparison)
    out_dir: str = "outputs/demo"
    seed: int = 0
    # GRPO runs per optimizer, with seeds seed, seed+1, ... (prompt order, sampling and evaluation noise) from
    # the one warm start; the summary then gives each result as mean +- standard deviation over them.
    seeds: int = 1
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

    def __post_init__(self):
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self) -> list[str]:
        """What is wrong with these settings (nothing: an empty list), each said with what is valid."""
        problems = []
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), type(f.default)
            if kind not in (int, float) or f.name in ANY_INT:
                continue
            if kind is float and not math.isfinite(value):
                problems.append(f"{f.name}={value} must be a finite number")
            elif value < 0 or (value == 0 and f.name not in MAY_BE_ZERO):
                problems.append(f"{f.name}={value} must be {'>= 0' if f.name in MAY_BE_ZERO else '> 0'}")
        if self.optimizer not in OPTIMIZERS + ("all",):
            problems.append(f"unknown optimizer={self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)} or all")
        if self.wandb not in WANDB_SETTINGS:
            problems.append(f"unknown wandb={self.wandb!r}: expected {', '.join(WANDB_SETTINGS)}")
        if self.group_size == 1:
            problems.append("group_size=1: GRPO's advantage compares samples of one prompt, so it needs >= 2")
        if self.num_heads > 0 and self.num_kv_heads > 0 and self.num_heads % self.num_kv_heads:
            problems.append(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
        for name, split in (("warm_start_batch", "train"), ("prompts_per_step", "train"),
                            ("eval_problems", "heldout")):
            rows = len(load_split(split))
            if getattr(self, name) > rows:
                problems.append(f"{name}={getattr(self, name)} exceeds the {rows} rows of the {split} split")
        return problems

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
    """`["optimizer=pion", "steps=2"]` -> DemoConfig; values are converted to each field's type. Bad input
    exits with a message saying what is valid, before anything is written."""
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
    try:
        return DemoConfig(**values)
    except ValueError as err:
        raise SystemExit(f"bad settings: {err}") from None
