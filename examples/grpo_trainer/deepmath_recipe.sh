# Shared launcher of the GRPO-on-DeepMath recipes: sourced by run_*_deepmath.sh, not run by itself.
#
# Environment (all optional):
#   MODEL_PATH     HF id or local directory of the model (default: the recipe config's model)
#   DATA_DIR       root of data_prep's output (default $HOME/data): deepmath/train.parquet from
#                  data_prep/deepmath.py, math_eval/<benchmark>.parquet from data_prep/eval_sets.py
#   N_GPUS         GPUs on each node (default 8), trainer.n_gpus_per_node
#   NNODES         nodes (default 1), trainer.nnodes; above 1 the launch joins a running Ray cluster
#                  (RAY_ADDRESS, else the one started on this machine with `ray start --head`): docs/multi-node.md
#   WANDB_PROJECT  wandb project (default pion-rl)
#   PYTHON         interpreter with pion-rl and verl installed (default: the checkout's .venv that `make`
#                  builds if there is one, else python3)
#   DRY_RUN=1      print the fully composed config as YAML on stdout and exit: no Ray, GPU, data or model
#   TRAIN_FILE     training parquet instead of $DATA_DIR/deepmath/train.parquet
#   VAL_FILES      validation parquet files (space-separated) instead of the DEEPMATH_VAL_BENCHMARKS sets
#   VERL_PLATFORM=cpu  verl's trainer on CPU (pion_rl.verl_plugin.cpu, with the override platform=cpu;
#                  run_smoke.sh sets both on a machine with no GPU): the preflight checks the CPU extra instead
#                  of the GPU stack
# Without DRY_RUN, a preflight (pion_rl.verl_plugin.preflight) first checks verl's GPU stack, N_GPUS CUDA
# devices (with NNODES>1: the Ray cluster's alive nodes and their GPUs, and on each node that pion-rl imports and
# the data and model are readable), the data files, the model (a local directory, or a Hub id: cached when
# HF_HUB_OFFLINE=1), that the GPU counts fit every parallel size of the composed config, that pion-rl imports
# outside the checkout and, when the run logs to wandb, that wandb has a key (or WANDB_MODE=offline); each missing
# piece is one line with its fix, and nothing starts. DRY_RUN checks the model and the GPU counts the same way.
# Extra arguments are Hydra overrides, e.g. trainer.logger='[console,wandb,file]' or trainer.total_epochs=2; with
# Hydra's own --cfg, --help or --info, main_ppo prints what they ask for and exits before Ray (DRY_RUN or not).

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

# The GPU counts of a launch, checked before anything runs: N_GPUS and NNODES are whole numbers >= 1.
_recipe_counts() {
    local name value
    for name in N_GPUS NNODES; do
        value=${!name:-}
        if [[ -n $value && ! $value =~ ^[1-9][0-9]*$ ]]; then
            echo "deepmath_recipe: $name=$value is not a whole number >= 1: set it to a count such as" \
                 "$([[ $name == N_GPUS ]] && echo "8 (GPUs per node)" || echo "2 (nodes)")" >&2
            return 1
        fi
    done
}

# The launcher's overrides of a launch: sets the array recipe_overrides (then come the caller's).
_recipe_overrides() {
    local optimizer=$1 recipe_train recipe_val file val_files=()
    _recipe_data
    for file in "${recipe_val[@]}"; do
        val_files+=("'$file'")
    done
    recipe_overrides=(
        "optimizer=$optimizer"
        "data.train_files='$recipe_train'"
        "data.val_files=[$(IFS=,; echo "${val_files[*]}")]"
        "trainer.n_gpus_per_node=${N_GPUS:-8}"
        "trainer.nnodes=${NNODES:-1}"
        "trainer.project_name=${WANDB_PROJECT:-pion-rl}"
    )
    if [[ -n ${MODEL_PATH:-} ]]; then
        recipe_overrides+=("actor_rollout_ref.model.path='$MODEL_PATH'")
    fi
    if ((${NNODES:-1} > 1)); then
        # ray.init joins the running cluster, which refuses to be sized by the joining driver.
        recipe_overrides+=(ray_kwargs.ray_init.num_cpus=null ++ray_kwargs.ray_init.num_gpus=null)
    fi
}

# recipe_preflight CONFIG_NAME OPTIMIZER [HYDRA_OVERRIDE...]: the checks a launch runs first (see the header);
# exit status 1 if something is missing. run_deepmath_recipe runs it unless RECIPE_PREFLIGHT_DONE=1.
recipe_preflight() {
    local config_name=$1 optimizer=$2 python recipe_train recipe_val recipe_overrides flags=()
    shift 2
    _recipe_counts || return 1
    python=$(recipe_python)
    _recipe_data
    _recipe_overrides "$optimizer"
    if _logs_to_wandb "$@"; then flags+=(--wandb); fi
    if [[ ${VERL_PLATFORM:-} == cpu ]]; then flags+=(--cpu); fi
    # The checkout's preflight runs whether or not pion-rl is installed (it checks that too).
    PREFLIGHT_PYTHONPATH=${PYTHONPATH:-} PYTHONPATH="$DEEPMATH_REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}" \
        "$python" -m pion_rl.verl_plugin.preflight --n-gpus "${N_GPUS:-8}" --nnodes "${NNODES:-1}" \
        --train "$recipe_train" --val "${recipe_val[@]}" "${flags[@]}" \
        --config-dir "$DEEPMATH_REPO_ROOT/configs" --config-name "$config_name" -- "${recipe_overrides[@]}" "$@"
}

# run_deepmath_recipe CONFIG_NAME OPTIMIZER [HYDRA_OVERRIDE...]
run_deepmath_recipe() {
    local config_name=$1 optimizer=$2
    shift 2
    local python recipe_overrides launch_env=()
    _recipe_counts || return 1
    python=$(recipe_python)
    _recipe_overrides "$optimizer"
    if ((${NNODES:-1} > 1)); then
        launch_env+=("RAY_ADDRESS=${RAY_ADDRESS:-auto}")
    fi
    local entry=(-m verl.trainer.main_ppo --config-path "$DEEPMATH_REPO_ROOT/configs")
    if _hydra_exits_early "$@"; then
        :  # Hydra answers --cfg/--help/--info itself, before Ray and the preflight
    elif [[ ${DRY_RUN:-0} == 1 ]]; then
        entry=(-m pion_rl.verl_plugin.compose --config-dir "$DEEPMATH_REPO_ROOT/configs")
    elif [[ ${RECIPE_PREFLIGHT_DONE:-0} != 1 ]]; then
        recipe_preflight "$config_name" "$optimizer" "$@" || return 1
    fi
    env "${launch_env[@]}" "$python" "${entry[@]}" --config-name "$config_name" "${recipe_overrides[@]}" "$@"
}
