"""Where generation runs: the node's GPUs split into device groups, each model's problems into jobs, jobs run
as worker processes (:mod:`.worker`) that each see only their group (``CUDA_VISIBLE_DEVICES``).

With G groups and M models, each model's problems are dealt round-robin into ``max(1, G // M)`` shards (so
every shard holds a share of every benchmark and they take about as long), and the jobs run G at a time:
4 models on 8 GPUs run as 8 jobs at once, 2 models on 8 GPUs as 4 shards each. The planning is pure
(:func:`device_groups`, :func:`plan_jobs`) and the runner takes its process launcher as an argument, so both
are tested without a GPU.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Seconds between checks of the running workers.
POLL_S = 0.2


@dataclass(frozen=True)
class Job:
    """One model's share of the problems, run on one device group."""

    model: str  # the --model NAME
    indices: tuple[int, ...]  # positions in the evaluation's request list
    part: int = 1  # 1-based shard number of this model
    parts: int = 1


@dataclass
class JobResult:
    job: Job
    devices: tuple[str, ...]
    responses: list[list[str]]  # per index of job.indices, its samples' texts
    start_s: float  # when the job started, seconds after the first job did
    seconds: float  # wall time of the job, model load included


def visible_devices(cuda_visible: str | None = None, count: Callable[[], int] | None = None) -> list[str]:
    """CUDA device ids this process may use: ``CUDA_VISIBLE_DEVICES``'s entries when it is set, else
    ``0 .. n-1`` for the n devices torch sees (none on a CPU machine)."""
    cuda_visible = os.environ.get("CUDA_VISIBLE_DEVICES") if cuda_visible is None else cuda_visible
    if cuda_visible is not None:
        ids = []
        for entry in (d.strip() for d in cuda_visible.split(",")):
            if not entry or entry.startswith("-"):
                break  # CUDA ignores an invalid entry and all after it ("-1" hides every GPU)
            ids.append(entry)
        return ids
    if count is None:
        import torch

        count = torch.cuda.device_count
    return [str(i) for i in range(count())]


def device_groups(devices: Sequence[str], per_model: int) -> list[tuple[str, ...]]:
    """``devices`` in consecutive groups of ``per_model`` (a model's tensor-parallel size); devices left
    over are unused. No devices: one group ``()``, meaning this machine as it is (the CPU)."""
    if per_model < 1:
        raise ValueError(f"--devices-per-model must be >= 1, got {per_model}")
    if not devices:
        return [()]
    if len(devices) < per_model:
        raise ValueError(f"--devices-per-model {per_model} needs that many devices; {len(devices)} are visible "
                         f"({','.join(devices)})")
    return [tuple(devices[i:i + per_model]) for i in range(0, len(devices) - per_model + 1, per_model)]


def plan_jobs(models: Sequence[str], n_requests: int, n_groups: int) -> list[Job]:
    """Each model's requests dealt round-robin into ``max(1, n_groups // len(models))`` jobs (no empty ones),
    models in order."""
    parts = max(1, min(n_groups // max(1, len(models)), n_requests))
    return [Job(model, tuple(range(part, n_requests, parts)), part + 1, parts)
            for model in models for part in range(parts)]


class Launched:
    """What a launcher returns: a started process and how to read its result once it exits 0."""

    def __init__(self, process: subprocess.Popen, read: Callable[[], dict]):
        self.process, self.read = process, read


def run_jobs(jobs: Sequence[Job], groups: Sequence[tuple[str, ...]],
             launch: Callable[[Job, tuple[str, ...]], Launched]) -> list[JobResult]:
    """Run ``jobs`` at most one per group at a time, in order, each started as soon as a group is free.

    ``launch(job, group)`` starts the job's process; its ``read()`` returns ``{"responses": [...], ...}``.
    A job that fails stops the others and raises RuntimeError naming it. Results come back in job order.
    """
    pending, free = list(jobs), list(groups)
    running: list[tuple[Job, tuple[str, ...], Launched, float]] = []
    results: dict[Job, JobResult] = {}
    origin = time.perf_counter()
    try:
        while pending or running:
            while pending and free:
                job, group = pending.pop(0), free.pop(0)
                running.append((job, group, launch(job, group), time.perf_counter()))
            time.sleep(POLL_S)
            for entry in list(running):
                job, group, launched, started = entry
                code = launched.process.poll()
                if code is None:
                    continue
                running.remove(entry)
                if code != 0:
                    raise RuntimeError(f"generation for model {job.model} (part {job.part}/{job.parts}, devices "
                                       f"{','.join(group) or 'none'}) failed with exit status {code}; its "
                                       "error is above")
                results[job] = JobResult(job, group, launched.read()["responses"], started - origin,
                                         time.perf_counter() - started)
                free.append(group)
    finally:
        for _, _, launched, _ in running:
            launched.process.kill()
            launched.process.wait()
    return [results[job] for job in jobs]


def worker_launcher(spec_of: Callable[[Job, tuple[str, ...]], dict], workdir) -> Callable:
    """A ``launch`` for :func:`run_jobs` that starts ``python -m pion_rl.evaluate.worker`` on the job's spec
    (written under ``workdir``) with ``CUDA_VISIBLE_DEVICES`` set to the group (unchanged for ``()``)."""
    numbers = itertools.count()

    def launch(job: Job, group: tuple[str, ...]) -> Launched:
        number = next(numbers)
        spec_file, out_file = Path(workdir) / f"job{number}.json", Path(workdir) / f"out{number}.json"
        spec_file.write_text(json.dumps(spec_of(job, group)))
        env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": ",".join(group)} if group else {}))
        process = subprocess.Popen([sys.executable, "-m", "pion_rl.evaluate.worker", str(spec_file), str(out_file)],
                                   env=env)
        return Launched(process, lambda: json.loads(out_file.read_text()))

    return launch
