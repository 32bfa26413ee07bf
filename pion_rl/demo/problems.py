"""Synthetic arithmetic problems in DeepMath's prompt format, stored as verl RLHF rows.

`python -m pion_rl.demo.problems` regenerates the bundled `data/train.jsonl` and `data/heldout.jsonl`
from a fixed seed. Each row has verl's schema (`data_source`, chat `prompt`, `reward_model.ground_truth`,
`extra_info`) plus `solution`, the reference response the supervised warm start imitates.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

DATA_SOURCE = "synthetic_arith"
INSTRUCTION = " Let's think step by step and output the final answer within \\boxed{}."
DATA_DIR = Path(__file__).parent / "data"
SPLITS = ("train", "heldout")


def make_row(a: int, op: str, b: int) -> dict:
    """One problem `a op b` as a verl row; the solution restates it and boxes the value."""
    value = a + b if op == "+" else a - b
    question = f"What is {a} {op} {b}?"
    return {
        "data_source": DATA_SOURCE,
        "prompt": [{"role": "user", "content": question.rstrip() + INSTRUCTION}],
        "reward_model": {"style": "rule", "ground_truth": str(value)},
        "extra_info": {"question": question, "a": a, "op": op, "b": b},
        "solution": f"{a} {op} {b} = \\boxed{{{value}}}",
    }


def make_splits(seed: int = 0, n_heldout: int = 128) -> dict[str, list[dict]]:
    """Every `a + b` and `a - b` (a >= b) with a two-digit-or-less `a` and a one-digit `b`, shuffled and split.

    Each ones-digit pair recurs under every tens digit, so a held-out problem is new as a whole but built
    from the same digit facts and carries as the training problems: held-out accuracy measures skill.
    """
    triples = [(a, op, b) for a in range(100) for b in range(10) for op in "+-" if op == "+" or a >= b]
    random.Random(seed).shuffle(triples)
    rows = [make_row(*t) for t in triples]
    return {"heldout": rows[:n_heldout], "train": rows[n_heldout:]}


def load_split(split: str, data_dir: Path = DATA_DIR) -> list[dict]:
    """Rows of a bundled split ("train" or "heldout")."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
    path = Path(data_dir) / f"{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: regenerate it with `python -m pion_rl.demo.problems`")
    with path.open() as f:
        return [json.loads(line) for line in f]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pion_rl.demo.problems", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR, metavar="DIR",
                        help="directory for train.jsonl and heldout.jsonl (default: the package's bundled data, "
                             "%(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the shuffle that splits the problems; the bundled files use the default "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for split, rows in make_splits(args.seed).items():
        with (args.out / f"{split}.jsonl").open("w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        print(f"wrote {len(rows)} rows to {args.out / f'{split}.jsonl'}")


if __name__ == "__main__":
    main()
