"""Routing and per-unit updates on transformers' own architectures, built tiny: every unit (head, expert,
half) keeps its singular values under Pion and gets an orthogonalized update under Muon."""

import warnings

import pytest
import torch
import transformers as tf

from pion_rl.optim import Muon, Pion, param_groups
from pion_rl.optim.routing import UnroutedTensorWarning, route_parameters
from pion_rl.optim.units import to_units

SMALL = dict(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, max_position_embeddings=64)
MOE = dict(moe_intermediate_size=16, num_experts_per_tok=2)
CONFIGS = {
    "llama": (tf.LlamaConfig, dict(intermediate_size=48, num_key_value_heads=2)),
    "qwen3": (tf.Qwen3Config, dict(intermediate_size=48, num_key_value_heads=2, head_dim=8)),
    "gemma2": (tf.Gemma2Config, dict(intermediate_size=48, num_key_value_heads=2, head_dim=8)),
    "qwen2": (tf.Qwen2Config, dict(intermediate_size=48, num_key_value_heads=2)),
    "mistral": (tf.MistralConfig, dict(intermediate_size=48, num_key_value_heads=2, head_dim=8)),
    "gemma3": (tf.Gemma3TextConfig, dict(intermediate_size=48, num_key_value_heads=2, head_dim=8,
                                         layer_types=["full_attention"])),
    "phi3": (tf.Phi3Config, dict(intermediate_size=48, num_key_value_heads=4, pad_token_id=0)),
    "gpt2": (tf.GPT2Config, dict(n_embd=32, n_layer=1, n_head=4, n_positions=64)),
    "qwen3_moe": (tf.Qwen3MoeConfig, dict(intermediate_size=48, num_key_value_heads=2, head_dim=8, num_experts=4,
                                          **MOE)),
    "qwen2_moe": (tf.Qwen2MoeConfig, dict(intermediate_size=48, num_key_value_heads=2, num_experts=4,
                                          shared_expert_intermediate_size=16, **MOE)),
    "olmoe": (tf.OlmoeConfig, dict(intermediate_size=16, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2)),
    "mixtral": (tf.MixtralConfig, dict(intermediate_size=16, num_key_value_heads=2, num_local_experts=4,
                                       num_experts_per_tok=2)),
    "deepseek_v3": (tf.DeepseekV3Config, dict(intermediate_size=48, n_routed_experts=4, n_shared_experts=1,
                                              first_k_dense_replace=0, q_lora_rank=16, kv_lora_rank=16,
                                              qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, n_group=1,
                                              topk_group=1, num_key_value_heads=4, **MOE)),
    "gpt_oss": (tf.GptOssConfig, dict(intermediate_size=16, num_key_value_heads=2, head_dim=8, num_local_experts=4,
                                      num_experts_per_tok=2, layer_types=["full_attention"])),
}


def _model(arch):
    cls, extra = CONFIGS[arch]
    config = cls(**{**SMALL, **extra}) if arch != "gpt2" else cls(vocab_size=64, **extra)
    torch.manual_seed(0)
    return tf.AutoModelForCausalLM.from_config(config).float()


def _loss(model):
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))
    return model(input_ids=ids, labels=ids).loss


EXPECTED = {  # name suffix -> (kind, structure under Pion)
    "llama": {"q_proj.weight": ("attention", "per head"), "o_proj.weight": ("matrix", "whole"),
              "embed_tokens.weight": ("embedding", "embedding"), "lm_head.weight": ("readout", "readout")},
    "phi3": {"qkv_proj.weight": ("attention", "per head"), "gate_up_proj.weight": ("gate_up", "stacked halves")},
    "gpt2": {"c_attn.weight": ("attention", "per head, (in, out) storage"),
             "mlp.c_fc.weight": ("matrix", "(in, out) storage"), "wte.weight": ("embedding", "embedding")},
    "qwen3_moe": {"experts.gate_up_proj": ("experts", "per expert, stacked halves"),
                  "experts.down_proj": ("experts", "per expert"), "mlp.gate.weight": ("router", "router")},
    "qwen2_moe": {"shared_expert.gate_proj.weight": ("matrix", "whole"), "shared_expert_gate.weight": ("vector", "vector"),
                  "experts.down_proj": ("experts", "per expert")},
    "deepseek_v3": {"q_b_proj.weight": ("mla", "per head"), "kv_b_proj.weight": ("mla", "per head"),
                    "experts.gate_up_proj": ("experts", "per expert, stacked halves")},
    "gpt_oss": {"experts.gate_up_proj": ("experts", "per expert, interleaved halves, (in, out) storage"),
                "experts.down_proj": ("experts", "per expert, (in, out) storage"),
                "experts.gate_up_proj_bias": ("bias", "bias"), "mlp.router.weight": ("router", "router")},
}


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_every_unit_keeps_its_spectrum_under_pion_and_is_orthogonalized_under_muon(arch):
    model = _model(arch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnroutedTensorWarning)  # every tensor of these models has a rule
        routes = {r.name: r for r in route_parameters(model)}
    for suffix, expected in EXPECTED.get(arch, {}).items():
        found = [r for n, r in routes.items() if n.endswith(suffix)]
        assert found and all((r.kind, r.structure()) == expected for r in found), (suffix, found[:1])
    params = dict(model.named_parameters())
    matrices = [r for r in routes.values() if r.matrix]

    def units(r, per_head=True):
        return to_units(params[r.name].detach().double(), r.layout, r.halves, r.head_rows if per_head else None)[0]

    before = {r.name: torch.linalg.svdvals(units(r)) for r in matrices}
    weights = {r.name: params[r.name].detach().clone() for r in matrices}
    opt = Pion(model, lr=1e-2, exp_map="cayley")
    for _ in range(3):
        opt.zero_grad()
        _loss(model).backward()
        opt.step()
    for r in matrices:
        torch.testing.assert_close(torch.linalg.svdvals(units(r)), before[r.name], rtol=2e-5, atol=2e-6)
    moved = [r.name for r in matrices if not torch.equal(params[r.name].detach(), weights[r.name])]
    assert len(moved) >= len(matrices) - 1 and any(routes[n].kind == "experts" for n in moved) == any(
        r.kind == "experts" for r in matrices)

    model = _model(arch)
    params = dict(model.named_parameters())
    # Newton-Schulz in float64: the property is the units it runs on, not bf16's rounding (which Newton-Schulz
    # amplifies in directions the gradient does not have).
    opt = Muon(model, lr=1e-2, weight_decay=0.0, ns_dtype=torch.float64)
    _loss(model).backward()
    weights = {r.name: params[r.name].detach().clone() for r in matrices}
    grads = {r.name: params[r.name].grad.detach().clone() for r in matrices}
    opt.step()
    for r in matrices:
        delta = to_units((params[r.name].detach() - weights[r.name]).double(), r.layout, r.halves)[0]
        # Muon's first step is a function of each unit's gradient alone: U f(S) V^T with G = U S V^T per unit.
        u, s, vh = torch.linalg.svd(to_units(grads[r.name].double(), r.layout, r.halves)[0], full_matrices=False)
        _, rows, cols = delta.shape
        d = -u.mT @ delta @ vh.mT / (1e-2 * 0.2 * max(rows, cols) ** 0.5)  # the update in its gradient's basis
        live = s[:, 0] > 0  # an expert no token reached has no gradient and no update
        assert live.any(), r.name
        d, s = d[live], s[live]
        diagonal = torch.diagonal(d, dim1=-2, dim2=-1)
        # Orthogonalized per unit: diagonal in that unit's own singular basis (a tensor orthogonalized across its
        # experts or halves would mix them), and five Newton-Schulz steps bring every singular direction of real
        # weight (above a tenth of the unit's largest) into the quintic's band around 1.
        off = (d - torch.diag_embed(diagonal)).norm(dim=(-2, -1)) / diagonal.norm(dim=-1)
        assert off.max() < 1e-5, (r.name, off.max())
        strong = diagonal[s > 0.1 * s[:, :1]]
        assert strong.min() > 0.68 and strong.max() < 1.2, (r.name, strong.min(), strong.max())


def test_names_do_not_decide_what_a_module_tells():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.normalizer_proj = torch.nn.Linear(8, 8)  # a hidden map, whatever its name says
            self.output = torch.nn.Linear(8, 16)  # torchtitan's readout
            self.score = torch.nn.Linear(8, 1)  # a value head: 1 x H
            self.kernel = torch.nn.Parameter(torch.randn(2, 4, 4))  # no rule knows it

    model = Block()
    with pytest.warns(UnroutedTensorWarning, match=r"kernel.*routes="):
        groups = param_groups(model, "pion")
    routed = {n: g["algorithm"] for g in groups for n in g["param_names"]}
    assert routed["normalizer_proj.weight"] == "pion"
    assert routed["output.weight"] == routed["score.weight"] == routed["kernel"] == "adamw"
    groups = param_groups(model, "pion", routes={"kernel": "experts"})
    assert {n: g.get("layout") for g in groups for n in g["param_names"]}["kernel"] == "experts_out_in"


def test_pion_refuses_lora_adapters_and_all_zero_matrices_muon_takes_them():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_model("qwen3"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with pytest.raises(ValueError, match="Pion cannot train LoRA adapters.*Muon or AdamW"):
        Pion(model)
    opt = Muon(model, lr=1e-2)
    lora_b = next(p for n, p in model.named_parameters() if "lora_B" in n)
    _loss(model).backward()
    opt.step()
    assert lora_b.detach().abs().sum() > 0  # Muon moves the zero-initialized adapter
    with pytest.raises(ValueError, match="all zeros.*Muon or AdamW"):
        Pion([("layer.proj.weight", torch.nn.Parameter(torch.zeros(4, 4)))])


def test_routing_cli_prints_the_table_of_a_local_model(tmp_path, capsys):
    from pion_rl.optim.routing.__main__ import main

    _model("qwen3_moe").config.save_pretrained(tmp_path)
    main([str(tmp_path)])
    out = capsys.readouterr().out
    rows = {line.split()[0] + " " + " ".join(line.split()[1:-4]): line for line in out.splitlines()[2:]}
    assert any(key.startswith("pion per expert, stacked halves") for key in rows)
    assert any(key.startswith("adamw router") for key in rows)
    total = sum(int(line.split()[-2].replace(",", "")) for line in out.splitlines() if " total " in line)
    assert total == sum(p.numel() for p in _model("qwen3_moe").parameters())


def test_the_critic_engine_is_pion_rls_and_its_value_head_goes_to_adamw(caplog):
    import logging

    from verl.workers.config.optimizer import FSDPOptimizerConfig
    from verl.workers.engine import EngineRegistry

    from pion_rl.verl_plugin.engine import NamedParamsFSDPValueEngine
    from pion_rl.verl_plugin.optimizer_config import build_optimizer_with_telemetry

    assert EngineRegistry.get_engine_cls("value_model", "fsdp2") is NamedParamsFSDPValueEngine
    cls, extra = CONFIGS["qwen3"]
    torch.manual_seed(0)
    critic = tf.AutoModelForTokenClassification.from_config(cls(**{**SMALL, **extra}, num_labels=1))
    config = FSDPOptimizerConfig(lr=1e-3, weight_decay=0.0, optimizer_impl="pion_rl.optim", optimizer="Pion")
    with caplog.at_level(logging.INFO, logger="pion_rl.optim.routing"):
        optimizer, _ = build_optimizer_with_telemetry(critic, config)
    routed = {n: g["algorithm"] for g in optimizer.param_groups for n in g["param_names"]}
    assert routed["score.weight"] == "adamw" and routed["model.layers.0.mlp.down_proj.weight"] == "pion"
    table = next(r.getMessage() for r in caplog.records if r.name == "pion_rl.optim.routing")
    pion_total = next(line for line in table.splitlines() if line.startswith("pion total"))
    matrices = sum(p.numel() for g in optimizer.param_groups if g["algorithm"] == "pion" for p in g["params"])
    assert int(pion_total.split()[-2].replace(",", "")) == matrices


# Units written out by hand for the telemetry check: name suffix -> (B, r, c) batch of the stored weight.
HAND_UNITS = {
    "qwen3_moe": {
        ("q_proj.weight", "k_proj.weight", "v_proj.weight"): lambda w: w.reshape(-1, 8, w.shape[1]),
        ("experts.gate_up_proj",): lambda w: w.reshape(w.shape[0] * 2, w.shape[1] // 2, w.shape[2]),
        ("experts.down_proj",): lambda w: w,
        ("o_proj.weight",): lambda w: w[None],
    },
    "gpt2": {  # Conv1D stores (in, out): c_attn's out columns are q, k, v heads of 8
        ("attn.c_attn.weight",): lambda w: w.T.reshape(-1, 8, w.shape[0]),
        ("attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"): lambda w: w.T[None],
    },
}


@pytest.mark.parametrize("arch", sorted(HAND_UNITS))
def test_telemetry_measures_packed_experts_and_in_out_storage_per_unit(arch):
    """AdamW moves singular values; the telemetry's drift of unit norms and spectra equals a direct computation on
    units written out by hand (per head of q/k/v or c_attn's columns, per expert and half)."""
    from pion_rl.telemetry import OptimizerTelemetry

    model = _model(arch)
    named = dict(model.named_parameters())
    hand = {n: split for suffixes, split in HAND_UNITS[arch].items() for n in named if n.endswith(suffixes)}
    assert any(named[n].ndim == 3 for n in hand) == (arch == "qwen3_moe")
    w0 = {n: named[n].detach().double().clone() for n in hand}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    telemetry = OptimizerTelemetry(optimizer, model, spectrum_every=1)
    for _ in range(2):
        optimizer.zero_grad()
        _loss(model).backward()
        optimizer.step()
    metrics = telemetry.pop_metrics()
    fro, sv = [], []
    for n, split in hand.items():
        u0, u = split(w0[n]), split(named[n].detach().double())
        fro.append(((torch.linalg.matrix_norm(u) - torch.linalg.matrix_norm(u0)).abs()
                    / torch.linalg.matrix_norm(u0)).max())
        s0, s = torch.linalg.svdvals(u0), torch.linalg.svdvals(u)
        sv.append(((s - s0).abs() / s0.amax(-1, keepdim=True)).flatten())
    sv = torch.cat(sv)
    assert len(telemetry.matrices) == len(hand)  # every hidden map is measured, none missed
    assert metrics["optim/max_rel_fro_change"] == pytest.approx(float(max(fro)), rel=1e-9)
    assert metrics["optim/max_rel_sv_change"] == pytest.approx(float(sv.max()), rel=1e-7)
    assert metrics["optim/mean_rel_sv_change"] == pytest.approx(float(sv.mean()), rel=1e-7)
