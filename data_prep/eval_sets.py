"""The validation sets to verl parquet: ``DIR/<name>.parquet`` for each name below.

    python data_prep/eval_sets.py [--out ~/data/math_eval] [--names aime24 amc23 ...] [--local-path DIR]

Each row has ``data_source`` = its name (one that `pion_rl.reward` knows), the recipe's prompt, and the
ground truth scored by the reward. Sources on the hub (split; question / answer columns):

==============  =========================  =====  ========================
name            hub id                     split  columns
==============  =========================  =====  ========================
aime24          HuggingFaceH4/aime_2024    train  problem / answer
aime25          yentinglin/aime_2025       train  problem / answer
amc23           math-ai/amc23              test   question / answer
math500         HuggingFaceH4/MATH-500     test   problem / answer
minerva         math-ai/minervamath        test   question / answer
olympiadbench   math-ai/olympiadbench      test   question / final_answer
==============  =========================  =====  ========================

With ``--local-path DIR`` (offline machines), set ``<name>`` is read from ``DIR/<name>.parquet``,
``.jsonl``, ``.json`` or a directory ``DIR/<name>/`` of such files, with the hub's columns.

Bad records (a missing or empty question or answer, a JSONL line that is not a JSON object) are reported by
file and line (or row) and skipped; a set with no usable row, a column no record has, a missing or unreadable
file, an unwritable ``--out`` or an unreachable hub end the run with one ``error:`` line (exit status 2) before
any set is written.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from verl_rows import (READABLE_SUFFIXES, DataPrepError, convert, load_hub, one_line_errors, parquet_table,
                       read_local, write_tables)


@dataclass(frozen=True)
class EvalSource:
    hub_id: str
    split: str
    question_key: str
    answer_key: str


SOURCES = {
    "aime24": EvalSource("HuggingFaceH4/aime_2024", "train", "problem", "answer"),
    "aime25": EvalSource("yentinglin/aime_2025", "train", "problem", "answer"),
    "amc23": EvalSource("math-ai/amc23", "test", "question", "answer"),
    "math500": EvalSource("HuggingFaceH4/MATH-500", "test", "problem", "answer"),
    "minerva": EvalSource("math-ai/minervamath", "test", "question", "answer"),
    "olympiadbench": EvalSource("math-ai/olympiadbench", "test", "question", "final_answer"),
}


def local_copy(directory: Path, name: str) -> Path:
    """Where set ``name`` lives under ``directory``; DataPrepError listing the accepted names if nowhere."""
    candidates = [directory / name, *(directory / f"{name}{suffix}" for suffix in READABLE_SUFFIXES)]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise DataPrepError(f"no local copy of {name!r}: expected one of {', '.join(str(c) for c in candidates)}")


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="~/data/math_eval", help="output directory (default: %(default)s)")
    parser.add_argument("--names", nargs="+", choices=list(SOURCES), default=list(SOURCES), metavar="NAME",
                        help=f"the sets to write, of {', '.join(SOURCES)} (default: all of them)")
    parser.add_argument("--local-path", metavar="DIR",
                        help="a directory with a local copy of each set (offline machines): DIR/<name>.parquet, "
                             ".jsonl (one JSON object per line) or .json (a JSON list of objects), or a directory "
                             "DIR/<name>/ of such files, with the hub's columns (see the table in this file) "
                             "(default: read each set from the hub)")
    args = parser.parse_args(argv)

    conversions = {}
    for name in args.names:  # every set is read and checked before any is written
        source = SOURCES[name]
        if args.local_path:
            records = read_local(local_copy(Path(args.local_path).expanduser(), name))
        else:
            records = load_hub(source.hub_id, source.split)
        conversions[name] = convert(records, name, source.question_key, source.answer_key, split="test")
        print(conversions[name].report(name))
        if not conversions[name].rows:
            raise DataPrepError(f"{name}: no usable row in {len(records)} record(s); no set was written")
    out = Path(args.out).expanduser()
    write_tables({out / f"{name}.parquet": parquet_table(conversion.rows) for name, conversion in conversions.items()})
    print(f"wrote {len(args.names)} sets -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
