"""DeepMath-103K to verl parquet: ``DIR/train.parquet`` and ``DIR/test.parquet``.

    python data_prep/deepmath.py [--out ~/data/deepmath] [--max-samples N] [--seed 42] [--local-path PATH]

Source: the hub dataset ``zwhe99/DeepMath-103K`` (columns question, final_answer, difficulty, topic, ...),
or ``--local-path`` to a local copy (a .parquet / .jsonl / .json file or a directory of them) on offline
machines. 1% of the usable records (``--test-fraction``) is held out as the test split by a permutation
seeded with ``--seed``; ``--max-samples`` then takes that many training rows from the same permutation
(the R1-Distill recipe uses 50,000 with seed 42, the Qwen3 recipe all of them), so the test split does not
depend on ``--max-samples``. Rows keep the source order within each split; ``extra_info.index`` is the
record's position in the source, as in the bad-record report.

Bad records (and JSONL lines that are not JSON objects, named by file and line) are reported and skipped.
No records, no usable row, a test fraction that holds out no row, missing columns, an unreadable file or an
unreachable hub end the run with one ``error:`` line (exit status 2) before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from verl_rows import LOCAL_FORMATS, DataPrepError, convert, load_hub, one_line_errors, read_local, write_parquet

HUB_ID = "zwhe99/DeepMath-103K"
COLUMNS = ["question", "final_answer", "difficulty", "topic"]


def split_rows(rows: list[dict], test_fraction: float, seed: int, max_samples: int | None) -> dict[str, list[dict]]:
    """Train / test rows from one seeded permutation; each row's extra_info.split is set accordingly."""
    order = np.random.default_rng(seed).permutation(len(rows))
    n_test = round(test_fraction * len(rows))
    test, train = order[:n_test], order[n_test:]
    if max_samples is not None:
        train = train[:max_samples]
    splits = {"train": sorted(train), "test": sorted(test)}
    for split, positions in splits.items():
        for position in positions:
            rows[position]["extra_info"]["split"] = split
    return {split: [rows[position] for position in positions] for split, positions in splits.items()}


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="~/data/deepmath", help="output directory")
    parser.add_argument("--local-path", metavar="PATH",
                        help=f"a local copy of {HUB_ID} instead of the hub (offline machines): a {LOCAL_FORMATS}, "
                             f"with columns {', '.join(COLUMNS)}")
    parser.add_argument("--max-samples", type=int, help="training rows to keep (default all)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--test-fraction", type=float, default=0.01)
    args = parser.parse_args(argv)
    if args.max_samples is not None and args.max_samples <= 0:
        parser.error("--max-samples must be positive")
    if not 0 <= args.test_fraction < 1:
        parser.error("--test-fraction must be in [0, 1)")

    source = args.local_path or HUB_ID
    records = read_local(args.local_path) if args.local_path else load_hub(HUB_ID, "train", columns=COLUMNS)
    if not len(records):
        raise DataPrepError(f"{source} has no records; nothing was written")
    conversion = convert(
        records, "deepmath", "question", "final_answer", split="train", extra_keys=["difficulty", "topic"]
    )
    print(conversion.report("deepmath"))
    if not conversion.rows:
        raise DataPrepError(f"none of the {len(records)} records of {source} makes a row (see the bad records "
                            f"above); nothing was written")
    splits = split_rows(conversion.rows, args.test_fraction, args.seed, args.max_samples)
    if not splits["train"]:
        raise DataPrepError(f"--test-fraction {args.test_fraction} of {len(conversion.rows)} rows leaves no training "
                            f"row; lower it. Nothing was written")
    if args.test_fraction and not splits["test"]:
        raise DataPrepError(
            f"--test-fraction {args.test_fraction} of {len(conversion.rows)} rows holds out no test row; give more "
            f"rows, a fraction of at least {1 / len(conversion.rows):.2g}, or --test-fraction 0 for an empty test "
            f"split. Nothing was written")

    out = Path(args.out).expanduser()
    for split, rows in splits.items():
        write_parquet(rows, out / f"{split}.parquet", schema_from=splits["train"])
    if not splits["test"]:
        print("deepmath: --test-fraction 0: test.parquet is an empty split (the train split's columns, no rows)")
    print(f"deepmath: {len(splits['train'])} train rows, {len(splits['test'])} test rows -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
