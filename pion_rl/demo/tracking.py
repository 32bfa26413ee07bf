"""Where a demo run's metrics go: verl's file logger (JSONL) and wandb (offline unless a key is set).

Under ``out_dir``: ``runs/<run>.jsonl``, ``runs/<optimizer>.settings.json`` (the settings it ran with) and
``wandb/<optimizer>/`` (wandb's own folders inside), beside ``models/<optimizer>``. A run is written under
``out_dir/.in-progress`` and moved into place only once all its seeds have finished (`commit_runs`), replacing
that optimizer's previous logs and model: what ``out_dir`` holds is always the latest complete run (or seeds)
of each optimizer, never a partial one.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from verl.utils.tracking import FileLogger

WANDB_PROJECT = "pion-rl-demo"


def jsonl_path(out_dir: Path, run_name: str) -> Path:
    return out_dir / "runs" / f"{run_name}.jsonl"


def wandb_dir(out_dir: Path, optimizer: str) -> Path:
    """The folder wandb writes ``optimizer``'s runs under."""
    return out_dir / "wandb" / optimizer


def settings_path(out_dir: Path, optimizer: str) -> Path:
    return out_dir / "runs" / f"{optimizer}.settings.json"


def in_progress_dir(out_dir: Path) -> Path:
    """Where runs are written until they are complete (same layout as ``out_dir``)."""
    return out_dir / ".in-progress"


def commit_runs(out_dir: Path, optimizer: str, settings: dict) -> None:
    """Replace ``optimizer``'s logs and model in ``out_dir`` with the complete ones under `in_progress_dir`,
    and record the settings they ran with."""
    staged = in_progress_dir(out_dir)
    clear_previous_logs(out_dir, optimizer)
    shutil.rmtree(out_dir / "models" / optimizer, ignore_errors=True)
    (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    for path in _run_logs(staged, optimizer):
        path.replace(out_dir / "runs" / path.name)
    for folder in (wandb_dir(staged, optimizer), staged / "models" / optimizer):
        if folder.exists():
            target = out_dir / folder.relative_to(staged)
            target.parent.mkdir(parents=True, exist_ok=True)
            folder.replace(target)
    settings_path(out_dir, optimizer).write_text(json.dumps(settings, indent=1) + "\n")
    shutil.rmtree(staged, ignore_errors=True)


def discard_in_progress(out_dir: Path) -> None:
    shutil.rmtree(in_progress_dir(out_dir), ignore_errors=True)


def committed_settings(out_dir: Path, optimizer: str) -> dict | None:
    """The settings ``optimizer``'s runs in ``out_dir`` ran with, or None if it has none."""
    path = settings_path(out_dir, optimizer)
    return json.loads(path.read_text()) if path.exists() else None


def clear_previous_logs(out_dir: Path, optimizer: str) -> None:
    """Remove the JSONL logs (``<optimizer>.jsonl``, ``<optimizer>-seed<s>.jsonl``), settings and wandb runs
    that an earlier invocation left for ``optimizer``."""
    for path in _run_logs(out_dir, optimizer):
        path.unlink()
    settings_path(out_dir, optimizer).unlink(missing_ok=True)
    shutil.rmtree(wandb_dir(out_dir, optimizer), ignore_errors=True)


def _run_logs(out_dir: Path, optimizer: str) -> list[Path]:
    return [*out_dir.glob(f"runs/{optimizer}.jsonl"), *out_dir.glob(f"runs/{optimizer}-seed*.jsonl")]


def wandb_mode(setting: str) -> str:
    """auto -> online when WANDB_API_KEY is set, else offline (never prompts for a login)."""
    if setting == "auto":
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return setting


class RunTracker:
    """Logs one run's metrics per step to `jsonl_path` (verl's FileLogger format, what `pion_rl.compare`
    and verl's GPU runs share) and to a wandb run under `wandb_dir`."""

    def __init__(self, run_name: str, jsonl_path: Path, wandb_dir: Path, config: dict, wandb_setting: str):
        jsonl_path.parent.mkdir(parents=True, exist_ok=True)
        with _env(VERL_FILE_LOGGER_PATH=str(jsonl_path)):  # FileLogger takes its path from the environment
            self.file_logger = FileLogger(WANDB_PROJECT, run_name)
        self.wandb_run = None
        mode = wandb_mode(wandb_setting)
        if mode != "disabled":
            import wandb

            wandb_dir.mkdir(parents=True, exist_ok=True)
            self.wandb_run = wandb.init(
                project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT),
                name=run_name,
                config=config,
                dir=str(wandb_dir),
                mode=mode,
                reinit="create_new",
                settings=wandb.Settings(silent=True, console="off"),
            )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.file_logger.log(metrics, step)
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=step)

    def finish(self) -> None:
        self.file_logger.finish()
        if self.wandb_run is not None:
            self.wandb_run.finish()


@contextmanager
def _env(**values: str):
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
