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
MAY_BE_ZERO = ("warm_start_steps", "kl_loss_coef")


def setting(default, help: str):
    """A DemoConfig field: its default and what it does (shown by `python -m pion_rl.demo --help`)."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass
class DemoConfig:
    """Everything a demo run depends on. Defaults are `make demo`'s (its wall time: benchmarks/README.md)."""

    optimizer: str = setting("all", "adamw | muon | pion | all (all three, then the comparison)")
    out_dir: str = setting("outputs/demo", "where runs, models, curves and summary.md go")
    seed: int = setting(0, "seed of the warm start and of the first GRPO run")
    seeds: int = setting(1, "GRPO runs per optimizer (seeds seed, seed+1, ...), summarised as mean +- std")
    # Policy: a tiny Qwen3 over the byte-level tokenizer.
    hidden_size: int = setting(64, "policy: hidden size")
    intermediate_size: int = setting(256, "policy: MLP size")
    num_layers: int = setting(2, "policy: decoder layers")
    num_heads: int = setting(4, "policy: attention heads")
    num_kv_heads: int = setting(2, "policy: key/value heads (divides num_heads)")
    head_dim: int = setting(16, "policy: size of one attention head")
    rope_theta: float = setting(10000.0, "policy: RoPE base")
    # Supervised warm start (cached under out_dir/cache, keyed by every field it depends on).
    warm_start_steps: int = setting(350, "supervised warm-start steps (cached in out_dir/cache; 0: none)")
    warm_start_batch: int = setting(64, "warm start: problems per step")
    warm_start_lr: float = setting(5e-3, "warm start: AdamW learning rate")
    # GRPO (the paper's recipe at demo scale: one optimizer step per RL step, KL loss, clip 1.0).
    steps: int = setting(250, "GRPO steps per optimizer (one optimizer step each)")
    prompts_per_step: int = setting(16, "GRPO: prompts per step")
    group_size: int = setting(8, "GRPO: sampled responses per prompt (>= 2)")
    max_new_tokens: int = setting(16, "GRPO: response length limit, tokens")
    temperature: float = setting(1.0, "sampling temperature of training and of the training-time held-out accuracy")
    lr: float = setting(3e-4, "learning rate, the same for every optimizer")
    clip_ratio: float = setting(0.2, "PPO clip ratio")
    kl_loss_coef: float = setting(0.001, "KL loss coefficient (low_var_kl against the warm start; 0: none)")
    grad_clip: float = setting(1.0, "gradient-norm clip")
    # Optimizer telemetry (actor/optim/*, as the GPU recipes log it).
    spectrum_every: int = setting(10, "telemetry: singular values every this many steps")
    # Held-out evaluation during training: mean accuracy over `eval_samples` sampled answers per problem (avg@k).
    eval_every: int = setting(10, "held-out accuracy every this many steps")
    eval_problems: int = setting(128, "held-out problems (of 128) for that accuracy and the final evaluation")
    eval_samples: int = setting(4, "sampled answers per held-out problem (the k of avg@k)")
    log_every: int = setting(10, "a console line every this many steps (on a terminal: a progress bar instead)")
    threads: int = setting(2, "torch CPU threads")
    wandb: str = setting("auto", "auto (online if WANDB_API_KEY is set, else offline) | online | offline | disabled")

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


#: How a value of each field type is read from the command line, and what it must look like.
PARSERS = {int: (int, "an integer"), float: (float, "a number"), str: (str, "a string")}


def usage() -> str:
    """`python -m pion_rl.demo --help`: every field with its default and what it does."""
    fields = dataclasses.fields(DemoConfig)
    width = max(len(f"{f.name}={f.default}") for f in fields)
    lines = ["usage: python -m pion_rl.demo [key=value ...]", "",
             "The CPU GRPO demo: a supervised warm start, then GRPO with each optimizer, curves and summary.md.",
             "Settings (key=default):"]
    lines += [f"  {f'{f.name}={f.default}':<{width}}  {f.metadata['help']}" for f in fields]
    return "\n".join(lines)


def parse_overrides(args: list[str]) -> DemoConfig:
    """`["optimizer=pion", "steps=2"]` -> DemoConfig; values are converted to each field's type. `--help`
    prints `usage()`; bad input exits with one line saying what is valid, before anything is written."""
    if {"-h", "--help"} & set(args):
        print(usage())
        raise SystemExit(0)
    fields = {f.name: f for f in dataclasses.fields(DemoConfig)}
    values = {}
    for arg in args:
        key, sep, raw = arg.partition("=")
        key = key.lstrip("+")  # accept Hydra's "+key=value" spelling too
        if not sep or key not in fields:
            raise SystemExit(
                f"bad argument {arg!r}: expected key=value with key one of {', '.join(fields)} (--help: what each does)"
            )
        convert, expected = PARSERS[type(fields[key].default)]
        try:
            values[key] = convert(raw)
        except ValueError:
            raise SystemExit(f"{key}: expected {expected}, got {raw!r}") from None
    try:
        return DemoConfig(**values)
    except ValueError as err:
        raise SystemExit(f"bad settings: {err}") from None
