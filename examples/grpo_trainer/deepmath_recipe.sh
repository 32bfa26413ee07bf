# Shared launcher of the GRPO-on-DeepMath recipes: sourced by run_*_deepmath.sh, not run by itself.
#
# Environment (all optional):
#   MODEL_PATH     HF id or local directory of the model (default: the recipe config's model)
#   DATA_DIR       root of data_prep's output (default $HOME/data): deepmath/train.parquet from
#                  data_prep/deepmath.py, math_eval/<benchmark>.parquet from data_prep/eval_sets.py
#   N_GPUS         GPUs on this node (default 8)
#   WANDB_PROJECT  wandb project (default pion-rl)
#   PYTHON         interpreter with pion-rl and verl installed (default: the checkout's .venv that `make`
#                  builds if there is one, else python3)
#   DRY_RUN=1      print the fully composed config as YAML on stdout and exit: no Ray, GPU, data or model
#   TRAIN_FILE     training parquet instead of $DATA_DIR/deepmath/train.parquet
#   VAL_FILES      validation parquet files (space-separated) instead of the DEEPMATH_VAL_BENCHMARKS sets
#   VERL_PLATFORM=cpu  verl's trainer on CPU (pion_rl.verl_plugin.cpu; run_smoke.sh sets it on a machine
#                  with no GPU): the preflight checks the CPU extra instead of the GPU stack
# Without DRY_RUN, a preflight (pion_rl.verl_plugin.preflight) first checks verl's GPU stack, N_GPUS CUDA
# devices, the data files, the model (a local directory, or a Hub id: cached when HF_HUB_OFFLINE=1), that pion-rl
# imports outside the checkout and, when the run logs to wandb, that wandb has a key (or WANDB_MODE=offline); each
# missing piece is one line with its fix, and nothing starts. DRY_RUN checks the model the same way.
# Extra arguments are Hydra overrides, e.g. trainer.logger='[console,wandb,file]' or trainer.total_epochs=2.

# Benchmarks validated every trainer.test_freq steps; metrics val-core/<benchmark>/acc/mean@4.
DEEPMATH_VAL_BENCHMARKS=(aime24 aime25 amc23 minerva olympiadbench)
DEEPMATH_REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# The interpreter the recipes run: $PYTHON, else the checkout's .venv, else python3.
recipe_python() {
    if [[ -n ${PYTHON:-} ]]; then
        echo "$PYTHON"
    elif [[ -x $DEEPMATH_REPO_ROOT/.venv/bin/python ]]; then
        echo "$DEEPMATH_REPO_ROOT/.venv/bin/python"
    else
        echo python3
    fi
}

# True if the arguments ask Hydra for information only (--cfg, --help, --info): main_ppo then exits before Ray.
_hydra_exits_early() {
    local arg
    for arg in "$@"; do
        case $arg in --cfg | -c | --help | -h | --hydra-help | --info | -i) return 0 ;; esac
    done
    return 1
}

# True unless an override sets trainer.logger without wandb (the recipes log to wandb by default).
_logs_to_wandb() {
    local arg logs=1
    for arg in "$@"; do
        case $arg in trainer.logger=*) [[ $arg == *wandb* ]] && logs=1 || logs=0 ;; esac
    done
    return $((1 - logs))
}

# The model a launch trains: the last actor_rollout_ref.model.path= override, else MODEL_PATH, else the
# recipe config's own (its one `    path:` line under actor_rollout_ref.model).
_recipe_model() {
    local config_name=$1 arg model=${MODEL_PATH:-}
    shift
    for arg in "$@"; do
        case $arg in actor_rollout_ref.model.path=*) model=${arg#*=} ;; esac
    done
    if [[ -z $model ]]; then
        model=$(sed -n 's/^    path: //p' "$DEEPMATH_REPO_ROOT/configs/$config_name.yaml" | head -n 1)
    fi
    model=${model#[\'\"]}
    echo "${model%[\'\"]}"
}

# The data a launch reads: sets recipe_train and the array recipe_val (TRAIN_FILE, VAL_FILES, else DATA_DIR's).
_recipe_data() {
    local data_dir=${DATA_DIR:-$HOME/data} benchmark
    recipe_train=${TRAIN_FILE:-$data_dir/deepmath/train.parquet}
    recipe_val=()
    if [[ -n ${VAL_FILES:-} ]]; then
        read -ra recipe_val <<<"$VAL_FILES"
    else
        for benchmark in "${DEEPMATH_VAL_BENCHMARKS[@]}"; do
            recipe_val+=("$data_dir/math_eval/$benchmark.parquet")
        done
    fi
}

# recipe_preflight CONFIG_NAME [HYDRA_OVERRIDE...]: the checks a launch runs first (see the header); exit
# status 1 if something is missing. run_deepmath_recipe runs it unless RECIPE_PREFLIGHT_DONE=1.
recipe_preflight() {
    local config_name=$1 python recipe_train recipe_val flags=()
    shift
    python=$(recipe_python)
    _recipe_data
    if _logs_to_wandb "$@"; then flags+=(--wandb); fi
    if [[ ${VERL_PLATFORM:-} == cpu ]]; then flags+=(--cpu); fi
    # The checkout's preflight runs whether or not pion-rl is installed (it checks that too).
    PREFLIGHT_PYTHONPATH=${PYTHONPATH:-} PYTHONPATH="$DEEPMATH_REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}" \
        "$python" -m pion_rl.verl_plugin.preflight --n-gpus "${N_GPUS:-8}" \
        --train "$recipe_train" --val "${recipe_val[@]}" "${flags[@]}" \
        --model "$(_recipe_model "$config_name" "$@")"
}

# run_deepmath_recipe CONFIG_NAME OPTIMIZER [HYDRA_OVERRIDE...]
run_deepmath_recipe() {
    local config_name=$1 optimizer=$2
    shift 2
    local python recipe_train recipe_val file val_files=()
    python=$(recipe_python)
    _recipe_data
    for file in "${recipe_val[@]}"; do
        val_files+=("'$file'")
    done
    local overrides=(
        "optimizer=$optimizer"
        "data.train_files='$recipe_train'"
        "data.val_files=[$(IFS=,; echo "${val_files[*]}")]"
        "trainer.n_gpus_per_node=${N_GPUS:-8}"
        "trainer.project_name=${WANDB_PROJECT:-pion-rl}"
    )
    if [[ -n ${MODEL_PATH:-} ]]; then
        overrides+=("actor_rollout_ref.model.path='$MODEL_PATH'")
    fi
    local entry=(-m verl.trainer.main_ppo --config-path "$DEEPMATH_REPO_ROOT/configs")
    if [[ ${DRY_RUN:-0} == 1 ]]; then
        entry=(-m pion_rl.verl_plugin.compose --config-dir "$DEEPMATH_REPO_ROOT/configs")
    elif ! _hydra_exits_early "$@" && [[ ${RECIPE_PREFLIGHT_DONE:-0} != 1 ]]; then
        recipe_preflight "$config_name" "$@" || return 1
    fi
    "$python" "${entry[@]}" --config-name "$config_name" "${overrides[@]}" "$@"
}
