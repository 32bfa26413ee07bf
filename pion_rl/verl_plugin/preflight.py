"""What a GPU recipe needs, checked before Ray starts: one line per missing piece, with the command that fixes it.

    python -m pion_rl.verl_plugin.preflight --n-gpus 8 --train FILE [--val FILE ...] [--wandb] [--cpu]

Checks verl 0.9.1 (the real package, not the checkout's ``verl/`` docs folder), verl's GPU-only dependencies,
the number of CUDA devices, the data files, the model (``--model``: a local directory, or a Hub id that is
cached or can be downloaded), that pion-rl imports outside this checkout (Ray workers import the optimizer,
engine and reward by name) and, with ``--wandb``, that wandb has a key or an offline mode. With ``--cpu``
(verl's trainer on pion-rl's CPU platform) the packages of the CPU extra replace the GPU stack and the device
count. Data files must be parquet with verl's row columns (their schema is read, pion_rl.row_schema).
Exit status 0 when all is there, else 1 with the lines on stderr.
Standard library only at import time: it must run under any interpreter, including one without verl.
"""

from __future__ import annotations

import argparse
import importlib.util
import netrc
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# Modules a verl 0.9.1 GPU run imports that a CPU install lacks, and how to get each.
GPU_MODULES = {
    "vllm": "pip install -r {repo}/verl/requirements-gpu.txt",
    "transfer_queue": "pip install -r {repo}/verl/requirements-gpu.txt",
    "flash_attn": "pip install --no-build-isolation flash-attn==2.8.3",
}
#: A Hugging Face Hub model id, ``org/name``.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# What verl's trainer imports on the CPU path (VERL_PLATFORM=cpu) beyond verl's own requirements.
CPU_MODULES = ("transfer_queue", "zmq", "msgspec", "cachetools", "uvicorn", "fastapi", "einops")


def find_module(name: str) -> bool:
    """True if module ``name`` (dotted) is importable here, found without importing it (verl's import takes
    seconds): the top-level package's spec, then the submodule's file under its search locations."""
    top, *rest = name.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None or not rest:
        return spec is not None
    return any((Path(location, *rest[:-1]) / f"{rest[-1]}.py").is_file()
               or (Path(location, *rest) / "__init__.py").is_file()
               for location in spec.submodule_search_locations or ())


def cuda_device_count() -> int | None:
    """CUDA devices torch sees; None if torch itself does not import (the verl check reports that)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.device_count()


def pion_rl_outside_checkout() -> bool:
    """True if a fresh interpreter started outside this checkout imports pion_rl, as a Ray worker must."""
    env = {k: v for k, v in os.environ.items() if k != "PREFLIGHT_PYTHONPATH"}
    env["PYTHONPATH"] = os.environ.get("PREFLIGHT_PYTHONPATH", "")  # the user's, not the one added to run this
    result = subprocess.run([sys.executable, "-c", "import pion_rl"], cwd="/", env=env, capture_output=True)
    return result.returncode == 0


def hub_offline() -> bool:
    """True if Hugging Face libraries will not download (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set
    true, as huggingface_hub reads them)."""
    return any(os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cached(model_id: str) -> bool | None:
    """True if the Hugging Face cache holds ``model_id``'s config.json; None if huggingface_hub does not import
    (then verl is missing too, which is reported on its own)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    return isinstance(try_to_load_from_cache(model_id, "config.json"), str)


def model_problem(model: str, cached: Callable[[str], bool | None] = hub_cached) -> str | None:
    """Why ``model`` (a local directory or a Hub id) cannot be loaded on this machine, with what to do; or None.

    A Hub id is fine when cached, or when downloads are allowed (verl's workers fetch it); while offline
    (:func:`hub_offline`) it must be in the cache.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return None
        return (f"model {model} is a directory without config.json, not a Hugging Face model: set MODEL_PATH to a "
                f"model directory (config.json, weights, tokenizer) or a Hub id such as Qwen/Qwen3-1.7B")
    if path.exists() or not HUB_ID.fullmatch(model) or model.startswith((".", "~")):
        return (f"model {model} is not a directory on this machine (nor a Hub id such as Qwen/Qwen3-1.7B): set "
                f"MODEL_PATH to the model's directory, or to its Hub id to download it")
    if hub_offline() and cached(model) is False:
        return (f"model {model} is not in the Hugging Face cache and HF_HUB_OFFLINE forbids downloading it: "
                f"run `hf download {model}` where the Hub is reachable (same HF_HOME), or set MODEL_PATH to a "
                f"local copy")
    return None


def wandb_can_log() -> bool:
    """True if wandb will log without asking for a key: offline or disabled mode, ``WANDB_API_KEY``, or the
    ``~/.netrc`` entry that ``wandb login`` writes. Without one, ``wandb.init`` fails inside the trainer after
    Ray and the rollout workers are up."""
    if os.environ.get("WANDB_MODE") in ("offline", "disabled") or os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def verl_rows_problem(file: str) -> str | None:
    """What keeps data ``file`` from being verl rows (:func:`pion_rl.row_schema.schema_problem`); None without
    pyarrow, whose absence the verl check reports."""
    if not find_module("pyarrow"):
        return None
    from pion_rl.row_schema import schema_problem

    return schema_problem(Path(file).expanduser())


def missing_pieces(
    n_gpus: int,
    train_files: list[str],
    val_files: list[str],
    find: Callable[[str], bool] = find_module,
    cuda_devices: Callable[[], int | None] = cuda_device_count,
    pion_rl_importable: Callable[[], bool] = pion_rl_outside_checkout,
    python: str = sys.executable,
    wandb: bool = False,
    wandb_ready: Callable[[], bool] = wandb_can_log,
    model: str | None = None,
    model_cached: Callable[[str], bool | None] = hub_cached,
    cpu: bool = False,
    data_problem: Callable[[str], str | None] = verl_rows_problem,
) -> list[str]:
    """One line per missing piece, each naming what is missing and the command that fixes it (``wandb``: the
    run logs to wandb, so it needs credentials or an offline mode; ``model``: the model the run trains; ``cpu``:
    the run is verl's trainer on the CPU platform, so it needs the CPU extra instead of the GPU stack and
    devices; ``data_problem``: what keeps a data file from being verl rows)."""
    problems = []
    if not find("verl.trainer.main_ppo"):
        found = "import verl finds only the checkout's verl/ docs folder" if find("verl") else "no verl at all"
        problems.append(f"verl 0.9.1 is not installed for {python} ({found}): "
                        f"{python} -m pip install -r {REPO_ROOT}/verl/requirements-gpu.txt")
    for module, fix in ({} if cpu else GPU_MODULES).items():
        if not find(module):
            problems.append(f"verl's GPU stack lacks {module}: {python} -m {fix.format(repo=REPO_ROOT)}")
    for module in CPU_MODULES if cpu else ():
        if not find(module):
            problems.append(f"verl's trainer on CPU imports {module}, which is missing: "
                            f"{python} -m pip install -e '{REPO_ROOT}[cpu]'")
    devices = None if cpu else cuda_devices()
    if devices is not None and devices < n_gpus:
        problems.append(f"{devices} CUDA device(s) visible, the run needs N_GPUS={n_gpus}: run on a node with "
                        f"{n_gpus} GPUs, or set N_GPUS to this node's count (nvidia-smi -L lists them)")
    for file in train_files:
        if not Path(file).expanduser().is_file():
            problems.append(f"training data {file} is missing: {python} {REPO_ROOT}/data_prep/deepmath.py "
                            f"--out {Path(file).expanduser().parent}")
        elif problem := data_problem(file):
            problems.append(f"training data {file} {problem}: use the train.parquet that {python} "
                            f"{REPO_ROOT}/data_prep/deepmath.py writes")
    for file in val_files:
        if not Path(file).expanduser().is_file():
            path = Path(file).expanduser()
            problems.append(f"validation set {file} is missing: {python} {REPO_ROOT}/data_prep/eval_sets.py "
                            f"--out {path.parent} --names {path.stem}")
        elif problem := data_problem(file):
            problems.append(f"validation set {file} {problem}: use a <benchmark>.parquet that {python} "
                            f"{REPO_ROOT}/data_prep/eval_sets.py writes")
    if model is not None and (problem := model_problem(model, model_cached)):
        problems.append(problem)
    if not pion_rl_importable():
        problems.append(f"pion-rl does not import outside this checkout, so Ray workers cannot load it: "
                        f"{python} -m pip install -e {REPO_ROOT}")
    if wandb and not wandb_ready():
        problems.append("the run logs to wandb but finds no key: wandb login (or export WANDB_API_KEY=...), or "
                        "WANDB_MODE=offline to log locally, or trainer.logger='[console]'")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-gpus", type=int, required=True)
    parser.add_argument("--train", nargs="*", default=[], help="training parquet files")
    parser.add_argument("--val", nargs="*", default=[], help="validation parquet files")
    parser.add_argument("--wandb", action="store_true", help="the run logs to wandb: check its credentials")
    parser.add_argument("--model", default=None, help="the model the run trains: a local directory or a Hub id")
    parser.add_argument("--cpu", action="store_true", help="verl's CPU platform: no GPU stack or devices")
    args = parser.parse_args(argv)
    problems = missing_pieces(args.n_gpus, args.train, args.val, wandb=args.wandb, model=args.model, cpu=args.cpu)
    for line in problems:
        print(f"preflight: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
