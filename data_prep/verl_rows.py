"""Rows in verl's RL parquet schema, shared by the data_prep scripts.

A row is what verl's ``examples/data_preprocess/*.py`` write and ``RLHFDataset`` reads::

    {"data_source": str, "prompt": [{"role": "user", "content": str}], "ability": "math",
     "reward_model": {"style": "rule", "ground_truth": str}, "extra_info": {"split": str, "index": int, ...}}

The prompt is the question followed by the instruction to box the answer; the ground truth is the content
of the last ``\\boxed{}`` of the source answer if it has one, else the answer itself (the reward extracts the
model's answer with the same function). A record that cannot make a row (empty question, missing answer,
a missing field, an extra field of the wrong type, an unclosed box, a JSONL line that is not a JSON object) is
reported where it is in its source and counted, never dropped silently: ``FILE:LINE`` for JSON lines (the
file's line, 1-based), ``FILE row N`` for the N-th record of a parquet or JSON file and ``row N`` for the
N-th of a hub split (1-based). Input the scripts cannot use at all (no such file, a wrong file type, a field
no record has, no records, an unreachable hub) is a `DataPrepError`, printed by `one_line_errors` as one line.
Rows are turned into parquet tables before any file is written, and the files of a run appear together.

    python data_prep/deepmath.py --help       # these scripts write rows; this module is what they share
    python data_prep/eval_sets.py --help
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pion_rl.reward import DATA_SOURCES, last_boxed_answer

INSTRUCTION = " Let's think step by step and output the final answer within \\boxed{}."
READABLE_SUFFIXES = (".parquet", ".jsonl", ".json")
#: What ``--local-path`` accepts, for the scripts' ``--help``.
LOCAL_FORMATS = (".parquet, .jsonl (one JSON object per line) or .json (a JSON list of objects) file, or a "
                 "directory of such files (read in name order)")


class BadRecord(ValueError):
    """A source record that cannot become a row; the message says why."""


class DataPrepError(ValueError):
    """Input a data_prep script cannot use at all; the message says what was wrong and what to do."""


@dataclass(frozen=True)
class UnreadableLine:
    """A JSONL line that is not a JSON object: it takes its record position and is reported as a bad record."""

    reason: str


@dataclass
class SourceRecords:
    """A local copy's records in source order, and where each one is (``FILE:LINE`` or ``FILE row N``)."""

    records: list[dict | UnreadableLine]
    places: list[str]

    def __len__(self) -> int:
        return len(self.records)


def one_line_errors(main: Callable[..., int]) -> Callable[..., int]:
    """``main`` printing a `DataPrepError` as one ``error:`` line on stderr and returning 2."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except DataPrepError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    return wrapped


def load_hub(hub_id: str, split: str, **kwargs) -> Sequence[dict]:
    """``split`` of hub dataset ``hub_id`` via ``datasets``; DataPrepError in one request if the hub is
    unreachable (instead of the downloader's retries and traceback), unless ``HF_HUB_OFFLINE`` asks for the
    local cache."""
    import datasets
    import httpx  # huggingface_hub's HTTP client (>= 1.0, which transformers 5 needs)
    import huggingface_hub

    unreachable = (f"the Hugging Face hub ({huggingface_hub.constants.ENDPOINT}) is unreachable, so {hub_id} "
                   f"cannot be downloaded ({{}}); on an offline machine, --local-path reads a local copy "
                   f"(see --help)")
    try:
        if not huggingface_hub.constants.HF_HUB_OFFLINE:
            huggingface_hub.HfApi().dataset_info(hub_id, timeout=10)  # one request, no retries
        return datasets.load_dataset(hub_id, split=split, **kwargs)
    except huggingface_hub.errors.HfHubHTTPError as err:  # reached, but refused: gated, missing, rate-limited
        raise DataPrepError(f"the hub refused {hub_id}: {str(err).splitlines()[0]}") from err
    except (ConnectionError, httpx.TransportError) as err:  # datasets raises the builtin ConnectionError
        raise DataPrepError(unreachable.format(str(err).splitlines()[0] if str(err) else type(err).__name__)) from err


@dataclass
class Conversion:
    """The rows built from one source, and the records that could not become rows (place -> reason)."""

    rows: list[dict] = field(default_factory=list)
    bad: dict[str, str] = field(default_factory=dict)

    def report(self, name: str) -> str:
        """One line per bad record, then a count line."""
        lines = [f"{name}: bad record {place}: {reason}" for place, reason in self.bad.items()]
        lines.append(f"{name}: {len(self.rows) + len(self.bad)} records, {len(self.rows)} rows, {len(self.bad)} bad")
        return "\n".join(lines)


def prompt_messages(question: str) -> list[dict]:
    """The single user turn of the recipe's prompt."""
    return [{"role": "user", "content": question.rstrip() + INSTRUCTION}]


def ground_truth(answer) -> str:
    """The reference answer of a source record as the reward compares it.

    Strings keep their content (the last ``\\boxed{}`` if present); integral floats (some hub sets store
    ``27.0``) become ``"27"``; a list of answers (OlympiadBench) becomes ``"a, b"``. Raises `BadRecord` for
    a missing or empty answer or a ``\\boxed`` that does not close.
    """
    if hasattr(answer, "tolist"):  # numpy arrays and scalars, as parquet gives them
        answer = answer.tolist()
    if isinstance(answer, (list, tuple)):
        if not answer:
            raise BadRecord("missing answer (empty list)")
        return ", ".join(ground_truth(part) for part in answer)
    if answer is None or (isinstance(answer, float) and math.isnan(answer)):
        raise BadRecord("missing answer")
    if isinstance(answer, float) and answer.is_integer():
        answer = int(answer)
    text = str(answer).strip()
    if "\\boxed" in text or "\\fbox" in text:
        boxed = last_boxed_answer(text)
        if boxed is None:
            raise BadRecord(f"answer has a \\boxed that does not close: {text[:80]!r}")
        text = boxed.strip()
    if not text:
        raise BadRecord("empty answer")
    return text


def verl_row(data_source: str, question, answer, split: str, index: int, **extra_info) -> dict:
    """One row; raises `BadRecord` if the question is empty or the answer unusable."""
    if data_source not in DATA_SOURCES:
        raise ValueError(f"data_source {data_source!r} is not one pion_rl.reward knows: {DATA_SOURCES}")
    if not isinstance(question, str) or not question.strip():
        raise BadRecord("empty question")
    return {
        "data_source": data_source,
        "prompt": prompt_messages(question),
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": ground_truth(answer)},
        "extra_info": {"split": split, "index": index, **extra_info},
    }


def convert(
    records: Iterable[dict] | SourceRecords,
    data_source: str,
    question_key: str,
    answer_key: str,
    split: str,
    extra_keys: Mapping[str, type] | None = None,
) -> Conversion:
    """Rows for every record (``extra_info.index`` = the record's position in the source), bad ones set aside.

    ``extra_keys`` maps each field copied into ``extra_info`` to its type (``float`` takes any real number; a
    missing value, None or NaN, is kept as None): a value of another type makes the record a bad one, as a
    missing field does. Raises `DataPrepError` naming the fields the records have if no record has one of the
    fields: that is the wrong dataset or column mapping, not a bad record.
    """
    extra_keys = dict(extra_keys or {})
    keys = (question_key, answer_key, *extra_keys)
    if isinstance(records, SourceRecords):
        records, places = records.records, records.places
    else:
        places = None
    conversion, seen = Conversion(), set()
    for index, record in enumerate(records):
        place = places[index] if places is not None else f"row {index + 1}"
        if isinstance(record, UnreadableLine):
            conversion.bad[place] = record.reason
            continue
        seen.update(record)
        try:
            missing = [key for key in keys if key not in record]
            if missing:
                raise BadRecord(f"no {', '.join(missing)} field")
            extra = {key: _typed(key, record[key], kind) for key, kind in extra_keys.items()}
            conversion.rows.append(
                verl_row(data_source, record[question_key], record[answer_key], split, index, **extra)
            )
        except BadRecord as bad:
            conversion.bad[place] = str(bad)
    absent = [key for key in keys if key not in seen]
    if seen and absent:
        raise DataPrepError(f"no record has {absent}; the records' fields are {sorted(seen)}: is this the right "
                            f"dataset?")
    return conversion


def read_local(path: str | os.PathLike) -> SourceRecords:
    """The records of a local copy: one .parquet / .jsonl / .json file, or a directory of them (in name order),
    with their places. A JSONL line that is not a JSON object is kept as an `UnreadableLine`."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in READABLE_SUFFIXES)
        if not files:
            raise DataPrepError(f"{path} holds no {'/'.join(READABLE_SUFFIXES)} file; --local-path takes a "
                                f"{LOCAL_FORMATS}")
    elif not path.exists():
        raise DataPrepError(f"{path} does not exist; --local-path takes a {LOCAL_FORMATS}")
    elif path.suffix in READABLE_SUFFIXES:
        files = [path]
    else:
        raise DataPrepError(f"cannot read {path}: --local-path takes a {LOCAL_FORMATS}")
    source = SourceRecords([], [])
    for file in files:
        records, places = _read_file(file)
        source.records += records
        source.places += places
    return source


def parquet_table(rows: list[dict], schema_from: list[dict] | None = None) -> pa.Table:
    """``rows`` as an Arrow table; an empty split gets the columns and types of ``schema_from``'s rows, so
    readers see a proper (empty) table rather than one without columns."""
    try:
        if rows or not schema_from:
            return pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
        return pa.Table.from_pandas(pd.DataFrame(schema_from), preserve_index=False).schema.empty_table()
    except (pa.ArrowException, TypeError, ValueError) as err:
        raise DataPrepError(f"the rows do not make a parquet table ({str(err).splitlines()[0]}); nothing was "
                            f"written") from err


def write_tables(tables: Mapping[Path, pa.Table]) -> None:
    """Write every table to its path, all or none: each goes to a partial file first, and only when all are
    written are they renamed into place."""
    partial = {path: path.with_name(path.name + ".partial") for path in tables}
    try:
        for path, table in tables.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, partial[path])
    except OSError as err:
        for file in partial.values():
            with contextlib.suppress(OSError):  # not there, or where no file can be
                file.unlink(missing_ok=True)
        raise DataPrepError(f"cannot write {err.filename or path}: {err.strerror or err}; nothing was written "
                            f"(pick another --out)") from err
    for path, file in partial.items():
        os.replace(file, path)


def _read_file(path: Path) -> tuple[list[dict | UnreadableLine], list[str]]:
    """A file's records and their places."""
    try:
        if path.suffix == ".parquet":
            records = pd.read_parquet(path).to_dict("records")
            return records, [f"{path} row {number}" for number in range(1, len(records) + 1)]
        if path.suffix == ".jsonl":
            with path.open(encoding="utf-8") as lines:
                numbered = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
            return [_json_object(line) for _, line in numbered], [f"{path}:{number}" for number, _ in numbered]
        with path.open(encoding="utf-8") as file:
            records = json.load(file)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, pa.ArrowException) as err:
        raise DataPrepError(f"cannot read {path} as {path.suffix[1:]}: {str(err).splitlines()[0]}") from err
    if not isinstance(records, list):
        raise DataPrepError(f"{path} must hold a JSON list of records (one object per row), not a "
                            f"{type(records).__name__}")
    return ([r if isinstance(r, dict) else UnreadableLine(f"a JSON {type(r).__name__}, not an object (one row)")
             for r in records], [f"{path} row {number}" for number in range(1, len(records) + 1)])


def _json_object(line: str) -> dict | UnreadableLine:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return UnreadableLine(f"not valid JSON ({err.msg} at column {err.colno})")
    if not isinstance(record, dict):
        return UnreadableLine(f"a JSON {type(record).__name__}, not an object (one row)")
    return record


def _typed(key: str, value, kind: type):
    """``value`` of extra field ``key`` as parquet should store it, if it is a ``kind`` or missing."""
    value = _plain(value)
    if value is None:
        return None
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is not float and isinstance(value, kind):
        return value
    raise BadRecord(f"{key} is {value!r}, not {'a number' if kind is float else f'a {kind.__name__}'}")


def _plain(value):
    """A numpy / pandas scalar as the Python value parquet should store (NaN -> None)."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def main(argv: list[str] | None = None) -> int:
    """``python data_prep/verl_rows.py [--help]``: this module's description; the scripts write the rows."""
    parser = argparse.ArgumentParser(prog="python data_prep/verl_rows.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
