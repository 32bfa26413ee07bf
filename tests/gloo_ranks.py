"""Run a function on N gloo ranks in spawned processes, as the distributed tests need.

Ranks meet through a file store (no port to race for); a rank's exception comes back with its traceback,
and a rank that hangs in a collective fails the call after a timeout instead of blocking the suite. The
timeout is a hang guard, not a time limit: its default is ten times what the slowest caller takes on a loaded
2-core machine, so only a real hang reaches it.
Functions passed in must be importable by the children (module-level functions in tests/ modules).
"""

from __future__ import annotations

import os
import queue
import tempfile
import time
import traceback
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


#: Seconds before a rank that has not reported counts as hung (the slowest callers take about a minute loaded).
HANG_GUARD_S = 600.0


def run_on_ranks(fn, world_size: int, *args, timeout: float = HANG_GUARD_S) -> list:
    """Run ``fn(*args)`` on ``world_size`` gloo ranks and return each rank's result.

    A rank's exception is re-raised here with its traceback; a rank that dies fails the call at once, one that
    hangs (e.g. in a collective) after ``timeout`` seconds instead of blocking the test run. Every child is
    killed.
    """
    ctx = mp.get_context("spawn")
    reports = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "rendezvous")  # a file store: no port to race for
        procs = [ctx.Process(target=_rank_main, args=(rank, world_size, store, timeout, fn, args, reports),
                             daemon=True) for rank in range(world_size)]
        for proc in procs:
            proc.start()
        results: dict[int, object] = {}
        deadline = time.monotonic() + timeout
        try:
            while len(results) < world_size:
                if time.monotonic() > deadline:
                    missing = sorted(set(range(world_size)) - set(results))
                    raise TimeoutError(f"ranks {missing} of {world_size} did not finish within {timeout:.0f} s")
                try:
                    rank, ok, payload = reports.get(timeout=0.5)
                except queue.Empty:
                    dead = [r for r, p in enumerate(procs) if r not in results and p.exitcode not in (None, 0)]
                    if dead:
                        raise RuntimeError(f"rank {dead[0]} died with exit code {procs[dead[0]].exitcode}") from None
                    continue
                if not ok:
                    raise AssertionError(f"rank {rank} of {world_size} failed:\n{payload}")
                results[rank] = payload
        finally:
            for proc in procs:
                proc.join(timeout=10 if len(results) == world_size else 0.5)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
    return [results[rank] for rank in range(world_size)]


def _rank_main(rank, world_size, store, timeout, fn, args, reports):
    torch.set_num_threads(1)  # several ranks share two cores
    # verl's workers read their rank from the environment, as under torchrun.
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout))
    try:
        reports.put((rank, True, fn(*args)))
    except BaseException:  # noqa: BLE001 - the parent re-raises it with this rank's traceback
        reports.put((rank, False, traceback.format_exc()))
    finally:
        dist.destroy_process_group()
