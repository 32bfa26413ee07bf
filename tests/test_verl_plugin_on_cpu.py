"""pion-rl's verl engine through verl's real build path, on CPU.

Two gloo ranks build verl's actor engine the way ``ActorRolloutRefWorker`` does: ``EngineRegistry.new`` (after
the plugin import that ``external_lib`` performs), then ``initialize()``: HF model load, FSDP2 ``fully_shard``,
``_build_optimizer``, lr scheduler. One training step runs through verl's ``optimizer_step`` (clip + step), on a tiny Qwen3 and a tiny Qwen3-MoE
(packed experts), and with verl's LoRA path (``lora_rank``).
The optimizer is then inspected: which parameter landed in which group, and what one step did to it. A save
and resume goes through the engine's own checkpoint manager.
"""

from __future__ import annotations

import re

import pytest
from gloo_ranks import run_on_ranks
from verl_plugin_workers import (
    TINY_HEAD_DIM,
    TINY_QWEN3,
    TINY_QWEN3_MOE,
    checkpoint_export_report,
    checkpoint_resume_report,
    engine_report,
    moe_and_lora_report,
    write_tiny_qwen3,
    write_tiny_qwen3_moe,
)

ADAMW_NAMES = {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"} | {
    f"model.layers.{i}.{n}.weight"
    for i in range(TINY_QWEN3["num_hidden_layers"])
    for n in ("input_layernorm", "post_attention_layernorm", "self_attn.q_norm", "self_attn.k_norm")
}
PER_HEAD = {f"model.layers.{i}.self_attn.{n}_proj.weight" for i in range(2) for n in "qkv"}
WHOLE = {f"model.layers.{i}.{n}.weight" for i in range(2)
         for n in ("self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    model_dir = write_tiny_qwen3(tmp_path_factory.mktemp("tiny_qwen3"))
    return run_on_ranks(engine_report, 2, str(model_dir))


def _routing(groups):
    return {(g["algorithm"], g["row_block"]): set(g["names"]) for g in groups}


def test_registry_serves_the_plugin_engine_for_both_fsdp_backends(reports):
    for report in reports:
        assert report["engine_cls"] == {"fsdp": "NamedParamsFSDPEngine", "fsdp2": "NamedParamsFSDPEngine"}


def test_pion_routes_by_name_with_per_head_blocks_from_the_model_config(reports):
    for report in reports:
        pion = report["Pion"]
        assert pion["cls"] == "Pion"
        # head_dim 16 comes from the model config (hidden / heads would be 24).
        assert _routing(pion["groups"]) == {("adamw", None): ADAMW_NAMES, ("pion", TINY_HEAD_DIM): PER_HEAD,
                                            ("pion", None): WHOLE}
        assert all(g["dtensor"] for g in pion["groups"]), "FSDP2 must hand the optimizer DTensor parameters"


def test_muon_routes_matrices_whole_and_the_rest_to_adamw(reports):
    for report in reports:
        assert report["Muon"]["cls"] == "Muon"
        assert _routing(report["Muon"]["groups"]) == {("adamw", None): ADAMW_NAMES, ("muon", None): PER_HEAD | WHOLE}


def test_pion_step_through_verl_rotates_matrices_and_adamw_moves_the_rest(reports):
    step = reports[0]["Pion"]["step"]
    for name in PER_HEAD | WHOLE:
        # Cayley map: per block (q/k/v per head) the spectrum is kept while the weights move ~10%.
        assert step[name]["change"] > 0.05, name
        assert step[name]["sv_drift"] < 1e-5, name
        # rms scaling: update RMS is lr * 0.2.
        assert step[name]["update_rms_over_target"] == pytest.approx(1.0, abs=0.03), name
    for name in ADAMW_NAMES - {"model.embed_tokens.weight"}:  # unseen embedding rows get no gradient
        # AdamW's first step moves every entry by lr, i.e. 5x Pion's lr * 0.2.
        assert step[name]["update_rms_over_target"] == pytest.approx(5.0, rel=0.02), name


def test_muon_step_through_verl_bounds_matrix_updates_by_its_rms_target(reports):
    step = reports[0]["Muon"]["step"]
    for name in PER_HEAD | WHOLE:
        # Newton-Schulz singular values are <= ~1.2, so the update RMS is at most ~1.2 * lr * 0.2 (AdamW: 5x).
        assert 0.2 < step[name]["update_rms_over_target"] < 1.25, name
    for name in ADAMW_NAMES - {"model.embed_tokens.weight"}:
        assert step[name]["update_rms_over_target"] == pytest.approx(5.0, rel=0.02), name


def test_adamw_from_pion_rl_gets_names_and_verl_defaults(reports):
    adamw = reports[0]["AdamW"]
    assert adamw["cls"] == "torch.optim.adamw.AdamW"
    (group,) = adamw["groups"]
    assert set(group["names"]) == ADAMW_NAMES | PER_HEAD | WHOLE
    assert group["weight_decay"] == 0.01


def test_other_optimizer_impl_is_built_exactly_as_verl_does(reports):
    for report in reports:
        plain = report["torch.optim"]
        assert plain["cls"] == "torch.optim.adamw.AdamW"
        assert plain["groups"] == plain["verl_default_groups"]
        assert plain["groups"][0]["names"] == []  # verl passes module.parameters(): no names
        assert all(plain["same_params"]) and len(plain["same_params"]) == len(ADAMW_NAMES | PER_HEAD | WHOLE)
        assert plain["defaults_equal"]


@pytest.mark.parametrize("optimizer", ["Pion", "Muon"])
@pytest.mark.parametrize(("model_type", "strategy_key"), [("language_model", "actor_rollout_ref.actor.strategy"),
                                                          ("value_model", "critic.strategy")])
def test_fsdp1_fails_at_engine_start_with_the_fix(optimizer, model_type, strategy_key):
    import pion_rl.verl_plugin.engine  # noqa: F401
    from verl.trainer.config import CheckpointConfig
    from verl.workers.config import FSDPEngineConfig, FSDPOptimizerConfig
    from verl.workers.engine import EngineRegistry

    # Raised before the model (or even the process group) is touched: no model_config is needed. The fix names
    # the config of the engine at hand: the actor's or the critic's.
    with pytest.raises(ValueError, match=rf"set {re.escape(strategy_key)}=fsdp2"):
        EngineRegistry.new(
            model_type=model_type, backend="fsdp", model_config=None,
            engine_config=FSDPEngineConfig(strategy="fsdp"),
            optimizer_config=FSDPOptimizerConfig(optimizer_impl="pion_rl.optim", optimizer=optimizer),
            checkpoint_config=CheckpointConfig(),
        )


def test_unknown_pion_rl_optimizer_name_fails_at_engine_start():
    import pion_rl.verl_plugin.engine  # noqa: F401
    from verl.trainer.config import CheckpointConfig
    from verl.workers.config import FSDPEngineConfig, FSDPOptimizerConfig
    from verl.workers.engine import EngineRegistry

    with pytest.raises(ValueError, match=r"'pion' is not a pion-rl optimizer.*Pion, Muon, AdamW"):
        EngineRegistry.new(
            model_type="language_model", backend="fsdp2", model_config=None,
            engine_config=FSDPEngineConfig(strategy="fsdp2"),
            optimizer_config=FSDPOptimizerConfig(optimizer_impl="pion_rl.optim", optimizer="pion"),
            checkpoint_config=CheckpointConfig(),
        )


def test_pion_resumes_bit_for_bit_through_verls_checkpoint_manager(tmp_path):
    """verl saves each rank's optimizer.state_dict() with torch.save and reloads it at the same world size."""
    model_dir = write_tiny_qwen3(tmp_path / "model")
    ranks = run_on_ranks(checkpoint_resume_report, 2, str(model_dir), str(tmp_path / "checkpoint"))
    for report in ranks:
        assert report["moved"] > 1e-3  # the two steps after the save really changed the weights
        assert report["max_abs_diff"] == 0.0
        assert {"optim_world_size_2_rank_0.pt", "optim_world_size_2_rank_1.pt"} <= set(report["files"])
    # 2 layers x 7 matrices, each with its state on exactly one of the two ranks
    assert sum(r["matrices_owned_here"] for r in ranks) == 2 * 7


def test_checkpoint_exports_a_hf_model_with_identical_logits(tmp_path):
    """The recipes' checkpoint (verl's manager on 2 gloo ranks) holds a Hugging Face directory with the tokenizer
    whose logits are exactly the trained policy's; verl's merger, for a checkpoint saved without it, gives the
    policy in bf16."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pion_rl.demo.tokenizer import build_tokenizer
    from pion_rl.verl_plugin.checkpoint import hf_model_dir, merge_to_hf

    model_dir = write_tiny_qwen3(tmp_path / "model")
    build_tokenizer().save_pretrained(model_dir)
    run = tmp_path / "run"
    report = run_on_ranks(checkpoint_export_report, 2, str(model_dir), str(run / "global_step_1" / "actor"))[0]
    trained = {name: torch.from_numpy(weight) for name, weight in report.items()}
    (run / "latest_checkpointed_iteration.txt").write_text("1")  # what verl's trainer writes after a save

    def logits(model, ids=torch.arange(40).reshape(2, 20) % TINY_QWEN3["vocab_size"]):
        with torch.no_grad():
            return model.eval()(input_ids=ids).logits

    def policy(weights, like):
        # The reloaded model's own config and code, so only the weights can differ.
        model = copy.deepcopy(like)
        model.load_state_dict(weights)
        return model

    exported = hf_model_dir(run, tmp_path / "not_needed")
    assert exported == run / "global_step_1" / "actor" / "huggingface" and not (tmp_path / "not_needed").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32)
    assert torch.equal(logits(reloaded), logits(policy(trained, like=reloaded)))
    initial = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    assert (logits(reloaded) - logits(initial)).abs().max() > 1e-3  # the export is the trained policy
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    assert AutoTokenizer.from_pretrained(exported).apply_chat_template(messages) == \
        build_tokenizer().apply_chat_template(messages)

    merged = merge_to_hf(run / "global_step_1" / "actor", tmp_path / "merged")
    remerged = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    in_bf16 = policy({name: weight.bfloat16().float() for name, weight in trained.items()}, like=remerged)
    assert torch.equal(logits(remerged), logits(in_bf16))
    assert AutoTokenizer.from_pretrained(merged).apply_chat_template(messages) == \
        build_tokenizer().apply_chat_template(messages)


@pytest.fixture(scope="module")
def moe_and_lora(tmp_path_factory):
    root = tmp_path_factory.mktemp("moe_and_lora")
    return run_on_ranks(moe_and_lora_report, 2, str(write_tiny_qwen3_moe(root / "moe")),
                        str(write_tiny_qwen3(root / "dense")))


def test_pion_through_verls_engine_rotates_each_packed_expert_where_fsdp2_put_it(moe_and_lora):
    experts = TINY_QWEN3_MOE["num_experts"]
    for report in (r["moe"] for r in moe_and_lora):
        routed = {n: g["algorithm"] for g in report["groups"] for n in g["names"]}
        assert all(routed[n] == "pion" for n in report["expert_sv_drift"]) and len(report["expert_sv_drift"]) == 2
        # Every expert's gate, up and down matrix moved, each keeping its singular values (Cayley is orthogonal).
        assert all(fraction == 1.0 for fraction in report["experts_moved"].values())
        assert max(report["expert_sv_drift"].values()) < 1e-6
        # Shard(0) left experts / 2 whole experts on each rank; their state is there, one block per expert
        # (two for gate_up: gate and up), nothing gathered.
        for name, shape in report["expert_local_shape"].items():
            assert shape[0] == experts // 2
            halves = 2 if name.endswith("gate_up_proj") else 1
            assert report["expert_state"][name][0] == halves * experts // 2


def test_verls_lora_path_trains_adapters_under_muon_and_pion_refuses_it_at_engine_start(moe_and_lora):
    for report in moe_and_lora:
        muon = report["lora_muon"]
        assert muon["trainable"] and all("lora_" in n for n in muon["trainable"])
        # The first step moves exactly the zero-initialized lora_B (lora_A's gradient is B^T(...) = 0): the
        # frozen base stays as it was.
        assert muon["changed"] == sorted(n for n in muon["trainable"] if "lora_B" in n)
        assert min(muon["lora_B_norm"].values()) > 0
        routed = {n: g["algorithm"] for g in muon["groups"] for n in g["names"]}
        assert {routed[n] for n in muon["trainable"]} == {"muon"}
        assert "Pion cannot train LoRA adapters" in report["lora_pion_error"]
        assert "Muon or AdamW" in report["lora_pion_error"]


def test_a_run_killed_while_saving_is_read_at_the_step_verls_tracker_names(tmp_path):
    from pion_rl.verl_plugin.checkpoint import LATEST_FILE, actor_dir, config_dir

    def save(step: int, complete: bool):
        actor = tmp_path / "run" / f"global_step_{step}" / "actor"
        (actor / "huggingface").mkdir(parents=True)
        (actor / "fsdp_config.json").write_text("{}")
        (actor / "huggingface" / "config.json").write_text("{}")
        if complete:  # verl writes the tracker after every file of the step
            (tmp_path / "run" / LATEST_FILE).write_text(str(step))

    # Killed during its first save: nothing completed, and the half-written step is not taken for a checkpoint.
    save(1, complete=False)
    assert actor_dir(tmp_path / "run") is None
    with pytest.raises(FileNotFoundError, match=LATEST_FILE):
        config_dir(tmp_path / "run")
    # Killed during step 3's save, after step 2's completed: step 2, though step 3 is the newest directory.
    save(2, complete=True)
    save(3, complete=False)
    assert actor_dir(tmp_path / "run") == tmp_path / "run" / "global_step_2" / "actor"
    assert config_dir(tmp_path / "run") == tmp_path / "run" / "global_step_2" / "actor" / "huggingface"
