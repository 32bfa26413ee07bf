"""Rows in verl's RL parquet schema, shared by the data_prep scripts.

A row is what verl's ``examples/data_preprocess/*.py`` write and ``RLHFDataset`` reads::

    {"data_source": str, "prompt": [{"role": "user", "content": str}], "ability": "math",
     "reward_model": {"style": "rule", "ground_truth": str}, "extra_info": {"split": str, "index": int, ...}}

The prompt is the question followed by the instruction to box the answer; the ground truth is the content
of the last ``\\boxed{}`` of the source answer if it has one, else the answer itself (the reward extracts the
model's answer with the same function). A record that cannot make a row (empty question, missing answer,
an unclosed box, a JSONL line that is not a JSON object) is reported by index and counted, never dropped
silently. Input the scripts cannot use at all (no such file, a wrong file type, missing columns, no records,
an unreachable hub) is a `DataPrepError`, printed by `one_line_errors` as one line.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
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
    """The rows built from one source, and the records that could not become rows (index -> reason)."""

    rows: list[dict] = field(default_factory=list)
    bad: dict[int, str] = field(default_factory=dict)

    def report(self, name: str) -> str:
        """One line per bad record, then a count line."""
        lines = [f"{name}: bad record {index}: {reason}" for index, reason in self.bad.items()]
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
    records: Iterable[dict],
    data_source: str,
    question_key: str,
    answer_key: str,
    split: str,
    extra_keys: Sequence[str] = (),
) -> Conversion:
    """Rows for every record (``extra_info.index`` = the record's position in the source), bad ones set aside.

    Raises `DataPrepError` naming the available columns if a record lacks ``question_key`` or ``answer_key``
    altogether: that is the wrong dataset or column mapping, not a bad record.
    """
    conversion = Conversion()
    for index, record in enumerate(records):
        if isinstance(record, UnreadableLine):
            conversion.bad[index] = record.reason
            continue
        missing = [key for key in (question_key, answer_key, *extra_keys) if key not in record]
        if missing:
            raise DataPrepError(f"record {index} has no column {missing}; its columns are {sorted(record)}: "
                                f"is this the right dataset?")
        try:
            extra = {key: _plain(record[key]) for key in extra_keys}
            conversion.rows.append(
                verl_row(data_source, record[question_key], record[answer_key], split, index, **extra)
            )
        except BadRecord as bad:
            conversion.bad[index] = str(bad)
    return conversion


def read_local(path: str | os.PathLike) -> list[dict | UnreadableLine]:
    """The records of a local copy: one .parquet / .jsonl / .json file, or a directory of them (in name order).
    A JSONL line that is not a JSON object is kept as an `UnreadableLine` naming its file and line."""
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
    return [record for file in files for record in _read_file(file)]


def write_parquet(rows: list[dict], path: str | os.PathLike, schema_from: list[dict] | None = None) -> None:
    """Write ``rows``; an empty split gets the columns and types of ``schema_from``'s rows, so readers see
    a proper (empty) table rather than one without columns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if rows or not schema_from:
        pd.DataFrame(rows).to_parquet(path, index=False)
    else:
        schema = pa.Table.from_pandas(pd.DataFrame(schema_from), preserve_index=False).schema
        pq.write_table(schema.empty_table(), path)


def _read_file(path: Path) -> list[dict | UnreadableLine]:
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path).to_dict("records")
        if path.suffix == ".jsonl":
            with path.open(encoding="utf-8") as lines:
                return [_json_object(line, path, number) for number, line in enumerate(lines, 1) if line.strip()]
        with path.open(encoding="utf-8") as file:
            records = json.load(file)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, pa.ArrowException) as err:
        raise DataPrepError(f"cannot read {path} as {path.suffix[1:]}: {str(err).splitlines()[0]}") from err
    if not isinstance(records, list):
        raise DataPrepError(f"{path} must hold a JSON list of records (one object per row), not a "
                            f"{type(records).__name__}")
    return records


def _json_object(line: str, path: Path, number: int) -> dict | UnreadableLine:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return UnreadableLine(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})")
    if not isinstance(record, dict):
        return UnreadableLine(f"{path}:{number}: a JSON {type(record).__name__}, not an object (one row)")
    return record


def _plain(value):
    """A numpy / pandas scalar as the Python value parquet should store (NaN -> None)."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value
