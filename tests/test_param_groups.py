"""Routing of a real (tiny) Qwen3 model's parameters between the matrix optimizer and AdamW."""

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from pion_rl.optim import Muon, Pion, param_groups


def _tiny_qwen3(tie):
    config = Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=tie)
    torch.manual_seed(0)
    return Qwen3ForCausalLM(config)


def _by_algorithm(groups):
    out = {}
    for g in groups:
        for name in g["param_names"]:
            out[name] = (g["algorithm"], g.get("row_block"))
    return out


@pytest.mark.parametrize("tie", [True, False])
def test_qwen3_routing(tie):
    model = _tiny_qwen3(tie)
    routed = _by_algorithm(param_groups(model, optimizer="pion", lr=1e-3, head_dim=8))
    names = [n for n, _ in model.named_parameters()]
    assert sorted(routed) == sorted(names)  # every parameter once, tied weights once
    assert ("lm_head.weight" in routed) == (not tie)
    for name, (algorithm, row_block) in routed.items():
        leaf = name.split(".")[-2]
        if leaf in ("q_proj", "k_proj", "v_proj"):
            assert (algorithm, row_block) == ("pion", 8), name
        elif leaf in ("o_proj", "gate_proj", "up_proj", "down_proj"):
            assert (algorithm, row_block) == ("pion", None), name
        else:  # embed_tokens, lm_head, every norm (incl. q_norm/k_norm)
            assert algorithm == "adamw", name
    n_matrices = sum(1 for a, _ in routed.values() if a == "pion")
    assert n_matrices == 2 * 7


def test_named_parameters_route_inside_the_optimizer_and_train():
    model = _tiny_qwen3(tie=False)
    opt = Pion(model.named_parameters(), lr=1e-2, head_dim=8, update_side="alternate", exp_map="cayley")
    groups = {(g["algorithm"], g["row_block"]): set(g["param_names"]) for g in opt.param_groups}
    assert "model.embed_tokens.weight" in groups[("adamw", None)]
    assert "model.layers.0.self_attn.q_proj.weight" in groups[("pion", 8)]
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    q = model.model.layers[0].self_attn.q_proj.weight
    heads_before = torch.linalg.svdvals(q.detach().view(4, 8, 32).double())
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    # Per-head updates with an exact map keep each head's spectrum, to fp32 rounding.
    torch.testing.assert_close(torch.linalg.svdvals(q.detach().view(4, 8, 32).double()), heads_before,
                               rtol=2e-5, atol=1e-6)
    assert set(opt.state[q]) == {"step", "m_in", "m_out"} and opt.state[q]["m_in"].shape == (4, 32, 32)


def test_muon_routing_ignores_head_dim_and_names_without_a_module():
    model = _tiny_qwen3(tie=True)
    opt = Muon(model.named_parameters(), lr=1e-3)
    matrix_names = {n for g in opt.param_groups if g["algorithm"] == "muon" for n in g["param_names"]}
    assert len(matrix_names) == 14 and not any("embed" in n or "norm" in n for n in matrix_names)
    named = [("w", torch.nn.Parameter(torch.zeros(3, 3))), ("embed_tokens.weight", torch.nn.Parameter(torch.zeros(5, 3)))]
    assert _by_algorithm(param_groups(named, optimizer="muon")) == {"w": ("muon", None),
                                                                    "embed_tokens.weight": ("adamw", None)}


def test_fused_projections_split_into_their_parts():
    named = [("attn.qkv_proj.weight", torch.nn.Parameter(torch.zeros(48, 16))),
             ("mlp.gate_up_proj.weight", torch.nn.Parameter(torch.zeros(64, 16)))]
    groups = param_groups(named, head_dim=8)
    routed = _by_algorithm(groups)
    assert routed["attn.qkv_proj.weight"] == ("pion", 8)  # q, k, v are whole heads: per-head blocks
    gate_up = next(g for g in groups if "mlp.gate_up_proj.weight" in g["param_names"])
    assert (gate_up["algorithm"], gate_up.get("halves")) == ("pion", "stacked")  # gate and up: two matrices


def test_routing_errors_are_clear():
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        param_groups([("w", torch.zeros(2, 2))], optimizer="sgd")
    with pytest.raises(ValueError, match="do not split into heads"):
        param_groups([("layer.q_proj.weight", torch.nn.Parameter(torch.zeros(12, 4)))], head_dim=8)
    with pytest.raises(TypeError, match="named_parameters"):
        param_groups([torch.zeros(2, 2)])
    with pytest.raises(ValueError, match="head_dim needs named parameters"):
        Pion([torch.nn.Parameter(torch.zeros(2, 2))], head_dim=2)


def test_a_head_dim_that_is_not_the_models_says_to_read_it_from_the_config():
    # The README's call with another model's head size (128) on a model whose heads are 8 rows wide.
    model = _tiny_qwen3(tie=False)
    with pytest.raises(ValueError) as error:
        Pion(model.named_parameters(), lr=1e-6, update_side="alternate", head_dim=128)
    message = str(error.value)
    assert "q_proj" in message and "head_dim=128" in message
    assert "model's attention head size" in message
    assert "model.config.head_dim" in message
    assert "model.config.hidden_size // model.config.num_attention_heads" in message


def _attention_models():
    """(head size, model): Qwen3 declares head_dim (8, not hidden / heads = 16); Qwen2 derives it (32 / 4 = 8)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    yield 8, Qwen3ForCausalLM(Qwen3Config(vocab_size=32, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                          num_attention_heads=2, num_key_value_heads=1, head_dim=8))
    yield 8, Qwen2ForCausalLM(Qwen2Config(vocab_size=32, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                          num_attention_heads=4, num_key_value_heads=2))


QKV = ("q_proj.weight", "k_proj.weight", "v_proj.weight")


def _qkv_blocks(groups):
    return {g.get("row_block") for g in groups for n in g["param_names"] if n.endswith(QKV)}


def test_a_module_gives_pion_its_head_size_without_a_warning():
    import warnings

    for head_size, model in _attention_models():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no warning of any kind
            assert _qkv_blocks(Pion(model, lr=1e-3).param_groups) == {head_size}, type(model).__name__
            assert _qkv_blocks(param_groups(model, optimizer="pion")) == {head_size}
            assert {g["algorithm"] for g in Muon(model, lr=1e-3).param_groups} == {"muon", "adamw"}
        # An explicit head_dim still wins over the config's.
        assert _qkv_blocks(Pion(model, lr=1e-3, head_dim=4).param_groups) == {4}


def test_named_parameters_without_head_dim_warn_once_naming_q_k_v():
    from pion_rl.optim.param_groups import WholeMatrixAttentionWarning

    model = _tiny_qwen3(tie=False)
    qkv = [n for n, _ in model.named_parameters() if n.endswith(QKV)]
    with pytest.warns(WholeMatrixAttentionWarning) as caught:
        opt = Pion(model.named_parameters(), lr=1e-3)
    assert len(caught) == 1 and issubclass(caught[0].category, UserWarning)
    message = str(caught[0].message)
    assert len(qkv) == 6 and all(name in message for name in qkv)
    assert "o_proj" not in message and "Pion(model, ...)" in message and "head_dim=" in message
    assert _qkv_blocks(opt.param_groups) == {None}  # what the warning says: whole matrices
    with pytest.warns(WholeMatrixAttentionWarning):
        param_groups(model.named_parameters(), optimizer="pion")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Muon updates whole matrices anyway; Pion with head_dim is per head
        Muon(model.named_parameters(), lr=1e-3)
        Pion(model.named_parameters(), lr=1e-3, head_dim=8)


def test_the_engine_builds_pion_per_head_without_a_warning():
    """What NamedParamsFSDPEngine._build_optimizer calls: verl's build_optimizer on named_parameters(), the
    head size read from the model's hf_config."""
    import warnings

    from verl.workers.config.optimizer import FSDPOptimizerConfig

    from pion_rl.verl_plugin.optimizer_config import build_optimizer_with_telemetry

    model = next(m for _, m in _attention_models())
    config = FSDPOptimizerConfig(lr=1e-3, weight_decay=0.0, optimizer_impl="pion_rl.optim", optimizer="Pion",
                                 override_optimizer_config={"update_side": "alternate"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        optimizer, _ = build_optimizer_with_telemetry(model, config)
    assert _qkv_blocks(optimizer.param_groups) == {8}
