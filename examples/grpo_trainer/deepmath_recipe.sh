# Shared launcher of the GRPO-on-DeepMath recipes: sourced by run_*_deepmath.sh, not run by itself.
#
# Environment (all optional):
#   MODEL_PATH     HF id or local directory of the model (default: the recipe config's model)
#   DATA_DIR       root of data_prep's output (default $HOME/data): deepmath/train.parquet from
#                  data_prep/deepmath.py, math_eval/<benchmark>.parquet from data_prep/eval_sets.py
#   N_GPUS         GPUs on this node (default 8)
#   WANDB_PROJECT  wandb project (default pion-rl)
#   PYTHON         interpreter with pion-rl and verl installed (default python3)
#   DRY_RUN=1      print the fully composed config as YAML on stdout and exit: no Ray, GPU, data or model
# Extra arguments are Hydra overrides, e.g. trainer.logger='[console,wandb,file]' or trainer.total_epochs=2.

# Benchmarks validated every trainer.test_freq steps; metrics val-core/<benchmark>/acc/mean@4.
DEEPMATH_VAL_BENCHMARKS=(aime24 aime25 amc23 minerva olympiadbench)

# run_deepmath_recipe CONFIG_NAME OPTIMIZER [HYDRA_OVERRIDE...]
run_deepmath_recipe() {
    local config_name=$1 optimizer=$2
    shift 2
    local repo_root data_dir benchmark val_files=()
    repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    data_dir=${DATA_DIR:-$HOME/data}
    for benchmark in "${DEEPMATH_VAL_BENCHMARKS[@]}"; do
        val_files+=("'$data_dir/math_eval/$benchmark.parquet'")
    done
    local overrides=(
        "optimizer=$optimizer"
        "data.train_files='$data_dir/deepmath/train.parquet'"
        "data.val_files=[$(IFS=,; echo "${val_files[*]}")]"
        "trainer.n_gpus_per_node=${N_GPUS:-8}"
        "trainer.project_name=${WANDB_PROJECT:-pion-rl}"
    )
    if [[ -n ${MODEL_PATH:-} ]]; then
        overrides+=("actor_rollout_ref.model.path='$MODEL_PATH'")
    fi
    local entry=(-m verl.trainer.main_ppo --config-path "$repo_root/configs")
    if [[ ${DRY_RUN:-0} == 1 ]]; then
        entry=(-m pion_rl.verl_plugin.compose --config-dir "$repo_root/configs")
    fi
    exec "${PYTHON:-python3}" "${entry[@]}" --config-name "$config_name" "${overrides[@]}" "$@"
}
