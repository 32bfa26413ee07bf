"""Process-side code of tests/test_verl_plugin_on_cpu.py: verl's FSDP engine on CPU under gloo.

Spawned children import this module by its bare name (pytest puts tests/ on sys.path, and multiprocessing's
spawn hands the parent's sys.path to the children), so it must stay importable without pytest.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import torch

#: Tiny Qwen3: head_dim 16 (not hidden / heads = 24) so the plugin must read ``head_dim`` from the config.
TINY_QWEN3 = dict(
    vocab_size=128, hidden_size=96, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, max_position_embeddings=64, tie_word_embeddings=False,
)
TINY_HEAD_DIM = TINY_QWEN3["head_dim"]


#: Tiny Qwen3-MoE: 4 experts stored packed as transformers 5 does (gate_up_proj [E, 2I, H], down_proj [E, H, I]),
#: so FSDP2's Shard(0) leaves 2 whole experts on each of 2 ranks.
TINY_QWEN3_MOE = dict(
    vocab_size=128, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_experts=4,
    num_experts_per_tok=2, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
    max_position_embeddings=64, tie_word_embeddings=False,
)


def write_tiny_qwen3(directory: Path) -> Path:
    """Save a randomly initialised tiny Qwen3ForCausalLM (config + weights) for verl's loader to read."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    Qwen3ForCausalLM(Qwen3Config(**TINY_QWEN3)).save_pretrained(directory)
    return directory


def write_tiny_qwen3_moe(directory: Path) -> Path:
    """Save a randomly initialised tiny Qwen3MoeForCausalLM for verl's loader to read."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(0)
    Qwen3MoeForCausalLM(Qwen3MoeConfig(**TINY_QWEN3_MOE)).save_pretrained(directory)
    return directory


def _cpu_device_patches(stack: ExitStack) -> None:
    # verl has no CPU platform: its FSDP code asks for the accelerator by name / index and reads device memory
    # for its logs. Point those at the CPU (verl's own *_on_cpu tests patch the memory probe the same way); the
    # engine's logic is untouched.
    for target in ("verl.workers.engine.fsdp.utils.get_device_name",
                   "verl.workers.engine.fsdp.transformer_impl.get_device_name"):
        stack.enter_context(mock.patch(target, return_value="cpu"))
    stack.enter_context(mock.patch("verl.utils.profiler.performance._get_current_mem_info",
                                   return_value=("0", "0", "0", "0")))
    for target in ("verl.utils.fsdp_utils.get_device_id", "verl.workers.engine.fsdp.transformer_impl.get_device_id"):
        stack.enter_context(mock.patch(target, return_value="cpu"))


def build_engine(model_dir: str, strategy: str, optimizer_impl: str, optimizer: str, overrides: dict | None,
                 lr: float = 1e-3, weight_decay: float = 0.01, checkpoint_config=None, load_tokenizer: bool = False,
                 **model_options):
    """verl's engine for a language model, looked up in EngineRegistry and initialised: model, FSDP, optimizer.
    ``model_options`` go to verl's HFModelConfig (e.g. ``lora_rank``, ``target_modules``)."""
    from verl.trainer.config import CheckpointConfig
    from verl.workers.config import FSDPEngineConfig, FSDPOptimizerConfig, HFModelConfig
    from verl.workers.engine import EngineRegistry

    model_config = HFModelConfig(path=model_dir, load_tokenizer=load_tokenizer, use_remove_padding=False,
                                 enable_gradient_checkpointing=False,
                                 override_config={"attn_implementation": "eager"}, **model_options)
    engine_config = FSDPEngineConfig(strategy=strategy, use_torch_compile=False)
    optimizer_config = FSDPOptimizerConfig(lr=lr, weight_decay=weight_decay, optimizer_impl=optimizer_impl,
                                           optimizer=optimizer, override_optimizer_config=overrides,
                                           total_training_steps=1)
    with ExitStack() as stack:
        _cpu_device_patches(stack)
        engine = EngineRegistry.new(model_type="language_model", backend=strategy, model_config=model_config,
                                    engine_config=engine_config, optimizer_config=optimizer_config,
                                    checkpoint_config=checkpoint_config or CheckpointConfig())
        engine.initialize()
    return engine


def _group_summary(optimizer) -> list[dict]:
    return [
        {
            "algorithm": g.get("algorithm"),
            "row_block": g.get("row_block"),
            "names": list(g.get("param_names", [])),
            "weight_decay": g["weight_decay"],
            "adamw_weight_decay": g.get("adamw_weight_decay"),
            "numel": [p.numel() for p in g["params"]],
            "dtensor": all(type(p).__name__ == "DTensor" for p in g["params"]),
        }
        for g in optimizer.param_groups
    ]


def _train_step(engine) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """One forward/backward on random tokens, then verl's optimizer_step (clip + step); full weights before/after."""
    module = engine.module
    engine.optimizer.zero_grad(set_to_none=True)  # as verl's training loop does before each batch
    before = {n: p.full_tensor().detach().clone() for n, p in module.named_parameters()}
    torch.manual_seed(1)
    ids = torch.randint(0, TINY_QWEN3["vocab_size"], (2, 12))  # the MoE model has the same vocabulary
    logits = module(input_ids=ids).logits.float()
    torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
    with ExitStack() as stack:
        _cpu_device_patches(stack)
        engine.optimizer_step()
    return {n: (before[n], p.full_tensor().detach().clone()) for n, p in module.named_parameters()}


def _blocks(name: str, weight: torch.Tensor) -> list[torch.Tensor]:
    per_head = any(part in name for part in ("q_proj", "k_proj", "v_proj"))
    return list(weight.split(TINY_HEAD_DIM)) if per_head else [weight]


def step_measurements(weights: dict[str, tuple[torch.Tensor, torch.Tensor]], lr: float) -> dict[str, dict]:
    """Per parameter: relative change, update RMS / (lr * 0.2), and the largest relative singular-value drift
    over its blocks (q/k/v per head, else the whole matrix; None for non-matrices)."""
    out = {}
    for name, (before, after) in weights.items():
        drift = None
        if before.ndim == 2:
            drift = max(
                ((torch.linalg.svdvals(a.double()) - torch.linalg.svdvals(b.double())).abs().max()
                 / torch.linalg.svdvals(b.double()).max()).item()
                for b, a in zip(_blocks(name, before), _blocks(name, after))
            )
        out[name] = {
            "change": ((after - before).norm() / before.norm()).item(),
            "update_rms_over_target": ((after - before).pow(2).mean().sqrt() / (lr * 0.2)).item(),
            "sv_drift": drift,
        }
    return out


STEP_LR = 1e-2
# Cayley is exactly orthogonal, so a Pion step must keep every block's singular values to rounding error.
PION_OPTIONS = {"variant": "lie_lie", "update_side": "alternate", "exp_map": "cayley", "betas": [0.9, 0.999]}
MUON_OPTIONS = {"momentum": 0.95, "nesterov": True}


def engine_report(model_dir: str) -> dict:
    """Everything tests/test_verl_plugin_on_cpu.py asserts on, from one process group (spawning is the slow part)."""
    import pion_rl.verl_plugin.engine  # noqa: F401 - what external_lib does in a verl worker
    from verl.workers.engine import EngineRegistry, FSDPEngineWithLMHead

    backends = ("fsdp", "fsdp2")
    report = {"engine_cls": {b: EngineRegistry.get_engine_cls("language_model", b).__name__ for b in backends}}
    for name, options in (("Pion", PION_OPTIONS), ("Muon", MUON_OPTIONS)):
        # No weight decay on the matrices (as in the Pion recipe): only the update itself moves them.
        engine = build_engine(model_dir, "fsdp2", "pion_rl.optim", name, options, lr=STEP_LR, weight_decay=0.0)
        report[name] = {"cls": type(engine.optimizer).__name__, "groups": _group_summary(engine.optimizer),
                        "step": step_measurements(_train_step(engine), STEP_LR)}
    engine = build_engine(model_dir, "fsdp2", "pion_rl.optim", "AdamW", None)
    report["AdamW"] = {"cls": type(engine.optimizer).__module__ + "." + type(engine.optimizer).__name__,
                       "groups": _group_summary(engine.optimizer)}
    engine = build_engine(model_dir, "fsdp2", "torch.optim", "AdamW", None)
    verl_default = FSDPEngineWithLMHead._build_optimizer(engine, engine.module)
    report["torch.optim"] = {
        "groups": _group_summary(engine.optimizer), "verl_default_groups": _group_summary(verl_default),
        "same_params": [p is q for p, q in zip(engine.optimizer.param_groups[0]["params"],
                                                verl_default.param_groups[0]["params"])],
        "defaults_equal": engine.optimizer.defaults == verl_default.defaults,
        "cls": type(engine.optimizer).__module__ + "." + type(engine.optimizer).__name__,
    }
    return report


def _cpu_checkpoint_patches(stack: ExitStack) -> None:
    _cpu_device_patches(stack)
    # The module already lives on the CPU; verl would move it to the accelerator around the save.
    stack.enter_context(mock.patch("verl.workers.engine.fsdp.transformer_impl.load_fsdp_model_to_gpu"))


def checkpoint_resume_report(model_dir: str, checkpoint_dir: str) -> dict:
    """Pion (the recipe's options) through verl's own checkpoint manager: save after 2 steps and take 2 more;
    a fresh engine that loads the checkpoint and takes the same 2 steps must land on the same weights."""
    import pion_rl.verl_plugin.engine  # noqa: F401 - what external_lib does in a verl worker

    options = {"variant": "lie_lie", "update_side": "alternate", "betas": [0.9, 0.999]}

    def build():
        return build_engine(model_dir, "fsdp2", "pion_rl.optim", "Pion", options, lr=STEP_LR, weight_decay=0.0)

    straight = build()
    for _ in range(2):
        _train_step(straight)
    with ExitStack() as stack:
        _cpu_checkpoint_patches(stack)
        straight.save_checkpoint(checkpoint_dir, global_step=2)
    for _ in range(2):
        expected = _train_step(straight)
    resumed = build()
    with ExitStack() as stack:
        _cpu_checkpoint_patches(stack)
        resumed.load_checkpoint(checkpoint_dir, del_local_after_load=False)
    owned = sum(1 for s in resumed.optimizer.state.values() if "m_in" in s)
    for _ in range(2):
        got = _train_step(resumed)
    return {
        "max_abs_diff": max((expected[n][1] - got[n][1]).abs().max().item() for n in expected),
        "moved": max((expected[n][1] - expected[n][0]).abs().max().item() for n in expected),
        "matrices_owned_here": owned,
        "files": sorted(os.listdir(checkpoint_dir)),
    }


def checkpoint_export_report(model_dir: str, actor_dir: str) -> dict:
    """One Pion step, then a save through verl's checkpoint manager with the recipes' contents (sharded state and
    the Hugging Face model); returns the trained full fp32 weights, name -> numpy array (pickled by value: a
    tensor would travel as shared memory that dies with this process)."""
    import pion_rl.verl_plugin.engine  # noqa: F401 - what external_lib does in a verl worker
    from verl.trainer.config import CheckpointConfig

    contents = ["model", "optimizer", "extra", "hf_model"]  # configs/grpo_deepmath.yaml's save_contents
    engine = build_engine(model_dir, "fsdp2", "pion_rl.optim", "Pion", PION_OPTIONS, lr=STEP_LR, weight_decay=0.0,
                          checkpoint_config=CheckpointConfig(save_contents=contents), load_tokenizer=True)
    _train_step(engine)
    with ExitStack() as stack:
        _cpu_checkpoint_patches(stack)
        engine.save_checkpoint(actor_dir, global_step=1)
    return {name: param.full_tensor().detach().numpy() for name, param in engine.module.named_parameters()}


def _expert_blocks(name: str, weight: torch.Tensor) -> list[torch.Tensor]:
    """Each expert's matrices of a packed experts tensor, written out from transformers' layout: gate_up_proj
    [E, 2I, H] holds gate then up along dim 1 (two blocks per expert), down_proj [E, H, I] one matrix each."""
    if name.endswith("gate_up_proj"):
        return [half for expert in weight for half in expert.chunk(2)]
    return list(weight)


def moe_and_lora_report(moe_dir: str, dense_dir: str) -> dict:
    """Pion through verl's engine on a tiny Qwen3-MoE, and verl's LoRA path (``lora_rank``) under Muon and Pion."""
    import pion_rl.verl_plugin.engine  # noqa: F401 - what external_lib does in a verl worker

    report = {}
    engine = build_engine(moe_dir, "fsdp2", "pion_rl.optim", "Pion", PION_OPTIONS, lr=STEP_LR, weight_decay=0.0)
    optimizer = engine.optimizer
    experts = {n: p for n, p in engine.module.named_parameters() if ".experts." in n}
    weights = _train_step(engine)
    drift, moved = {}, {}
    for name in experts:
        before, after = (_expert_blocks(name, w.double()) for w in weights[name])
        drift[name] = max(((torch.linalg.svdvals(a) - torch.linalg.svdvals(b)).abs().max()
                           / torch.linalg.svdvals(b).max()).item() for b, a in zip(before, after))
        moved[name] = sum(not torch.equal(b, a) for b, a in zip(before, after)) / len(before)
    report["moe"] = {
        "groups": _group_summary(optimizer),
        "expert_sv_drift": drift,
        "experts_moved": moved,
        # Where each packed tensor's state lives: the shape of its in-side momentum on this rank (absent: none).
        "expert_state": {n: list(optimizer.state[p]["m_in"].shape) for n, p in experts.items()
                         if "m_in" in optimizer.state.get(p, {})},
        "expert_local_shape": {n: list(p.to_local().shape) for n, p in experts.items()},
    }
    lora = {"lora_rank": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    engine = build_engine(dense_dir, "fsdp2", "pion_rl.optim", "Muon", MUON_OPTIONS, lr=STEP_LR, weight_decay=0.0,
                          **lora)
    trainable = {n for n, p in engine.module.named_parameters() if p.requires_grad}
    weights = _train_step(engine)
    report["lora_muon"] = {
        "groups": _group_summary(engine.optimizer),
        "trainable": sorted(trainable),
        "changed": sorted(n for n, (b, a) in weights.items() if not torch.equal(b, a)),
        "lora_B_norm": {n: a.norm().item() for n, (_, a) in weights.items() if "lora_B" in n},
    }
    try:
        build_engine(dense_dir, "fsdp2", "pion_rl.optim", "Pion", PION_OPTIONS, **lora)
        report["lora_pion_error"] = None
    except ValueError as error:
        report["lora_pion_error"] = str(error)
    return report
