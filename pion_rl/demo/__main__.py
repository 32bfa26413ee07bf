"""`python -m pion_rl.demo [optimizer=adamw|muon|pion|all] [key=value ...]`: the CPU GRPO demo.

Warm-starts a tiny Qwen3 on synthetic arithmetic (cached), trains it with GRPO once per optimizer (or
`seeds=N` times), and writes `<out_dir>/reward_curves.png` and `<out_dir>/summary.md` over the latest complete
run of every optimizer in out_dir (keys: `pion_rl.demo.config.DemoConfig`; `--help` lists them).
"""

from __future__ import annotations

import dataclasses
import sys
import time

import torch

from .config import DemoConfig, parse_overrides
from .policy import warm_start
from .problems import load_split
from .seeds import run_name, seed_list
from .summary import write_summary
from .tokenizer import build_tokenizer
from .tracking import commit_runs, discard_in_progress, in_progress_dir
from .train import run_grpo


def run_demo(config: DemoConfig, committed: list[str]) -> None:
    """Warm start, then `config.seeds` GRPO runs per optimizer, each optimizer's runs moved into out_dir
    (replacing its earlier ones) once all of them are complete, and its name appended to `committed`. The
    first seed's final policy is the one saved and evaluated."""
    torch.set_num_threads(config.threads)
    tokenizer = build_tokenizer(merges=True)
    train_rows = load_split("train")
    heldout_rows = load_split("heldout")[: config.eval_problems]
    warm_state = warm_start(config, tokenizer, train_rows).state_dict()
    discard_in_progress(config.out_path)  # what a killed earlier run left
    staged = str(in_progress_dir(config.out_path))
    for optimizer in config.optimizers():
        for seed in seed_list(config):
            run_grpo(dataclasses.replace(config, seed=seed, out_dir=staged), optimizer, warm_state, tokenizer,
                     train_rows, heldout_rows, run_name=run_name(config, optimizer, seed), save=seed == config.seed)
        commit_runs(config.out_path, optimizer, dataclasses.asdict(dataclasses.replace(config, optimizer=optimizer)))
        committed.append(optimizer)


def main(argv: list[str] | None = None) -> None:
    config = parse_overrides(sys.argv[1:] if argv is None else argv)
    out, started, committed = config.out_path, time.perf_counter(), []
    try:
        run_demo(config, committed)
        md = write_summary(out)
    except KeyboardInterrupt:
        # One line, and out_dir left as complete runs plus a summary of exactly those.
        discard_in_progress(out)
        if committed:
            write_summary(out, evaluate=False)
        kept = f"kept the finished runs of {', '.join(committed)}" if committed else "kept nothing of this run"
        summary = out / "summary.md"
        state = f"; {summary} covers the complete runs in {out / 'runs'}" if summary.exists() else ""
        print(f"\ninterrupted: discarded the unfinished run, {kept}{state}", file=sys.stderr)
        raise SystemExit(130) from None
    print(md.read_text().split("![curves]")[0])
    print(f"done in {time.perf_counter() - started:.0f} s\nreward curves: {out / 'reward_curves.png'}\nsummary: {md}")
    print(f"run logs: {out / 'runs'}, {out / 'wandb'}/<optimizer> (each run of an optimizer replaces its "
          "previous logs once it is complete)")


if __name__ == "__main__":
    main()
