#!/usr/bin/env bash
# A few-minute check of the whole recipe path, verl's own trainer (main_ppo) with our config, engine, optimizer
# and reward: 2 GRPO steps and a checkpoint at step 2, a relaunch that must resume from it and take step 3,
# then python -m pion_rl.evaluate on the final policy.
#
# On GPUs: Qwen3-0.6B (or MODEL_PATH) on 1 GPU (N_GPUS=2 also works), a tiny batch, short responses, vLLM;
# data from data_prep (DATA_DIR/deepmath/train.parquet, DATA_DIR/math_eval/amc23.parquet: validated on and
# evaluated on 8 of its problems).
# On a machine with no GPU (or SMOKE_DEVICE=cpu): verl's trainer on the CPU platform (platform=cpu,
# configs/platform/cpu.yaml; pion_rl.verl_plugin.cpu: N_GPUS=2 Ray workers, FSDP2 over gloo, the hf rollout) with
# the demo's tiny Qwen3, warm-started (the demo's cached warm start), on the demo's synthetic arithmetic: no data,
# no download. MODEL_PATH, TRAIN_FILE and VAL_FILES replace the demo's model and problems when set.
# With NNODES=2 (or more) there, the laptop rehearsal of a multi-node run: unless RAY_ADDRESS names a cluster, a
# Ray cluster of NNODES nodes on this machine (pion_rl.verl_plugin.cpu.local_cluster: a head and more raylets,
# each declaring N_GPUS GPUs, default 1), joined by both launches and stopped when the script ends, fails or is
# interrupted: only that cluster, by the process that holds it.
#
# Environment: as deepmath_recipe.sh, and
#   OPTIMIZER     pion | muon | adamw (default pion): the recipes' optimizer=... override
#   SMOKE_DIR     where checkpoints and the evaluation go (default /tmp/pion-rl-smoke/<optimizer>; its
#                 checkpoints/ and eval/ are replaced, only once every check has passed)
#   SMOKE_DEVICE  gpu | cpu (default: gpu if torch sees CUDA, else cpu)
# Extra arguments are Hydra overrides for both launches. DRY_RUN=1 prints the first launch's config and exits.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/deepmath_recipe.sh"

optimizer=${OPTIMIZER:-pion}
smoke_dir=${SMOKE_DIR:-/tmp/pion-rl-smoke/$optimizer}
checkpoints=$smoke_dir/checkpoints
python=$(recipe_python)
if [[ -z ${SMOKE_DEVICE:-} ]]; then
    SMOKE_DEVICE=$("$python" -c 'import torch; print("gpu" if torch.cuda.is_available() else "cpu")' 2>/dev/null \
        || echo gpu)  # no torch: the GPU preflight says what is missing
fi
case $optimizer in pion | muon | adamw) ;; *)
    echo "run_smoke: OPTIMIZER=$optimizer: expected pion, muon or adamw" >&2; exit 1 ;;
esac

smoke=(
    "trainer.logger=[console]" trainer.val_before_train=false trainer.test_freq=-1
    trainer.save_freq=2 "trainer.experiment_name=smoke_$optimizer" "trainer.default_local_dir=$checkpoints"
)
if [[ $SMOKE_DEVICE == cpu ]]; then
    # The demo's tiny model and problems unless MODEL_PATH, TRAIN_FILE or VAL_FILES say otherwise (each honoured).
    inputs=$smoke_dir/inputs  # the exported tiny model and problems (rewritten each run, from the cache)
    # Two workers: both on this node, or one on each of NNODES=2 nodes.
    export VERL_PLATFORM=cpu VERL_USE_EXTERNAL_MODULES=pion_rl.verl_plugin.cpu
    export N_GPUS=${N_GPUS:-$([[ ${NNODES:-1} == 1 ]] && echo 2 || echo 1)}
    export MODEL_PATH=${MODEL_PATH:-$inputs/model} TRAIN_FILE=${TRAIN_FILE:-$inputs/train.parquet}
    export VAL_FILES=${VAL_FILES:-$inputs/heldout.parquet}
    read -r eval_data _ <<<"$VAL_FILES"
    eval_k=$("$python" -c 'import sys, pandas; print(",".join(f"{s}=4" for s in
        sorted(set(pandas.read_parquet(sys.argv[1]).data_source))))' "$eval_data" 2>/dev/null || echo "")
    eval_tokens=16
    # verl's CPU platform (configs/platform/cpu.yaml): one override, sized as the demo.
    smoke+=(platform=cpu)
else
    export N_GPUS=${N_GPUS:-1} MODEL_PATH=${MODEL_PATH:-Qwen/Qwen3-0.6B}
    data_dir=${DATA_DIR:-$HOME/data}
    export VAL_FILES=${VAL_FILES:-$data_dir/math_eval/amc23.parquet}
    eval_data=$smoke_dir/amc23_8.parquet eval_k=amc23=4 eval_tokens=512
    smoke+=(
        data.train_batch_size=8 data.max_response_length=512
        actor_rollout_ref.rollout.n=4 actor_rollout_ref.rollout.tensor_model_parallel_size=1
        actor_rollout_ref.rollout.gpu_memory_utilization=0.4
    )
fi

# The CPU run's model and problems first: the dry run checks the model as a launch does.
if [[ $SMOKE_DEVICE == cpu && "$MODEL_PATH $TRAIN_FILE $VAL_FILES" == *"$inputs/"* ]]; then
    PYTHONPATH="$DEEPMATH_REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}" "$python" -m pion_rl.demo.export --out "$inputs" \
        --cache-dir "$DEEPMATH_REPO_ROOT/outputs/demo"
    [[ -z $eval_k ]] && eval_k=synthetic_arith=4
fi
if [[ ${DRY_RUN:-0} == 1 ]]; then
    run_deepmath_recipe qwen3_1.7b_deepmath "$optimizer" "${smoke[@]}" trainer.total_training_steps=2 "$@"
    exit 0
fi
# The rehearsal's cluster, before the preflight that checks it. The trap stops it however the script ends (a
# SIGKILL of the script's process group takes the holder and its Ray processes with it).
if [[ $SMOKE_DEVICE == cpu && ${NNODES:-1} != 1 && -z ${RAY_ADDRESS:-} ]]; then
    _recipe_counts || exit 1
    address_file=$(mktemp -d)/ray_address
    PYTHONPATH="$DEEPMATH_REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}" "$python" -m pion_rl.verl_plugin.cpu.local_cluster \
        --nodes "$NNODES" --gpus-per-node "$N_GPUS" --address-file "$address_file" &
    cluster_pid=$!
    trap 'kill -TERM "$cluster_pid" 2>/dev/null; wait "$cluster_pid" || true; rm -r "${address_file%/*}"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    until [[ -s $address_file ]]; do
        if ! kill -0 "$cluster_pid" 2>/dev/null; then
            echo "run_smoke: the local Ray cluster of NNODES=$NNODES nodes did not start (its error is above)" >&2
            exit 1
        fi
        sleep 1
    done
    RAY_ADDRESS=$(<"$address_file")
    export RAY_ADDRESS
fi
# Every check first; only then are the earlier checkpoints and evaluation replaced.
recipe_preflight qwen3_1.7b_deepmath "$optimizer" "${smoke[@]}" "$@"
export RECIPE_PREFLIGHT_DONE=1
rm -rf "$checkpoints" "$smoke_dir/eval"

run_deepmath_recipe qwen3_1.7b_deepmath "$optimizer" "${smoke[@]}" trainer.total_training_steps=2 "$@"
# The file's modification time in ns, portably (GNU and BSD stat differ).
mtime() { "$python" -c 'import os, sys; print(os.stat(sys.argv[1]).st_mtime_ns)' "$1"; }
saved=$(mtime "$checkpoints/global_step_2/data.pt")
run_deepmath_recipe qwen3_1.7b_deepmath "$optimizer" "${smoke[@]}" trainer.total_training_steps=3 "$@"
# A resumed run starts at step 3: it leaves step 2's checkpoint as it was and saves step 3.
if [[ $(cat "$checkpoints/latest_checkpointed_iteration.txt") != 3 \
      || $(mtime "$checkpoints/global_step_2/data.pt") != "$saved" ]]; then
    echo "run_smoke: the relaunch did not resume from step 2 (see $checkpoints)" >&2
    exit 1
fi

if [[ $SMOKE_DEVICE != cpu ]]; then
    "$python" -c 'import sys, pandas; pandas.read_parquet(sys.argv[1]).head(8).to_parquet(sys.argv[2])' \
        "$VAL_FILES" "$eval_data"
fi
"$python" -m pion_rl.evaluate --model "$optimizer=$checkpoints" --data "$eval_data" \
    --k "$eval_k" --max-new-tokens "$eval_tokens" --out "$smoke_dir/eval"
echo "run_smoke: trained, saved at step 2, resumed to step 3, evaluated: $smoke_dir/eval/table.md" >&2
