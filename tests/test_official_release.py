"""The recipe's Pion (configs/optimizer/pion.yaml, ``precision: fp32``) against the official release's
PionOptimizer (tests/pion_reference.py's ``OfficialPion``, written from its arithmetic), on a tiny Qwen3.

Both optimizers take the same gradients, computed on the model pion-rl trains, from the same fp32 weights, and
both run in fp32, as the official recipes do; what is left is fp32 rounding in two orders of operations (measured:
at most 9e-7 of a tensor's movement over the 10 steps; a float64 reference puts pion-rl's own rounding at 2.5e-7
for the matrices and 5e-6 for the norm weights, whose values near 1 have the coarsest fp32 grid). The lr is
larger than the recipe's 1e-6 so the updates stand well above that rounding (at 1e-6 rounding a weight alone
is ~1e-3 of a step); Pion's RMS scaling makes every other setting act the same at any lr.
"""

from pathlib import Path

import pytest
import torch
from pion_reference import OfficialPion
from transformers import Qwen3Config, Qwen3ForCausalLM

from pion_rl.optim import Pion

REPO = Path(__file__).resolve().parents[1]
HEAD_DIM = 16  # hidden_size // num_attention_heads, what the official release derives when not given one
LR, STEPS = 1e-2, 10
TOLERANCE = 5e-6  # relative to how far the reference moved each tensor


def _tiny_qwen3(tie):
    config = Qwen3Config(vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=HEAD_DIM, tie_word_embeddings=tie)
    torch.manual_seed(0)
    return Qwen3ForCausalLM(config)


def _recipe_pion(model):
    """Pion as verl's build_optimizer builds it from the recipe's optimizer config (lr, weight_decay, then the
    override_optimizer_config; the telemetry entry is the plugin's), with the model's head size."""
    from omegaconf import OmegaConf  # as Hydra reads it (PyYAML would read 1e-8 as a string)

    recipe = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "optimizer" / "pion.yaml"))
    options = {k: v for k, v in recipe["override_optimizer_config"].items() if k != "telemetry"}
    assert options["precision"] == "fp32"
    return Pion(model.named_parameters(), lr=LR, weight_decay=recipe["weight_decay"], head_dim=HEAD_DIM, **options)


def _official(model):
    """The official recipe's settings: betas, eps and head_dim from its override_optimizer_config, weight_decay
    verl's default (the Pion scripts do not set it)."""
    from verl.workers.config import FSDPOptimizerConfig

    weight_decay = FSDPOptimizerConfig.__dataclass_fields__["weight_decay"].default
    named = [(n, p.detach().clone()) for n, p in model.named_parameters()]
    return OfficialPion(named, LR, HEAD_DIM, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay), dict(named)


def _class_of(name):
    leaf = name.split(".")[-2]
    if leaf in ("q_proj", "k_proj", "v_proj"):
        return "per-head q/k/v"
    return {"o_proj": "o_proj", "gate_proj": "MLP", "up_proj": "MLP", "down_proj": "MLP"}.get(leaf, "AdamW fallback")


@pytest.mark.parametrize("tie", [True, False], ids=["tied (Qwen3-1.7B)", "untied (R1-Distill-Qwen-1.5B)"])
def test_recipe_pion_in_fp32_is_the_official_optimizer(tie):
    model = _tiny_qwen3(tie)
    ours = _recipe_pion(model)
    official, reference = _official(model)

    # Routing and weight-decay groups: the same tensors on each side, the same heads, the same decay.
    names = {id(p): n for n, p in model.named_parameters()}
    routed = {(g["algorithm"], g.get("row_block")): {names[id(p)] for p in g["params"]} for g in ours.param_groups}
    assert routed.get(("pion", None), set()) | routed.get(("pion", HEAD_DIM), set()) == set(official.matrices)
    assert routed[("pion", HEAD_DIM)] == official.per_head
    assert routed[("adamw", None)] == set(official.adamw)
    for group in ours.param_groups:
        if group["algorithm"] == "pion":
            assert group["weight_decay"] == 0.0
            assert tuple(group["betas"]) == official.betas
        else:
            assert group["adamw_weight_decay"] == official.weight_decay == 0.01
            assert (tuple(group["adamw_betas"]), group["adamw_eps"]) == (official.betas, official.eps)
            assert group["adamw_eps_form"] == "after_bias_correction"  # the official Pion's fallback is torch's

    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=gen)
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        ours.step()
        official.step(grads)

    classes = set()
    for name, p in model.named_parameters():
        moved = (reference[name] - start[name]).double()
        error = (p.detach() - reference[name]).double().norm() / moved.norm()
        assert moved.norm() > 1e-3 * start[name].norm(), name  # every tensor really moved
        assert error < TOLERANCE, (name, error.item())
        classes.add(_class_of(name))
    assert classes == {"per-head q/k/v", "o_proj", "MLP", "AdamW fallback"}
