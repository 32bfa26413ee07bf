"""The demo's policy and problems as what verl's trainer reads: a Hugging Face model directory and parquet.

    python -m pion_rl.demo.export --out DIR [--cache-dir outputs/demo]

Writes ``DIR/model`` (the tiny Qwen3 after the demo's supervised warm start, with its tokenizer: rewards and
gradients are not zero from the first GRPO step), ``DIR/train.parquet`` and ``DIR/heldout.parquet`` (the
synthetic arithmetic in verl's RLHF schema). The warm start is the demo's, cached under
``<cache-dir>/cache`` (``make demo`` and this command share it); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import DemoConfig
from .evaluation import write_heldout
from .policy import warm_start
from .problems import load_split
from .tokenizer import build_tokenizer


def export(out: Path, cache_dir: Path) -> Path:
    """Write the model directory and both splits under ``out``; returns ``out``."""
    config = DemoConfig(out_dir=str(cache_dir))
    tokenizer = build_tokenizer(merges=True)
    train_rows = load_split("train")
    model = warm_start(config, tokenizer, train_rows, log=lambda line: print(line, file=sys.stderr))
    model.generation_config.max_new_tokens = config.max_new_tokens
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    write_heldout(train_rows, out / "train.parquet")
    write_heldout(load_split("heldout"), out / "heldout.parquet")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write model/ and the parquet files to")
    parser.add_argument("--cache-dir", type=Path, default=Path("outputs/demo"),
                        help="the demo's out_dir, whose cache/ holds the warm start (default: outputs/demo)")
    args = parser.parse_args(argv)
    export(args.out, args.cache_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
