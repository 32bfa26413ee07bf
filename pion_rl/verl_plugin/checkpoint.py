"""verl checkpoints as Hugging Face model directories (what transformers and vLLM load).

verl 0.9.1's FSDP checkpoint of a step is ``<run>/global_step_<N>/actor/``: one model / optimizer / extra
shard per rank (``model_world_size_<W>_rank_<R>.pt``), ``fsdp_config.json``, and ``huggingface/`` with the
model config and tokenizer. With ``hf_model`` in ``actor.checkpoint.save_contents`` (the recipes set it)
``huggingface/`` also holds the full weights, so it is a complete model directory. Without it, verl's model
merger (``verl.model_merger``) builds one from the shards, in bf16.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

LATEST_FILE = "latest_checkpointed_iteration.txt"  # verl's tracker of the last complete save of a run
_WEIGHTS = ("*.safetensors", "pytorch_model*.bin")


def is_hf_model_dir(path: str | Path) -> bool:
    """True if ``path`` holds a model config and weights."""
    path = Path(path)
    return (path / "config.json").is_file() and any(any(path.glob(p)) for p in _WEIGHTS)


def actor_dir(path: str | Path) -> Path | None:
    """The actor checkpoint under ``path``: ``path`` itself, ``path/actor`` (a ``global_step_N`` directory), or
    the latest step of a run directory (``trainer.default_local_dir``); None if ``path`` is no verl checkpoint."""
    path = Path(path)
    if (path / "fsdp_config.json").is_file():
        return path
    if (path / "actor" / "fsdp_config.json").is_file():
        return path / "actor"
    step = latest_step_dir(path)
    return actor_dir(step) if step is not None else None


def latest_step_dir(run_dir: str | Path) -> Path | None:
    """``global_step_<N>`` of a run directory that verl's tracker file names: the last save that completed (verl
    writes the tracker after every file of the step). None without a tracker or its step: a ``global_step_<N>``
    the tracker does not name may be half-written by a run killed while saving, so it is never guessed from."""
    run_dir = Path(run_dir)
    tracker = run_dir / LATEST_FILE
    if not tracker.is_file():
        return None
    step = run_dir / f"global_step_{tracker.read_text().strip()}"
    return step if step.is_dir() else None


def config_dir(path: str | Path) -> Path:
    """The directory holding the model's ``config.json`` (and tokenizer): ``path`` itself for a Hugging Face
    directory, a verl checkpoint's ``actor/huggingface``. Reads and writes nothing else; raises
    FileNotFoundError saying what was expected if ``path`` is neither."""
    path = Path(path).expanduser()
    if is_hf_model_dir(path):
        return path
    actor = actor_dir(path)
    if actor is None and any(path.glob("global_step_*")) and not (path / LATEST_FILE).is_file():
        raise FileNotFoundError(
            f"{path} holds global_step_<N> directories but no {LATEST_FILE}, so none of its saves completed (a run "
            f"killed while saving): pass one global_step_<N> directory to use it as it is")
    if actor is None or not (actor / "huggingface" / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} is neither a Hugging Face model directory (config.json and weights) nor a verl checkpoint "
            f"(a run directory with global_step_<N>/actor/, a global_step_<N> directory or an actor directory, "
            f"with actor/huggingface/config.json)"
        )
    return actor / "huggingface"


def hf_model_dir(path: str | Path, export_dir: str | Path) -> Path:
    """A directory transformers and vLLM load for the model at ``path``.

    ``path`` is a Hugging Face model directory (returned as is) or a verl checkpoint (see `actor_dir`): its
    ``huggingface/`` if that holds weights, else the shards merged into ``export_dir`` (bf16, with the
    checkpoint's tokenizer). Raises FileNotFoundError saying what was expected if ``path`` is neither.
    """
    found = config_dir(path)
    if is_hf_model_dir(found):
        return found
    export_dir = Path(export_dir)
    if not is_hf_model_dir(export_dir):
        merge_to_hf(found.parent, export_dir)
    return export_dir


def merge_to_hf(actor: str | Path, target_dir: str | Path) -> Path:
    """Merge an FSDP actor checkpoint's model shards into a Hugging Face directory with verl's model merger
    (weights in bf16, config, generation config and tokenizer from ``actor/huggingface``)."""
    from verl.model_merger.base_model_merger import ModelMergerConfig
    from verl.model_merger.fsdp_model_merger import FSDPModelMerger

    actor, target_dir = Path(actor), Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    config = ModelMergerConfig(operation="merge", backend="fsdp", local_dir=str(actor), target_dir=str(target_dir),
                               hf_model_config_path=str(actor / "huggingface"))
    with contextlib.redirect_stdout(sys.stderr):  # the merger reports on stdout; ours carries results only
        FSDPModelMerger(config).merge_and_save()
    return target_dir
