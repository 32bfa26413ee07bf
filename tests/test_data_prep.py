"""data_prep: DeepMath and the eval sets to verl parquet, read back by verl's own RLHFDataset."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from pion_rl.demo.tokenizer import build_tokenizer
from pion_rl.reward import compute_score

# The data_prep scripts run as `python data_prep/<script>.py`, importing their sibling `verl_rows`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data_prep"))
import deepmath  # noqa: E402
import eval_sets  # noqa: E402
from verl_rows import INSTRUCTION  # noqa: E402

N_GOOD = 300
# index -> (question, final_answer) of records that must be reported, with the reason's keyword
BAD = {
    7: ("", "3", "empty question"),
    50: ("   \n", "3", "empty question"),
    123: ("What is 1+1?", None, "missing answer"),
    200: ("What is 2+2?", "\\boxed{4", "does not close"),
    250: ("What is 3+3?", "  ", "empty answer"),
}


def _deepmath_records() -> list[dict]:
    """N_GOOD usable records (varied lengths, some multi-byte text, some boxed answers) with BAD spliced in."""
    good = []
    for i in range(N_GOOD):
        question = f"Compute {i} + {i}. " + "Explain é∑ carefully. " * (i % 7) + "  \n"
        answer = f"\\boxed{{{2 * i}}}" if i % 3 == 0 else f"{2 * i}"
        good.append({"question": question, "final_answer": answer, "difficulty": float(i % 10), "topic": f"t{i % 4}"})
    records = []
    for index in range(N_GOOD + len(BAD)):
        if index in BAD:
            question, answer, _ = BAD[index]
            records.append({"question": question, "final_answer": answer, "difficulty": 1.0, "topic": "bad"})
        else:
            records.append(good.pop(0))
    return records


@pytest.fixture(scope="module")
def deepmath_copy(tmp_path_factory) -> Path:
    """The fixture as a local copy: a directory of two parquet shards, like the hub's files."""
    directory = tmp_path_factory.mktemp("deepmath_copy")
    frame = pd.DataFrame(_deepmath_records())
    frame.iloc[:150].to_parquet(directory / "train-00000-of-00002.parquet")
    frame.iloc[150:].to_parquet(directory / "train-00001-of-00002.parquet")
    return directory


def _run_deepmath(copy: Path, out: Path, *extra: str) -> dict[str, pd.DataFrame]:
    assert deepmath.main(["--local-path", str(copy), "--out", str(out), *extra]) == 0
    return {split: pd.read_parquet(out / f"{split}.parquet") for split in ("train", "test")}


def _official_splits(records: list[dict], test_size: float = 0.01, seed: int = 42) -> dict[str, list[dict]]:
    """What the paper's release (verl/examples/data_preprocess/deepmath_dataset.py) writes for ``records``,
    good records only: ``datasets``' own split of all of them, each row numbered by its position in its split."""
    import datasets

    numbered = datasets.Dataset.from_list(records).add_column("source_position", list(range(len(records))))
    split = numbered.train_test_split(test_size=test_size, seed=seed)
    rows = {}
    for name in ("train", "test"):
        rows[name] = []
        for index, record in enumerate(split[name]):
            if records[record["source_position"]]["topic"] != "bad":
                rows[name].append({
                    "data_source": "zwhe99/DeepMath-103K",
                    "prompt": [{"role": "user", "content": record["question"].rstrip() + INSTRUCTION}],
                    "ability": "math",
                    "reward_model": {"style": "rule", "ground_truth": record["final_answer"].removeprefix(
                        "\\boxed{").removesuffix("}")},
                    "extra_info": {"split": name, "index": index, "topic": record["topic"],
                                   "difficulty": record["difficulty"]},
                })
    return rows


def _official_splits_positions(n_records: int) -> dict[str, list[int]]:
    import datasets

    split = datasets.Dataset.from_dict({"i": list(range(n_records))}).train_test_split(test_size=0.01, seed=42)
    return {name: split[name]["i"] for name in ("train", "test")}


def _plain_rows(frame: pd.DataFrame) -> list[dict]:
    """A parquet split as plain Python rows (numpy arrays of messages back to lists)."""
    return [{**row, "prompt": list(row["prompt"])} for row in frame.to_dict("records")]


@pytest.mark.parametrize("seed, test_fraction", [(42, 0.01), (7, 0.05)])
def test_deepmath_cli_writes_the_official_rows_in_the_official_order(deepmath_copy, tmp_path, seed, test_fraction):
    """Through the command line, on a source with bad records among the good: the rows `datasets`'
    train_test_split gives the paper's script, in its order, with the bad records left out as gaps."""
    out = tmp_path / "out"
    done = _script("deepmath.py", "--local-path", str(deepmath_copy), "--out", str(out), "--seed", str(seed),
                   "--test-fraction", str(test_fraction))
    assert done.returncode == 0, done.stderr
    expected = _official_splits(_deepmath_records(), test_fraction, seed)
    n_records = N_GOOD + len(BAD)
    assert sum(map(len, expected.values())) == N_GOOD
    for split in ("train", "test"):
        frame = pd.read_parquet(out / f"{split}.parquet")
        assert list(frame.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
        assert _plain_rows(frame) == expected[split]
    # ceil, not round: 305 records at 1% hold out 4 (3.05 rounded up), whatever their quality.
    n_test = -(-n_records * test_fraction // 1)
    held_out = [row["extra_info"]["index"] for row in expected["test"]]
    assert max(held_out, default=-1) < n_test and len(held_out) <= n_test
    assert f"deepmath: {len(expected['train'])} train rows, {len(expected['test'])} test rows" in done.stdout


def test_deepmath_rows_are_scored_by_the_reward(deepmath_copy, tmp_path):
    splits = _run_deepmath(deepmath_copy, tmp_path)
    for frame in splits.values():
        for row in frame.to_dict("records"):
            i = int(row["prompt"][0]["content"].split()[1])  # "Compute i + i."
            assert row["reward_model"] == {"style": "rule", "ground_truth": str(2 * i)}  # \boxed{..} unwrapped
            for mode in ("strict", "paper"):
                assert compute_score(row["data_source"], f"... so \\boxed{{{2 * i}}}",
                                     row["reward_model"]["ground_truth"], mode=mode)["acc"]


def test_deepmath_split_is_deterministic_and_seeded(deepmath_copy, tmp_path):
    first = _run_deepmath(deepmath_copy, tmp_path / "a")
    again = _run_deepmath(deepmath_copy, tmp_path / "b")
    other_seed = _run_deepmath(deepmath_copy, tmp_path / "c", "--seed", "7")
    for split in ("train", "test"):
        pd.testing.assert_frame_equal(first[split], again[split])  # same seed, same files
    questions = {name: {m[0]["content"] for m in frame.prompt} for name, frame in first.items()}
    assert questions["train"].isdisjoint(questions["test"])
    assert {m[0]["content"] for m in other_seed["test"].prompt} != questions["test"]


def test_deepmath_max_samples_takes_the_first_training_rows(deepmath_copy, tmp_path):
    full = _run_deepmath(deepmath_copy, tmp_path / "full")
    capped = _run_deepmath(deepmath_copy, tmp_path / "capped", "--max-samples", "40")
    pd.testing.assert_frame_equal(capped["train"], full["train"].iloc[:40])
    pd.testing.assert_frame_equal(capped["test"], full["test"])


def test_deepmath_bad_records_are_reported_by_file_and_row_and_counted(deepmath_copy, tmp_path, capsys):
    _run_deepmath(deepmath_copy, tmp_path)
    report = capsys.readouterr().out
    for index, (_, _, reason) in BAD.items():
        shard, row = (0, index + 1) if index < 150 else (1, index - 149)  # the fixture's two shards, 1-based rows
        place = f"{deepmath_copy / f'train-0000{shard}-of-00002.parquet'} row {row}"
        [line] = [line for line in report.splitlines() if line.startswith(f"deepmath: bad record {place}:")]
        assert reason in line
    total = N_GOOD + len(BAD)
    assert f"deepmath: {total} records, {N_GOOD} rows, {len(BAD)} bad" in report
    expected = _official_splits(_deepmath_records())
    assert f"deepmath: {len(expected['train'])} train rows, {len(expected['test'])} test rows" in report


def test_verl_draws_the_r1_distill_subset_from_our_file_as_from_the_official_one(deepmath_copy, tmp_path):
    """The R1-Distill recipe's problems are verl's `train_max_samples` draw (data.shuffle, data.seed 42) over the
    train file: over our file it picks the rows it picks over the release's, in the same order."""
    from verl.utils.dataset.rl_dataset import RLHFDataset

    import datasets

    _run_deepmath(deepmath_copy, tmp_path / "ours")
    official = tmp_path / "official.parquet"
    datasets.Dataset.from_list(_official_splits(_deepmath_records())["train"]).to_parquet(str(official))
    config = OmegaConf.create({"max_prompt_length": 4096, "filter_overlong_prompts": False, "shuffle": True,
                               "seed": 42, "cache_dir": str(tmp_path / "verl_cache")})
    tokenizer = build_tokenizer()
    drawn = [RLHFDataset(str(path), tokenizer, config, max_samples=50) for path in (tmp_path / "ours" / "train.parquet",
                                                                                   official)]
    ours, theirs = ([{key: row[key] for key in ("prompt", "reward_model", "extra_info")} for row in d.dataframe]
                    for d in drawn)
    assert len(ours) == 50 and ours == theirs
    # ...and it is a draw, not the file's first rows.
    assert [row["extra_info"]["index"] for row in ours] != list(range(50))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_deepmath_wrong_columns_fail_with_the_available_ones(tmp_path, capsys):
    pd.DataFrame([{"problem": "1+1?", "answer": "2"}]).to_parquet(tmp_path / "other.parquet")
    assert deepmath.main(["--local-path", str(tmp_path / "other.parquet"), "--out", str(tmp_path / "out")]) == 2
    assert ("no record has ['question', 'final_answer', 'topic', 'difficulty']; the records' fields are ['answer', "
            "'problem']: is this the right dataset?") in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def _jsonl(path: Path, records: list, garbage: dict[int, str] = {}) -> Path:
    lines = [json.dumps(record) for record in records]
    for position, line in sorted(garbage.items()):
        lines.insert(position, line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_deepmath_bad_jsonl_lines_are_bad_records_with_file_and_line(tmp_path, capsys):
    records = [r for r in _deepmath_records() if r["topic"] != "bad"]
    source = _jsonl(tmp_path / "copy.jsonl", records, {8: "garbage{", 20: "[1, 2]"})
    splits = _run_deepmath(source, tmp_path / "out")
    report = capsys.readouterr().out
    assert f"deepmath: bad record {source}:9: not valid JSON (Expecting value at column 1)" in report
    assert f"deepmath: bad record {source}:21: a JSON list, not an object (one row)" in report
    assert f"deepmath: {N_GOOD + 2} records, {N_GOOD} rows, 2 bad" in report
    assert len(splits["train"]) + len(splits["test"]) == N_GOOD  # the run went on past them


@pytest.mark.parametrize("content, message", [
    ("", "has no records; nothing was written"),
    ("garbage\n", "none of the 1 records of .* makes a row .*; nothing was written"),
])
def test_deepmath_no_usable_input_is_an_error_and_writes_nothing(tmp_path, capsys, content, message):
    (tmp_path / "copy.jsonl").write_text(content)
    assert deepmath.main(["--local-path", str(tmp_path / "copy.jsonl"), "--out", str(tmp_path / "out")]) == 2
    assert re.search(message, _one_line_error(capsys))
    assert not (tmp_path / "out").exists()


def test_deepmath_too_few_records_or_only_bad_ones_held_out(tmp_path, capsys):
    one = _jsonl(tmp_path / "one.jsonl", _deepmath_records()[:1])
    out = tmp_path / "out"
    assert deepmath.main(["--local-path", str(one), "--out", str(out)]) == 2
    assert "cannot hold out --test-fraction 0.01 of 1 records: " in _one_line_error(capsys)
    assert not out.exists()
    # Five records hold out one (ceil of 5%); where that one is bad, the test split is empty, written with the
    # train split's schema, and said so.
    records = _deepmath_records()[:5]
    [held_out] = _official_splits_positions(len(records))["test"]
    records[held_out] = {**records[held_out], "question": "", "topic": "bad"}
    splits = _run_deepmath(_jsonl(tmp_path / "five.jsonl", records), out)
    assert "test.parquet is an empty split" in capsys.readouterr().out
    assert len(splits["test"]) == 0 and list(splits["test"].columns) == list(splits["train"].columns)
    assert pq.read_schema(out / "test.parquet") == pq.read_schema(out / "train.parquet").remove_metadata()


@pytest.mark.parametrize("name, content, message", [
    ("copy.csv", "question,final_answer\n", "cannot read {path}: --local-path takes a .parquet, .jsonl"),
    ("nope.jsonl", None, "{path} does not exist; --local-path takes a .parquet"),
    ("copy.parquet", "not parquet", "cannot read {path} as parquet: "),
    ("copy.json", '{"question": "1+1?"}', "{path} must hold a JSON list of records"),
    ("copy.json", "[{", "cannot read {path} as json: "),
])
def test_deepmath_unusable_files_are_one_line_errors(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    assert deepmath.main(["--local-path", str(path), "--out", str(tmp_path / "out")]) == 2
    assert message.format(path=path) in _one_line_error(capsys)


def _script(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, str(root / "data_prep" / name), *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(root), **(env or {})})


def _options_without_a_default(help_text: str, at_least: int) -> list[str]:
    """The options of an argparse --help whose text gives no "(default: ...)" (--help itself aside)."""
    options = re.split(r"\n  (?=-)", help_text.split("options:", 1)[1])[1:]
    assert len(options) >= at_least, help_text
    return [o for o in options if not o.startswith("-h") and "(default: " not in " ".join(o.split())]


def test_help_lists_the_local_path_formats_and_every_default():
    for name in ("deepmath.py", "eval_sets.py"):
        help_text = _script(name, "--help").stdout
        text = " ".join(help_text.split())
        assert ".parquet, .jsonl (one JSON object per line) or .json (a JSON list of objects)" in text, text
        assert _options_without_a_default(help_text, 3) == []


def test_the_demo_problems_help_gives_every_option_its_default():
    """As a user ran it: `python -m pion_rl.demo.problems --help` listed --out OUT and --seed SEED, nothing more."""
    done = subprocess.run([sys.executable, "-m", "pion_rl.demo.problems", "--help"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and _options_without_a_default(done.stdout, 2) == []


@pytest.mark.parametrize("name", ["deepmath.py", "eval_sets.py"])
def test_an_unreachable_hub_is_one_line_pointing_at_local_path(tmp_path, name):
    # Port 9 on this host refuses connections: the hub as seen from an offline machine, whatever CI's network.
    done = _script(name, "--out", str(tmp_path / "out"), env={"HF_ENDPOINT": "http://127.0.0.1:9",
                                                               "HF_HUB_OFFLINE": "0"})
    assert done.returncode == 2
    assert done.stderr.startswith("error: the Hugging Face hub (http://127.0.0.1:9) is unreachable")
    assert "--local-path reads a local copy (see --help)" in done.stderr
    assert done.stderr.count("\n") == 1 and "Retrying" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_verl_rlhf_dataset_reads_the_parquet_and_tokenises_the_prompts(deepmath_copy, tmp_path):
    """verl's RLHFDataset reads our train.parquet, hands the chat messages on unchanged, and measures prompt
    length with the tokenizer's chat template, as the rollout will: `filter_overlong_prompts` keeps exactly
    the rows whose length, computed independently here, fits."""
    from verl.utils.dataset.rl_dataset import RLHFDataset

    frame = _run_deepmath(deepmath_copy, tmp_path)["train"]
    tokenizer = build_tokenizer()

    # The offline tokenizer has one token per UTF-8 byte plus one per special token, so the templated
    # prompt "<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n" has this many tokens:
    def expected_length(content: str) -> int:
        return 1 + len(f"user\n{content}".encode()) + 1 + 1 + 1 + len(b"assistant\n")

    lengths = frame.prompt.map(lambda messages: expected_length(messages[0]["content"])).to_numpy()
    max_prompt_length = int(np.median(lengths))
    config = OmegaConf.create(
        {
            "max_prompt_length": max_prompt_length,
            "filter_overlong_prompts": True,
            "filter_overlong_prompts_workers": 1,
            "cache_dir": str(tmp_path / "verl_cache"),
        }
    )
    dataset = RLHFDataset(str(tmp_path / "train.parquet"), tokenizer, config)

    kept = frame[lengths <= max_prompt_length]
    assert 0 < len(kept) < len(frame)
    assert len(dataset) == len(kept)
    for position in (0, len(dataset) // 2, len(dataset) - 1):
        item = dataset[position]
        row = kept.iloc[position]
        assert item["raw_prompt"] == list(row.prompt)
        assert item["reward_model"]["ground_truth"] == row.reward_model["ground_truth"]
        assert item["index"] == row.extra_info["index"]
        ids = tokenizer.apply_chat_template(item["raw_prompt"], add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        assert len(ids) == expected_length(row.prompt[0]["content"])
        assert tokenizer.decode(ids).endswith(INSTRUCTION + "<|im_end|>\n<|im_start|>assistant\n")


def test_eval_sets_from_local_copies(tmp_path, capsys):
    copies = tmp_path / "copies"
    copies.mkdir()
    # aime24 as JSON lines with integer answers, like the hub set.
    pd.DataFrame({"problem": ["Find x.", "Find y. "], "answer": [204, 33]}).to_json(
        copies / "aime24.jsonl", orient="records", lines=True
    )
    # amc23 stores answers as floats; one record has no answer.
    pd.DataFrame({"question": ["Q1", "Q2", "Q3"], "answer": [27.0, 0.5, None]}).to_parquet(copies / "amc23.parquet")
    # olympiadbench: final_answer is a list, inside a directory of shards.
    (copies / "olympiadbench").mkdir()
    pd.DataFrame({"question": ["Q"], "final_answer": [["$\\frac{1}{2}$", "3"]]}).to_parquet(
        copies / "olympiadbench" / "test-0.parquet"
    )

    names = ["aime24", "amc23", "olympiadbench"]
    assert eval_sets.main(["--local-path", str(copies), "--out", str(tmp_path / "out"), "--names", *names]) == 0
    frames = {name: pd.read_parquet(tmp_path / "out" / f"{name}.parquet") for name in names}
    assert sorted(p.stem for p in (tmp_path / "out").iterdir()) == sorted(names)

    truths = {name: [rm["ground_truth"] for rm in frame.reward_model] for name, frame in frames.items()}
    assert truths == {"aime24": ["204", "33"], "amc23": ["27", "0.5"], "olympiadbench": ["$\\frac{1}{2}$, 3"]}
    for name, frame in frames.items():
        assert set(frame.data_source) == {name}
        assert all(e["split"] == "test" for e in frame.extra_info)
    assert frames["aime24"].prompt[1][0]["content"] == "Find y." + INSTRUCTION
    assert [e["index"] for e in frames["amc23"].extra_info] == [0, 1]
    report = capsys.readouterr().out
    assert f"amc23: bad record {copies / 'amc23.parquet'} row 3: missing answer" in report
    assert "amc23: 3 records, 2 rows, 1 bad" in report
    # The stored ground truths are ones the reward can match.
    assert compute_score("amc23", "\\boxed{27}", truths["amc23"][0])["acc"]
    assert compute_score("olympiadbench", "\\boxed{\\frac{1}{2}, 3}", truths["olympiadbench"][0])["acc"]


def test_eval_sets_missing_local_copy_says_where_it_looked(tmp_path, capsys):
    assert eval_sets.main(["--local-path", str(tmp_path), "--out", str(tmp_path / "out"), "--names", "minerva"]) == 2
    assert re.search("no local copy of 'minerva'.*minerva.jsonl", _one_line_error(capsys))


def test_eval_sets_a_set_without_rows_is_an_error_and_writes_no_set(tmp_path, capsys):
    _jsonl(tmp_path / "aime24.jsonl", [{"problem": "1+1?", "answer": "2"}])
    (tmp_path / "amc23.jsonl").write_text("")
    out = tmp_path / "out"
    assert eval_sets.main(["--local-path", str(tmp_path), "--out", str(out), "--names", "aime24", "amc23"]) == 2
    assert "amc23: no usable row in 0 record(s); no set was written" in _one_line_error(capsys)
    assert not out.exists()


def test_every_eval_set_has_a_data_source_the_reward_knows():
    from pion_rl.reward import DATA_SOURCES

    assert set(eval_sets.SOURCES) | {deepmath.HUB_ID} <= set(DATA_SOURCES)  # every source data_prep writes is scored


# --- bad values and missing fields are bad records; nothing is written half (issue 22) ------------------------


def test_deepmath_a_bad_difficulty_is_a_bad_record_and_the_others_keep_their_places(tmp_path, capsys):
    """As a user ran it: one "difficulty": "hard" among floats was a pyarrow traceback, and with the record held
    out, train.parquet was left behind. It is a bad record: reported at its line, left out as a gap."""
    records = [r for r in _deepmath_records() if r["topic"] != "bad"]
    held_out = _official_splits_positions(len(records))["test"][0]  # in the test split, written last
    records[held_out] = {**records[held_out], "difficulty": "hard"}
    lines = [json.dumps(r) for r in records]
    lines.insert(held_out, "")  # a blank line: not a record, but a line of the file
    source = tmp_path / "copy.jsonl"
    source.write_text("\n".join(lines) + "\n")
    splits = _run_deepmath(source, tmp_path / "out")
    report = capsys.readouterr().out
    assert f"deepmath: bad record {source}:{held_out + 2}: difficulty is 'hard', not a number" in report
    reference = [dict(r, topic="bad", difficulty=0.0) if i == held_out else r for i, r in enumerate(records)]
    expected = _official_splits(reference)  # the release's rows without the bad record, every index unshifted
    for name in ("train", "test"):
        assert _plain_rows(splits[name]) == expected[name]


def test_deepmath_writes_both_splits_or_neither(deepmath_copy, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# notes\n")
    assert deepmath.main(["--local-path", str(deepmath_copy), "--out", str(readme)]) == 2
    assert "nothing was written" in _one_line_error(capsys) and readme.read_text() == "# notes\n"
    # test.parquet cannot be written (a directory stands where its file goes): train.parquet is not left behind.
    out = tmp_path / "out"
    (out / "test.parquet.partial").mkdir(parents=True)
    assert deepmath.main(["--local-path", str(deepmath_copy), "--out", str(out)]) == 2
    assert "nothing was written" in _one_line_error(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["test.parquet.partial"]


def test_eval_sets_a_record_missing_a_field_is_a_bad_record_and_a_file_without_it_the_wrong_dataset(tmp_path, capsys):
    """As a user ran it: one record without `answer` aborted the whole set as "is this the right dataset?"."""
    lines = [json.dumps({"problem": "1+1?", "answer": "2"}), "", json.dumps({"problem": "2+2?"}),
             json.dumps({"problem": "3+3?", "answer": "6"})]
    (tmp_path / "aime24.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert eval_sets.main(["--local-path", str(tmp_path), "--out", str(out), "--names", "aime24"]) == 0
    assert f"aime24: bad record {tmp_path / 'aime24.jsonl'}:3: no answer field" in capsys.readouterr().out
    assert [rm["ground_truth"] for rm in pd.read_parquet(out / "aime24.parquet").reward_model] == ["2", "6"]
    # No record has an answer: that is the wrong dataset (or column mapping), and no set is written.
    _jsonl(tmp_path / "amc23.jsonl", [{"question": "1+1?", "solution": "2"}, {"question": "2+2?"}])
    assert eval_sets.main(["--local-path", str(tmp_path), "--out", str(tmp_path / "out2"), "--names", "aime24",
                           "amc23"]) == 2
    assert ("no record has ['answer']; the records' fields are ['question', 'solution']: is this the right "
            "dataset?") in _one_line_error(capsys)
    assert not (tmp_path / "out2").exists()


def test_verl_rows_help_describes_the_rows_and_points_at_the_scripts():
    """As a user ran it: `python data_prep/verl_rows.py --help` printed nothing."""
    import verl_rows

    done = _script("verl_rows.py", "--help")
    assert done.returncode == 0 and done.stdout.strip()
    for line in filter(None, (line.strip() for line in verl_rows.__doc__.splitlines())):
        assert line in done.stdout  # the module's own account of the row format, verbatim
    assert "deepmath.py --help" in done.stdout and "eval_sets.py --help" in done.stdout
