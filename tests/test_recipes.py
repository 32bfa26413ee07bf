"""The six GRPO-on-DeepMath recipe scripts, composed for real (DRY_RUN=1) against verl's config tree.

Each script runs as a user would run it (bash, env vars, extra Hydra overrides), with no data, model or GPU.
The composed configs are checked against the paper's recipe numbers, converted with verl's own config
dataclasses, built into optimizers by verl's ``build_optimizer``, and diffed across optimizers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "examples" / "grpo_trainer"
MODELS = {"qwen3_1.7b": "Qwen/Qwen3-1.7B", "distilled": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"}
OPTIMIZERS = {"pion": "Pion", "muon": "Muon", "adamw": "AdamW"}
ENV = {"DATA_DIR": "/nowhere/data", "N_GPUS": "8", "WANDB_PROJECT": "pion-rl-test"}
BENCHMARKS = ["aime24", "aime25", "amc23", "minerva", "olympiadbench"]

# The paper's RL recipe, per model and shared.
PER_MODEL = {
    "qwen3_1.7b": {"data.train_batch_size": 128, "data.max_response_length": 4096, "data.train_max_samples": -1},
    "distilled": {"data.train_batch_size": 64, "data.max_response_length": 8192, "data.train_max_samples": 50000,
                  "data.seed": 42, "data.shuffle": True},  # verl's draw of the paper's 50,000 problems
}
SHARED = {
    "algorithm.adv_estimator": "grpo",
    "algorithm.use_kl_in_reward": False,
    "actor_rollout_ref.actor.use_kl_loss": True,
    "actor_rollout_ref.actor.kl_loss_coef": 0.001,
    "actor_rollout_ref.actor.kl_loss_type": "low_var_kl",
    "actor_rollout_ref.actor.entropy_coeff": 0,
    "actor_rollout_ref.actor.strategy": "fsdp2",
    "actor_rollout_ref.actor.optim.lr": 1e-6,
    "actor_rollout_ref.actor.optim.lr_scheduler_type": "constant",
    "actor_rollout_ref.actor.optim.lr_warmup_steps": 0,
    "actor_rollout_ref.actor.optim.clip_grad": 1.0,
    "actor_rollout_ref.actor.optim.optimizer_impl": "pion_rl.optim",
    "actor_rollout_ref.rollout.n": 12,
    "actor_rollout_ref.rollout.name": "vllm",
    "actor_rollout_ref.rollout.gpu_memory_utilization": 0.6,
    "actor_rollout_ref.rollout.tensor_model_parallel_size": 2,
    "actor_rollout_ref.model.enable_gradient_checkpointing": True,
    "actor_rollout_ref.model.use_remove_padding": True,
    "actor_rollout_ref.model.external_lib": "pion_rl.verl_plugin.engine",
    "actor_rollout_ref.ref.fsdp_config.param_offload": True,
    "data.max_prompt_length": 2048,
    "data.filter_overlong_prompts": True,
    "data.truncation": "error",
    "reward.custom_reward_function.path": "pkg://pion_rl.reward",
    "reward.custom_reward_function.name": "compute_score",
    "reward.custom_reward_function.reward_kwargs.mode": "paper",  # the official release's reward
    "trainer.total_epochs": 1,
    # Checkpoints: every 50 steps and at the last, the latest 2 kept, resumed by themselves, each with the
    # policy as a Hugging Face directory.
    "trainer.save_freq": 50,
    "trainer.max_actor_ckpt_to_keep": 2,
    "trainer.resume_mode": "auto",
    "actor_rollout_ref.actor.checkpoint.save_contents": ["model", "optimizer", "extra", "hf_model"],
    "actor_rollout_ref.actor.checkpoint.load_contents": ["model", "optimizer", "extra"],
    "trainer.test_freq": 5,
    "trainer.logger": ["console", "wandb"],
    "trainer.n_gpus_per_node": 8,
    "trainer.project_name": "pion-rl-test",
    "data.train_files": "/nowhere/data/deepmath/train.parquet",
    "data.val_files": [f"/nowhere/data/math_eval/{b}.parquet" for b in BENCHMARKS],
}
# What each optimizer's recipe sets to run the official release's arithmetic (pion_rl/optim/ALGORITHM.md,
# "Against the official release").
OFFICIAL_ARITHMETIC = {
    "pion": {"actor_rollout_ref.actor.optim.override_optimizer_config.precision": "fp32"},
    "muon": {"actor_rollout_ref.actor.optim.override_optimizer_config.adamw_eps_form": "before_bias_correction"},
    "adamw": {},
}
RECIPE_CHECKPOINT_CONTENTS = ["model", "optimizer", "extra"]
OPTIMIZER_KEYS = {"optimizer", "weight_decay", "override_optimizer_config"}
# The run name carries the optimizer (wandb run, checkpoint dir, rollout trace), so the three runs stay apart.
RUN_NAME_KEYS = {
    "trainer.experiment_name", "trainer.default_local_dir", "actor_rollout_ref.rollout.trace.experiment_name",
}


def _run(script: str, *args: str, dry_run: bool = True, **env: str) -> subprocess.CompletedProcess:
    # Not offline: the recipes' Hub models need not be cached for a dry run that may download them.
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("MODEL_PATH", "DRY_RUN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    full_env.update(ENV, PYTHON=sys.executable, **env, **({"DRY_RUN": "1"} if dry_run else {}))
    return subprocess.run(["bash", str(SCRIPTS / script), *args], env=full_env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def local_model(tmp_path_factory) -> Path:
    """A local model directory with a space in its path (the dry run checks that it holds a model)."""
    return _write_model_config(tmp_path_factory.mktemp("models") / "my qwen3")


@pytest.fixture(scope="module")
def runs(local_model):
    """Every recipe script's dry run, one with MODEL_PATH and pass-through overrides, and one real launch that
    stops after composing (verl's main_ppo with Hydra's --cfg job), all run concurrently."""
    jobs = {(m, o): (f"run_{m}_{o}_deepmath.sh",) for m in MODELS for o in OPTIMIZERS}
    with ThreadPoolExecutor(max_workers=len(jobs) + 1) as pool:
        futures = {key: pool.submit(_run, *args) for key, args in jobs.items()}
        futures["custom"] = pool.submit(
            _run, "run_qwen3_1.7b_muon_deepmath.sh", "trainer.logger=[console,wandb,file]", "trainer.total_epochs=2",
            "trainer.save_freq=10", "trainer.resume_mode=disable", MODEL_PATH=str(local_model),
        )
        futures["main_ppo"] = pool.submit(_run, "run_distilled_muon_deepmath.sh", "--cfg", "job", "--resolve",
                                          dry_run=False)
        return {key: f.result() for key, f in futures.items()}


def _composed(run) -> dict:
    assert run.returncode == 0, run.stderr[-3000:]
    config = yaml.safe_load(run.stdout)  # stdout must be the YAML and nothing else
    assert isinstance(config, dict), run.stdout[:500]
    return config


def _get(config: dict, dotted: str):
    for key in dotted.split("."):
        config = config[key]
    return config


def _flatten(tree, prefix=""):
    if isinstance(tree, dict) and tree:
        return {k: v for key, sub in tree.items() for k, v in _flatten(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_script_composes_to_the_spec_recipe(runs, model, optimizer):
    config = _composed(runs[model, optimizer])
    expected = {**SHARED, **PER_MODEL[model], **OFFICIAL_ARITHMETIC[optimizer],
                "actor_rollout_ref.model.path": MODELS[model],
                "actor_rollout_ref.actor.optim.optimizer": OPTIMIZERS[optimizer]}
    assert {k: _get(config, k) for k in expected} == expected
    # One optimizer step per RL step.
    assert _get(config, "actor_rollout_ref.actor.ppo_mini_batch_size") == _get(config, "data.train_batch_size")


@pytest.mark.parametrize("model", MODELS)
def test_optimizer_variants_differ_only_in_the_optimizer(runs, model):
    flat = {o: _flatten(_composed(runs[model, o])) for o in OPTIMIZERS}
    for other in ("muon", "adamw"):
        differing = {k for k in flat["pion"].keys() | flat[other].keys() if flat["pion"].get(k) != flat[other].get(k)}
        outside = {k for k in differing
                   if not any(k.startswith(f"actor_rollout_ref.actor.optim.{o}") for o in OPTIMIZER_KEYS)}
        assert outside == RUN_NAME_KEYS, outside
        assert "actor_rollout_ref.actor.optim.optimizer" in differing


def test_env_vars_and_extra_arguments_reach_the_config(runs, local_model):
    config = _composed(runs["custom"])
    assert _get(config, "actor_rollout_ref.model.path") == str(local_model)
    assert _get(config, "trainer.logger") == ["console", "wandb", "file"]
    assert _get(config, "trainer.total_epochs") == 2
    assert (_get(config, "trainer.save_freq"), _get(config, "trainer.resume_mode")) == (10, "disable")
    assert _get(config, "actor_rollout_ref.actor.optim.optimizer") == "Muon"


def test_dry_run_prints_what_main_ppo_would_run(runs):
    # Without DRY_RUN the script execs verl.trainer.main_ppo; Hydra's --cfg job prints its config and stops.
    assert _composed(runs["main_ppo"]) == _composed(runs["distilled", "muon"])


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_optim_section_builds_through_verl(runs, optimizer):
    """verl's dataclass conversion and build_optimizer accept every recipe option, and they reach the groups;
    the optimizer telemetry is on, with singular values every 10 steps."""
    from omegaconf import OmegaConf
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.config import FSDPOptimizerConfig

    from pion_rl.verl_plugin.optimizer_config import build_optimizer_with_telemetry

    section = _get(_composed(runs["qwen3_1.7b", optimizer]), "actor_rollout_ref.actor.optim")
    config = omega_conf_to_dataclass(OmegaConf.create(section))
    assert isinstance(config, FSDPOptimizerConfig)
    hf_config = Qwen3Config(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=32)
    model = Qwen3ForCausalLM(hf_config)
    built, telemetry = build_optimizer_with_telemetry(model, config)
    assert telemetry is not None and telemetry.spectrum_every == 10
    groups = built.param_groups
    by_algorithm = {(g.get("algorithm"), g.get("row_block")): g for g in groups}
    assert all(g["lr"] == 1e-6 for g in groups)
    if optimizer == "pion":
        assert set(by_algorithm) == {("adamw", None), ("pion", 32), ("pion", None)}
        pion = by_algorithm["pion", None]
        assert (pion["variant"], pion["update_side"], pion["degree"], pion["second_moment"], pion["weight_decay"],
                pion["precision"]) == ("lie_lie", "alternate", 2, False, 0.0, "fp32")
        assert tuple(pion["betas"])[0] == 0.9
    elif optimizer == "muon":
        assert set(by_algorithm) == {("adamw", None), ("muon", None)}
        muon = by_algorithm["muon", None]
        assert (muon["momentum"], muon["nesterov"], muon["ns_steps"], muon["weight_decay"]) == (0.95, True, 5, 0.01)
        # The official Muon's fallback: eps added to the raw root, before the bias corrections.
        assert by_algorithm["adamw", None]["adamw_eps_form"] == "before_bias_correction"
    else:
        (group,) = groups
        assert group["weight_decay"] == 0.01 and tuple(group["betas"]) == (0.9, 0.999)
    if optimizer != "adamw":
        adamw = by_algorithm["adamw", None]
        assert adamw["adamw_weight_decay"] == 0.01 and tuple(adamw["adamw_betas"]) == (0.9, 0.999)
        if optimizer == "pion":  # the official Pion's fallback is torch's AdamW
            assert adamw["adamw_eps_form"] == "after_bias_correction"
        assert "model.embed_tokens.weight" in adamw["param_names"] and "lm_head.weight" in adamw["param_names"]


def test_checkpoint_section_is_verls_and_saves_the_hf_model(runs):
    """The actor's checkpoint section converts to verl's CheckpointConfig (what its checkpoint manager reads;
    tests/test_verl_plugin_on_cpu.py saves and exports through that manager with these contents)."""
    from omegaconf import OmegaConf
    from verl.trainer.config import CheckpointConfig
    from verl.utils.config import omega_conf_to_dataclass

    section = _get(_composed(runs["qwen3_1.7b", "pion"]), "actor_rollout_ref.actor.checkpoint")
    config = omega_conf_to_dataclass(OmegaConf.create(section))
    assert isinstance(config, CheckpointConfig)
    assert list(config.save_contents) == RECIPE_CHECKPOINT_CONTENTS + ["hf_model"]
    assert list(config.load_contents) == RECIPE_CHECKPOINT_CONTENTS


def test_smoke_recipe_composes_a_tiny_run_that_saves_at_step_2(tmp_path):
    run = _run("run_smoke.sh", OPTIMIZER="muon", SMOKE_DIR=str(tmp_path), SMOKE_DEVICE="gpu")
    config = _composed(run)
    expected = {
        "actor_rollout_ref.model.path": "Qwen/Qwen3-0.6B", "actor_rollout_ref.actor.optim.optimizer": "Muon",
        "trainer.n_gpus_per_node": 8,  # ENV sets N_GPUS=8; the script's default is 1
        "data.train_batch_size": 8, "actor_rollout_ref.rollout.n": 4, "trainer.total_training_steps": 2,
        "trainer.save_freq": 2, "trainer.resume_mode": "auto", "trainer.default_local_dir": f"{tmp_path}/checkpoints",
        "actor_rollout_ref.actor.checkpoint.save_contents": ["model", "optimizer", "extra", "hf_model"],
    }
    assert {k: _get(config, k) for k in expected} == expected
    assert not (tmp_path / "checkpoints").exists()


def test_both_recipe_models_get_row_blocks_of_128():
    """The paper's recipe: q/k/v row blocks of head_dim 128 for both models (public configs of the two checkpoints)."""
    from transformers import Qwen2Config, Qwen3Config

    from pion_rl.optim.routing import attention_head_size

    qwen3_1_7b = Qwen3Config(hidden_size=2048, num_attention_heads=16, num_key_value_heads=8, head_dim=128)
    r1_distill_1_5b = Qwen2Config(hidden_size=1536, num_attention_heads=12, num_key_value_heads=2)
    assert attention_head_size(qwen3_1_7b) == attention_head_size(r1_distill_1_5b) == 128


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer=sgd", "Could not find 'optimizer/sgd'"),
        ("actor_rollout_ref.actor.optim.lrr=1", "Could not override 'actor_rollout_ref.actor.optim.lrr'"),
        ("actor_rollout_ref.actor.optim.optimizer=pion", "'pion' is not a pion-rl optimizer"),
        ("+actor_rollout_ref.actor.optim.override_optimizer_config.momentm=0.9", "['momentm'] that Pion does not take"),
        ("actor_rollout_ref.actor.strategy=fsdp", "set actor_rollout_ref.actor.strategy=fsdp2"),
        ("+actor_rollout_ref.actor.optim.override_optimizer_config.telemetry.spectrum_evry=5",
         "telemetry has unknown key(s) ['spectrum_evry']; valid keys: enable, spectrum_every"),
        ("actor_rollout_ref.actor.optim.override_optimizer_config.telemetry.spectrum_every=-1",
         "spectrum_every must be an int >= 0 (0 turns singular values off), got -1"),
        # Hydra's two-line message, on one line.
        ("+reward.custom_reward_function.reward_kwargs.mode=math_verify",
         "Could not append to config. An item is already at 'reward.custom_reward_function.reward_kwargs.mode'. "
         "Either remove + prefix"),
    ],
)
def test_bad_override_is_a_clear_error_with_nothing_on_stdout(capsys, override, message):
    from pion_rl.verl_plugin import compose

    code = compose.main(["--config-dir", str(REPO / "configs"), "--config-name", "qwen3_1.7b_deepmath", override])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    (line,) = [line for line in err.splitlines() if line.startswith("pion_rl.verl_plugin.compose:")]
    assert message in line


def _write_model_config(directory: Path) -> Path:
    """A local model directory holding only a Qwen3 config (4 heads of 16 rows), as a downloaded model has."""
    from transformers import Qwen3Config

    Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def worker_checked_runs(tmp_path_factory):
    """Dry runs with overrides that only the workers' own optimizer / reward construction would reject."""
    model = str(_write_model_config(tmp_path_factory.mktemp("local model")))
    jobs = {
        "variant": ("actor_rollout_ref.actor.optim.override_optimizer_config.variant=bogus",),
        "lr": ("actor_rollout_ref.actor.optim.lr=-1",),
        "reward_mode": ("reward.custom_reward_function.reward_kwargs.mode=bogus",),
        "math_verify": ("reward.custom_reward_function.reward_kwargs.mode=math_verify",),
        "bf16": ("actor_rollout_ref.actor.optim.override_optimizer_config.precision=bf16",),
        "head_dim": ("+actor_rollout_ref.actor.optim.override_optimizer_config.head_dim=24",),
        "model_head_dim": (),
    }
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {key: pool.submit(_run, "run_qwen3_1.7b_pion_deepmath.sh", *args,
                                    **({"MODEL_PATH": model} if "head_dim" in key else {}))
                   for key, args in jobs.items()}
        return {key: f.result() for key, f in futures.items()}


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ("variant", "ValueError: Pion: unknown variant 'bogus'"),
        ("lr", "ValueError: Pion: lr must be a number >= 0, got -1"),
        ("reward_mode", "ValueError: unknown reward mode 'bogus'"),
        # The model's q_proj has 64 rows (4 heads of 16): heads of 24 rows do not split it.
        ("head_dim", "do not split into heads of head_dim=24. head_dim must be the model's attention head size"),
    ],
)
def test_dry_run_rejects_what_the_workers_would_reject_in_one_line(worker_checked_runs, job, message):
    run = worker_checked_runs[job]
    assert run.returncode == 1 and run.stdout == "", run.stderr[-3000:]
    (line,) = [line for line in run.stderr.splitlines() if line.startswith("pion_rl.verl_plugin.compose:")]
    assert message in line
    assert "All configuration checks passed" not in run.stderr


def test_math_verify_reward_override_as_documented_composes(worker_checked_runs):
    config = _composed(worker_checked_runs["math_verify"])
    assert _get(config, "reward.custom_reward_function.reward_kwargs") == {"mode": "math_verify"}


def test_bf16_precision_is_one_override_away(worker_checked_runs):
    # The override passes the workers' own optimizer construction (the dry run builds it) and reaches the config.
    run = worker_checked_runs["bf16"]
    assert "All configuration checks passed" in run.stderr, run.stderr[-3000:]
    assert _get(_composed(run), "actor_rollout_ref.actor.optim.override_optimizer_config.precision") == "bf16"


def test_dry_run_reads_pion_head_size_from_a_local_model_config(worker_checked_runs, runs):
    # With the model's config at hand, the per-head check runs silently; without it the dry run says so.
    assert "not checked against its head size" not in worker_checked_runs["model_head_dim"].stderr
    assert _composed(worker_checked_runs["model_head_dim"])
    assert "not checked against its head size" in runs["qwen3_1.7b", "pion"].stderr


@pytest.mark.parametrize("role", ["actor", "ref"])
def test_printed_fsdp_strategy_is_the_one_verls_engine_uses(runs, role):
    """verl builds each engine from the role's config dataclass, whose engine.strategy it copies from
    `<role>.strategy`; the printed `<role>.fsdp_config.strategy` must say the same."""
    from omegaconf import OmegaConf
    from verl.utils.config import omega_conf_to_dataclass

    for optimizer in OPTIMIZERS:
        config = _composed(runs["qwen3_1.7b", optimizer])
        section = _get(config, f"actor_rollout_ref.{role}")
        fields = dict(section)
        if role == "ref":  # the renames ActorRolloutRefWorker.init_model applies before converting the ref's config
            fields["ppo_mini_batch_size"] = _get(config, "actor_rollout_ref.actor.ppo_mini_batch_size")
            for old, new in (("log_prob_micro_batch_size", "ppo_micro_batch_size"),
                             ("log_prob_micro_batch_size_per_gpu", "ppo_micro_batch_size_per_gpu"),
                             ("log_prob_use_dynamic_bsz", "use_dynamic_bsz"),
                             ("log_prob_max_token_len_per_gpu", "ppo_max_token_len_per_gpu")):
                fields[new] = fields.pop(old, None)
        engine = omega_conf_to_dataclass(OmegaConf.create(fields)).engine
        assert engine.strategy == section["strategy"] == section["fsdp_config"]["strategy"] == "fsdp2"
