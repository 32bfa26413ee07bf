"""Process-side code of tests/test_telemetry.py: optimizer telemetry through verl's FSDP2 engine on gloo ranks.

Each step runs verl's own ``train_batch`` (zero grad, forward/backward, ``optimizer_step`` with clipping, then the
plugin's metrics); only ``forward_backward_batch`` is replaced by a plain causal-LM loss on random tokens, since
verl's micro-batching needs rollout data. Rank 0 returns the full weights for the test to recompute every metric.
"""

from __future__ import annotations

import os
import time
import warnings
from contextlib import ExitStack
from unittest import mock

import torch
import torch.distributed as dist
from verl_plugin_workers import TINY_QWEN3, _cpu_device_patches, build_engine

LR = 1e-3
PION_OPTIONS = {"variant": "lie_lie", "update_side": "alternate", "exp_map": "taylor", "betas": [0.9, 0.999]}


def _full_weights(engine) -> dict:
    # numpy, not tensors: torch would pass tensors to the parent by file descriptors of a process that exits.
    return {n: p.full_tensor().detach().numpy().copy() for n, p in engine.module.named_parameters()}


def _step(engine, seed: int) -> dict:
    """One verl ``train_batch``; returns its ``optim/*`` metrics (verl ``Metric`` values, aggregated)."""

    def forward_backward(data, loss_function, forward_only=False):
        torch.manual_seed(seed)
        ids = torch.randint(0, TINY_QWEN3["vocab_size"], (2, 12))
        logits = engine.module(input_ids=ids).logits.float()
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        return {"metrics": {}, "loss": [loss.item()]}

    from tensordict import TensorDict

    with ExitStack() as stack:
        _cpu_device_patches(stack)
        stack.enter_context(mock.patch.object(engine, "forward_backward_batch", forward_backward))
        started = time.perf_counter()
        outputs = engine.train_batch(TensorDict({}, batch_size=[]), loss_function=None)
        wall = time.perf_counter() - started
    metrics = {k: v.aggregate() for k, v in outputs["metrics"].items() if k.startswith("optim/")}
    return {"metrics": metrics, "train_batch_s": wall}


def _max_generator_norm(optimizer) -> float:
    """Largest Frobenius norm of an applied generator (any unit, any rank) in the last Pion step."""
    local = max((float(s["generator_norm"].max()) for s in optimizer.last_step_stats.values()), default=0.0)
    value = torch.tensor(local)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return float(value)


def _run(engine, steps: int, seed0: int = 0) -> dict:
    """``steps`` train_batch calls: per step the metrics and (rank 0) the full weights after it, and how many
    matrices had their singular values computed on this rank."""
    rank0 = dist.get_rank() == 0
    record = {"weights": [_full_weights(engine)], "metrics": [], "train_batch_s": [], "max_generator_norm": [],
              "grads_after_first_step": None}
    from pion_rl.telemetry import spectra

    with mock.patch("pion_rl.telemetry.monitor.unit_singular_values", wraps=spectra.unit_singular_values) as svdvals:
        for step in range(steps):
            out = _step(engine, seed0 + step)
            record["metrics"].append(out["metrics"])
            record["train_batch_s"].append(out["train_batch_s"])
            if hasattr(engine.optimizer, "last_step_stats"):
                record["max_generator_norm"].append(_max_generator_norm(engine.optimizer))
            if step == 0:
                grads = {n: p.grad.full_tensor().numpy().copy() for n, p in engine.module.named_parameters()
                         if p.grad is not None}
                record["grads_after_first_step"] = grads if rank0 else None
            weights = _full_weights(engine)
            record["weights"].append(weights if rank0 else None)
    record["svdvals_calls"] = svdvals.call_count
    if not rank0:
        record["weights"] = None
    record["local_state_bytes"] = sum(t.to_local().numel() * t.element_size() if hasattr(t, "to_local")
                                      else t.numel() * t.element_size()
                                      for s in engine.optimizer.state.values() for t in s.values()
                                      if isinstance(t, torch.Tensor))
    return record


def metrics_report(model_dir: str) -> dict:
    """AdamW and Pion with singular values every step, Muon with them off; 4 steps each on the same batches."""
    import pion_rl.verl_plugin.engine  # noqa: F401 - what external_lib does in a verl worker

    runs = {}
    for name, options, every, steps in (("AdamW", {}, 1, 4), ("Pion", PION_OPTIONS, 1, 4), ("Muon", {}, 0, 2)):
        engine = build_engine(model_dir, "fsdp2", "pion_rl.optim", name,
                              {**options, "telemetry": {"spectrum_every": every}}, lr=LR,
                              weight_decay=0.0 if name == "Pion" else 0.01)
        runs[name] = _run(engine, steps)
    return runs


def resume_report(model_dir: str, checkpoint_dir: str) -> dict:
    """Pion through verl's checkpoint manager: 2 steps, save, 2 more; a fresh engine loads and takes the same
    2 steps; a third loads a copy of the checkpoint whose optimizer files lack the telemetry entry."""
    import pion_rl.verl_plugin.engine  # noqa: F401

    def build():
        return build_engine(model_dir, "fsdp2", "pion_rl.optim", "Pion",
                            {**PION_OPTIONS, "telemetry": {"spectrum_every": 1}}, lr=LR, weight_decay=0.0)

    def checkpoint(stack: ExitStack) -> None:
        _cpu_device_patches(stack)
        stack.enter_context(mock.patch("verl.workers.engine.fsdp.transformer_impl.load_fsdp_model_to_gpu"))

    straight = build()
    before = _run(straight, 2)
    with ExitStack() as stack:
        checkpoint(stack)
        straight.save_checkpoint(checkpoint_dir, global_step=2)
    after = _run(straight, 2, seed0=2)

    resumed = build()
    with ExitStack() as stack:
        checkpoint(stack)
        resumed.load_checkpoint(checkpoint_dir, del_local_after_load=False)
    resumed_run = _run(resumed, 2, seed0=2)

    dist.barrier()
    rank = dist.get_rank()
    path = os.path.join(checkpoint_dir, f"optim_world_size_2_rank_{rank}.pt")
    saved = torch.load(path, weights_only=False)
    had_entry = "telemetry" in saved
    saved.pop("telemetry", None)
    torch.save(saved, path)
    dist.barrier()
    legacy = build()
    with ExitStack() as stack, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checkpoint(stack)
        legacy.load_checkpoint(checkpoint_dir, del_local_after_load=False)
    legacy_run = _run(legacy, 1, seed0=2)
    return {
        "before": before, "after": after, "resumed": resumed_run, "legacy": legacy_run, "saved_had_entry": had_entry,
        "legacy_warnings": [str(w.message) for w in caught if "telemetry" in str(w.message)],
    }


def replicated_report() -> dict:
    """DDP layout: every rank holds the whole model (plain tensors) and Pion owns each matrix on one rank of the
    process group; the telemetry over the group must report what a one-process run on a copy reports."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from pion_rl.optim import Pion
    from pion_rl.telemetry import OptimizerTelemetry

    def run(process_group) -> list[dict]:
        torch.manual_seed(0)  # the same weights and batches on every rank, as DDP keeps them
        model = Qwen3ForCausalLM(Qwen3Config(**TINY_QWEN3))
        optimizer = Pion(model.named_parameters(), lr=LR, update_side="alternate", head_dim=TINY_QWEN3["head_dim"],
                         process_group=process_group)
        telemetry = OptimizerTelemetry(optimizer, model.named_parameters(), head_dim=TINY_QWEN3["head_dim"],
                                       spectrum_every=1, process_group=process_group)
        metrics = []
        for _ in range(2):
            ids = torch.randint(0, TINY_QWEN3["vocab_size"], (2, 12))
            optimizer.zero_grad()
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            metrics.append({k: v for k, v in telemetry.pop_metrics().items() if not k.endswith("_s")})
        return metrics

    return {"group": run(dist.group.WORLD), "alone": run(None)}
