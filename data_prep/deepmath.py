"""DeepMath-103K to verl parquet: ``DIR/train.parquet`` and ``DIR/test.parquet``.

    python data_prep/deepmath.py [--out DIR] [--local-path PATH] [--seed 42] [--test-fraction 0.01] [--max-samples N]

Source: the hub dataset ``zwhe99/DeepMath-103K`` (columns question, final_answer, difficulty, topic, ...),
or ``--local-path`` to a local copy (a .parquet / .jsonl / .json file or a directory of them) on offline
machines. The rows, and their order, are those the paper's release writes for the same source (its
``examples/data_preprocess/deepmath_dataset.py``): ``datasets``' ``train_test_split(test_size=0.01, seed=42)``
holds out ceil(1%) of the records as the test split, and both splits keep that permutation's order;
``data_source`` is ``zwhe99/DeepMath-103K`` and ``extra_info.index`` a row's position in its split. The ground
truth is the content of the last box of ``final_answer`` (else all of it) as `pion_rl.reward` extracts it;
verl's extraction, which the release uses, differs only on an escaped brace inside a box and on ``\\fbox``.

Bad records (an empty question, a missing answer or field, a ``difficulty`` that is no number or a ``topic``
that is no string, a JSONL line that is not a JSON object) are reported by file and line (or row) and left out.
The split is computed over every source record, as the release sees them, so a bad record leaves a gap and
every other row keeps the split and the position the release gives it.

``--max-samples N`` keeps the first N training rows (a random subset, the split being permuted). The R1-Distill
recipe does not use it: its 50,000 problems are verl's ``data.train_max_samples`` draw (seed 42) over the
whole train file, as in the paper's script.

No records, no usable row, no training row, a column no record has, an unreadable file, an unwritable ``--out``
or an unreachable hub end the run with one ``error:`` line (exit status 2); both splits are made whole before
either file is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from verl_rows import (LOCAL_FORMATS, DataPrepError, convert, load_hub, one_line_errors, parquet_table, read_local,
                       write_tables)

HUB_ID = "zwhe99/DeepMath-103K"
#: The fields copied into extra_info, with their types in the hub's dataset (topic first: the release's order).
EXTRA_COLUMNS = {"topic": str, "difficulty": float}
COLUMNS = ["question", "final_answer", *EXTRA_COLUMNS]


def split_positions(n_records: int, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Source positions of each split, in split order: ``datasets``' own ``train_test_split`` (ceil of
    ``test_fraction * n_records`` held out, both splits in its seeded permutation's order)."""
    import datasets

    positions = datasets.Dataset.from_dict({"position": list(range(n_records))})  # in memory: no cache files
    try:
        split = positions.train_test_split(test_size=test_fraction, seed=seed)
    except ValueError as err:  # e.g. a single record: nothing left to train on
        raise DataPrepError(f"cannot hold out --test-fraction {test_fraction} of {n_records} records: "
                            f"{err}. Nothing was written") from err
    return {name: list(split[name]["position"]) for name in ("train", "test")}


def split_rows(conversion, n_records: int, test_fraction: float, seed: int) -> dict[str, list[dict]]:
    """Each split's rows in split order; a row's extra_info gets the split's name and its position in the
    split (bad records keep their positions, as gaps)."""
    rows = {row["extra_info"]["index"]: row for row in conversion.rows}  # by source position
    splits = {}
    for name, positions in split_positions(n_records, test_fraction, seed).items():
        splits[name] = []
        for position_in_split, source_position in enumerate(positions):
            if source_position in rows:
                row = rows[source_position]
                row["extra_info"].update(split=name, index=position_in_split)
                splits[name].append(row)
    return splits


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="~/data/deepmath", help="output directory (default: %(default)s)")
    parser.add_argument("--local-path", metavar="PATH",
                        help=f"a local copy of {HUB_ID} instead of the hub (offline machines): a {LOCAL_FORMATS}, "
                             f"with columns {', '.join(COLUMNS)} (default: read {HUB_ID} from the hub)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the train/test permutation (default: %(default)s)")
    parser.add_argument("--test-fraction", type=float, default=0.01,
                        help="fraction of the records held out as the test split, rounded up to whole records; in (0, 1) "
                             "(default: %(default)s)")
    parser.add_argument("--max-samples", type=int, metavar="N",
                        help="keep only the first N training rows (default: all of them, as the recipes use)")
    args = parser.parse_args(argv)
    if args.max_samples is not None and args.max_samples <= 0:
        parser.error("--max-samples must be positive")
    if not 0 < args.test_fraction < 1:
        parser.error("--test-fraction must be in (0, 1)")

    source = args.local_path or HUB_ID
    records = read_local(args.local_path) if args.local_path else load_hub(HUB_ID, "train", columns=COLUMNS)
    if not len(records):
        raise DataPrepError(f"{source} has no records; nothing was written")
    conversion = convert(records, HUB_ID, "question", "final_answer", split="train", extra_keys=EXTRA_COLUMNS)
    print(conversion.report("deepmath"))
    if not conversion.rows:
        raise DataPrepError(f"none of the {len(records)} records of {source} makes a row (see the bad records "
                            f"above); nothing was written")
    splits = split_rows(conversion, len(records), args.test_fraction, args.seed)
    if not splits["train"]:
        raise DataPrepError(f"every record held for training is bad (see above): no training row. Nothing was "
                            f"written")
    if args.max_samples is not None:
        splits["train"] = splits["train"][: args.max_samples]

    out = Path(args.out).expanduser()
    write_tables({out / f"{split}.parquet": parquet_table(rows, schema_from=splits["train"])
                  for split, rows in splits.items()})
    if not splits["test"]:
        print("deepmath: every held-out record is bad: test.parquet is an empty split (the train split's columns)")
    print(f"deepmath: {len(splits['train'])} train rows, {len(splits['test'])} test rows -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
