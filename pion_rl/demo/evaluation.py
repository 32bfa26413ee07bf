"""The demo's final policies as Hugging Face directories, scored by ``pion_rl.evaluate`` like any GPU run.

After training, each optimizer's policy is saved with its tokenizer under ``<out_dir>/models/<optimizer>``, the
held-out problems as verl parquet at ``<out_dir>/heldout.parquet``, and the three are evaluated with
``python -m pion_rl.evaluate --backend hf`` (same code path) into ``<out_dir>/eval``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pion_rl.evaluate import cli
from pion_rl.evaluate.results import TABLE_FILE

from .config import DemoConfig
from .problems import DATA_SOURCE

VERL_COLUMNS = ("data_source", "prompt", "reward_model", "extra_info")


def model_dir(config: DemoConfig, optimizer: str) -> Path:
    return config.out_path / "models" / optimizer


def save_policy(config: DemoConfig, optimizer: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> Path:
    """Write the policy and its tokenizer where `evaluate_policies` (and any HF loader) finds them. The
    generation config records the response length it was trained with (``pion_rl.evaluate``'s default)."""
    directory = model_dir(config, optimizer)
    model.generation_config.max_new_tokens = config.max_new_tokens
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_heldout(rows: list[dict], path: Path) -> Path:
    """The held-out rows in verl's parquet schema (what data_prep writes), for ``pion_rl.evaluate --data``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{key: row[key] for key in VERL_COLUMNS} for row in rows]).to_parquet(path, index=False)
    return path


def evaluate_policies(config: DemoConfig, optimizers: list[str], heldout_rows: list[dict]) -> str:
    """Evaluate the saved policies on the held-out problems (avg@``eval_samples``); returns table.md's text."""
    data = write_heldout(heldout_rows, config.out_path / "heldout.parquet")
    out = config.out_path / "eval"
    argv = [arg for name in optimizers for arg in ("--model", f"{name}={model_dir(config, name)}")]
    argv += ["--data", str(data), "--k", f"{DATA_SOURCE}={config.eval_samples}", "--backend", "hf",
             "--seed", str(config.seed), "--out", str(out)]
    if cli.main(argv) != 0:
        raise RuntimeError(f"python -m pion_rl.evaluate {' '.join(argv)} failed (see above)")
    return (out / TABLE_FILE).read_text()
