"""What a GPU recipe needs, checked before Ray starts: one line per missing piece, with the command that fixes it.

    python -m pion_rl.verl_plugin.preflight --n-gpus 8 [--nnodes 2] --train FILE [--val FILE ...] [--wandb] \
        [--cpu] [--config-dir configs --config-name qwen3_1.7b_deepmath -- HYDRA_OVERRIDE ...]

Checks verl 0.9.1 (the real package, not the checkout's ``verl/`` docs folder), verl's GPU-only dependencies,
the number of CUDA devices, the data files, the model (``--model``, else the composed config's: a local
directory, or a Hub id that is cached or can be downloaded), that the GPU counts fit every parallel size the
config sets, that pion-rl imports outside this checkout (Ray workers import the optimizer, engine and reward by
name) and, with ``--wandb``, that wandb has a key or an offline mode. With ``--cpu`` (verl's trainer on pion-rl's
CPU platform) the packages of the CPU extra replace the GPU stack and the device count. With ``--nnodes`` above
1 the Ray cluster (``RAY_ADDRESS``, else the one started on this machine) replaces this machine's devices: its
alive nodes and their GPUs, and, by one Ray task per node, that pion-rl imports there and the data and model are
readable there. Data files must be parquet with verl's row columns (their schema is read,
pion_rl.row_schema). Nothing is started. Exit status 0 when all is there, else 1 with the lines on stderr.
Standard library only at import time: it must run under any interpreter, including one without verl.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import netrc
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
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
    nnodes: int = 1,
    cluster: Callable[[list[str]], list[NodeReport] | str] | None = None,
) -> list[str]:
    """One line per missing piece, each naming what is missing and the command that fixes it (``wandb``: the
    run logs to wandb, so it needs credentials or an offline mode; ``model``: the model the run trains; ``cpu``:
    the run is verl's trainer on the CPU platform, so it needs the CPU extra instead of the GPU stack and
    devices; ``data_problem``: what keeps a data file from being verl rows; ``nnodes`` above 1: the Ray cluster's
    nodes replace this machine's devices, each asked by ``cluster(paths)``, :func:`ray_node_reports` on
    :func:`ray_address` by default)."""
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
    devices = None if cpu or nnodes > 1 else cuda_devices()
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
    if nnodes > 1:
        # Only paths this machine has: one missing here already has its line above, with its fix.
        local = [Path(p).expanduser() for p in (*train_files, *val_files, *([model] if model is not None else []))]
        paths = [str(p.absolute()) for p in local if p.exists()]
        ask = cluster or (lambda paths: ray_node_reports(ray_address(), paths))
        problems += cluster_problems(nnodes, n_gpus, ask(paths), ray_address())
    if wandb and not wandb_ready():
        problems.append("the run logs to wandb but finds no key: wandb login (or export WANDB_API_KEY=...), or "
                        "WANDB_MODE=offline to log locally, or trainer.logger='[console]'")
    return problems


# --- the GPU layout: counts against parallel sizes -------------------------------------------------------------

#: Config keys of the parallel sizes verl's workers divide the GPUs by: a rollout replica spans the product of
#: the first three; each Ulysses group spans its size.
ROLLOUT_SIZES = ("tensor_model_parallel_size", "data_parallel_size", "pipeline_model_parallel_size")
ULYSSES_SIZES = ("actor_rollout_ref.actor.ulysses_sequence_parallel_size",
                 "actor_rollout_ref.ref.ulysses_sequence_parallel_size")


def layout_problems(n_gpus: object, nnodes: object, rollout: dict[str, object],
                    ulysses: dict[str, object]) -> list[str]:
    """Why ``n_gpus`` per node on ``nnodes`` nodes cannot hold the parallel sizes, as verl's workers would assert
    after Ray start-up; empty if they can. ``rollout``: ``actor_rollout_ref.rollout.<size>`` for
    :data:`ROLLOUT_SIZES`; ``ulysses``: each of :data:`ULYSSES_SIZES`. Values as the config holds them."""
    counts = {"N_GPUS (trainer.n_gpus_per_node)": n_gpus, "NNODES (trainer.nnodes)": nnodes}
    bad = [f"{name} is {value!r}, not a whole number >= 1: set it to a GPU count such as 8"
           for name, value in counts.items() if not _positive_int(value)]
    sizes = {f"actor_rollout_ref.rollout.{k}": v for k, v in rollout.items()} | ulysses
    bad += [f"{name} is {value!r}, not a whole number >= 1: set it to 1 or a divisor of the GPU count"
            for name, value in sizes.items() if not _positive_int(value)]
    if bad:
        return bad
    gpus, problems = int(n_gpus) * int(nnodes), []
    replica = 1
    for value in rollout.values():
        replica *= int(value)
    spans = {" x ".join(f"actor_rollout_ref.rollout.{k}={v}" for k, v in rollout.items() if int(v) > 1): replica}
    spans |= {f"{name}={value}": int(value) for name, value in ulysses.items()}
    for what, span in spans.items():
        if gpus % span:
            problems.append(f"{what} spans {span} GPU(s), which does not divide the run's N_GPUS={n_gpus} x "
                            f"NNODES={nnodes} = {gpus}: set N_GPUS to a multiple of {span}, or the size to a "
                            f"divisor of {gpus}")
    if replica > int(n_gpus) and replica % int(n_gpus):
        problems.append(f"a rollout replica of {replica} GPUs spans nodes of N_GPUS={n_gpus}, which must divide it: "
                        f"set the rollout's parallel sizes to a multiple or a divisor of N_GPUS")
    return problems


def config_layout_problems(config) -> list[str]:
    """:func:`layout_problems` of a composed recipe config (an OmegaConf DictConfig)."""
    from omegaconf import OmegaConf

    def get(key: str):
        return OmegaConf.select(config, key, default=1)

    return layout_problems(get("trainer.n_gpus_per_node"), get("trainer.nnodes"),
                           {k: get(f"actor_rollout_ref.rollout.{k}") for k in ROLLOUT_SIZES},
                           {k: get(k) for k in ULYSSES_SIZES})


def _positive_int(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return value.isdigit() and int(value) >= 1
    return isinstance(value, int) and value >= 1


def composed_config(config_dir: str, config_name: str, overrides: list[str]):
    """``(config, problem)``: the recipe config Hydra composes (as main_ppo will), or None with the line saying
    why; ``(None, None)`` where Hydra or verl's config tree is not installed (the verl check says so)."""
    try:
        from hydra import compose, initialize_config_dir
        from hydra.errors import MissingConfigException
    except ImportError:
        return None, None
    try:
        with contextlib.redirect_stdout(sys.stderr), \
                initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base=None):
            return compose(config_name=config_name, overrides=overrides), None
    except MissingConfigException as error:
        if "verl.trainer.config" in str(error) or "ppo_trainer" in str(error):
            return None, None  # no verl: reported by missing_pieces
        reason = error
    except ImportError:
        return None, None
    except Exception as error:  # noqa: BLE001 - any composition failure is reported as one line
        reason = error
    text = " ".join(line.strip() for line in str(reason).splitlines() if line.strip())
    return None, (f"the recipe config {config_name} does not compose with these overrides ({text}): fix the "
                  f"override; DRY_RUN=1 shows the same error")


# --- a Ray cluster of several nodes ------------------------------------------------------------------------------


@dataclass
class NodeReport:
    """What one Ray task found on one alive node of the cluster."""

    name: str  #: the node's address and id prefix, as a line names it
    gpus: float  #: GPUs the node declares to Ray
    python: str = ""  #: the interpreter Ray's workers run there
    pion_rl: bool = True  #: whether pion_rl imports there
    unreadable: list[str] = field(default_factory=list)  #: the given paths that cannot be read there


def ray_address() -> str:
    """The cluster the launch joins: ``RAY_ADDRESS``, else ``auto`` (the one started on this machine)."""
    return os.environ.get("RAY_ADDRESS") or "auto"


def ray_node_reports(address: str, paths: list[str], timeout_s: float = 120.0) -> list[NodeReport] | str:
    """One :class:`NodeReport` per alive node of the Ray cluster at ``address``, from one task pinned to each;
    or the line saying that no cluster answers there. Joins the cluster as a driver and leaves it; starts none."""
    fix = ("start one: ray start --head --port=6379 on one node, ray start --address=<head>:6379 on the others "
           "(docs/multi-node.md), or set RAY_ADDRESS to its address")
    host, _, port = address.rpartition(":")
    if address != "auto" and "://" not in address and port.isdigit():
        with contextlib.suppress(OSError), socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
            port = ""
        if port:
            return f"no Ray cluster answers at RAY_ADDRESS={address}, and NNODES>1 needs one: {fix}"
    try:
        import ray
    except ImportError:
        return f"NNODES>1 joins a Ray cluster, but ray does not import for {sys.executable}: pip install ray"
    import logging

    try:
        with contextlib.redirect_stdout(sys.stderr):
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = "on this machine (RAY_ADDRESS is unset)" if address == "auto" else f"at RAY_ADDRESS={address}"
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return f"no Ray cluster {where} ({reason}), and NNODES>1 needs one: {fix}"
    try:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # Nested, so Ray ships it by value: it must run on a node where pion_rl does not import.
        def probe(paths: list[str]) -> tuple[str, bool, list[str]]:
            import importlib
            import os
            import sys

            try:
                importlib.import_module("pion_rl")
                found = True
            except Exception:  # noqa: BLE001 - any failure to import is "does not import"
                found = False
            return sys.executable, found, [p for p in paths if not os.access(p, os.R_OK)]

        task = ray.remote(num_cpus=0)(probe)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(paths) for n in nodes]
        reports = []
        for node, ref in zip(nodes, refs):
            report = NodeReport(f"{node['NodeManagerAddress']} ({node['NodeID'][:8]})",
                                node.get("Resources", {}).get("GPU", 0.0))
            try:
                report.python, report.pion_rl, report.unreadable = ray.get(ref, timeout=timeout_s)
            except Exception as error:  # noqa: BLE001 - a node whose task fails is reported, not raised
                report.python, report.pion_rl = f"(its task failed: {type(error).__name__})", False
            reports.append(report)
        return reports
    finally:
        ray.shutdown()


def cluster_problems(nnodes: int, n_gpus: int, reports: list[NodeReport] | str, address: str = "auto") -> list[str]:
    """One line per missing piece of a cluster for ``nnodes`` nodes of ``n_gpus`` GPUs (``reports``: from
    :func:`ray_node_reports`, or the line saying there is no cluster)."""
    if isinstance(reports, str):
        return [reports]
    join = f"ray start --address={'<head>:6379' if address == 'auto' else address}"
    problems = []
    if len(reports) < nnodes:
        problems.append(f"the Ray cluster has {len(reports)} alive node(s), the run needs NNODES={nnodes}: start Ray "
                        f"on the others ({join} --num-gpus={n_gpus}), or set NNODES={len(reports)}")
    full = [r for r in reports if r.gpus >= n_gpus]
    if len(full) < nnodes:
        problems += [f"node {r.name} has {r.gpus:g} GPU(s) in Ray, the run needs N_GPUS={n_gpus} on each of "
                     f"NNODES={nnodes} nodes: restart Ray there with --num-gpus={n_gpus}, or set N_GPUS to the "
                     f"nodes' count" for r in reports if r.gpus < n_gpus]
    for r in reports:
        if not r.pion_rl:
            problems.append(f"pion-rl does not import on node {r.name} ({r.python}), so its Ray workers cannot load "
                            f"it: install it there ({r.python} -m pip install -e {REPO_ROOT}, the checkout on a file "
                            f"system every node mounts)")
        problems += [f"{path} is not readable on node {r.name}: put it on a file system every node mounts (DATA_DIR, "
                     f"MODEL_PATH), or copy it to the same path there" for path in r.unreadable]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-gpus", type=int, required=True, help="GPUs per node")
    parser.add_argument("--nnodes", type=int, default=1, help="nodes; above 1, the Ray cluster is checked")
    parser.add_argument("--train", nargs="*", default=[], help="training parquet files")
    parser.add_argument("--val", nargs="*", default=[], help="validation parquet files")
    parser.add_argument("--wandb", action="store_true", help="the run logs to wandb: check its credentials")
    parser.add_argument("--model", default=None,
                        help="the model the run trains: a local directory or a Hub id (default: the config's)")
    parser.add_argument("--cpu", action="store_true", help="verl's CPU platform: no GPU stack or devices")
    parser.add_argument("--config-dir", default=str(REPO_ROOT / "configs"), help="directory of the recipe configs")
    parser.add_argument("--config-name", default=None, help="the recipe config the launch composes")
    parser.add_argument("overrides", nargs="*", help="the launch's Hydra overrides (after --)")
    args = parser.parse_args(argv)
    problems, model = [], args.model
    if args.config_name:
        config, problem = composed_config(args.config_dir, args.config_name, args.overrides)
        problems += [problem] if problem else []
        if config is not None:
            problems += config_layout_problems(config)
            if model is None:
                from omegaconf import OmegaConf

                model = OmegaConf.select(config, "actor_rollout_ref.model.path")
    problems += missing_pieces(args.n_gpus, args.train, args.val, wandb=args.wandb, model=model, cpu=args.cpu,
                               nnodes=args.nnodes)
    for line in problems:
        print(f"preflight: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
