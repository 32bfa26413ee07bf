#!/usr/bin/env bash
# A few-minute check before committing a node to a multi-day run: Qwen3-0.6B (or MODEL_PATH) on 1 GPU (N_GPUS=2
# also works), GRPO with a tiny batch and short responses: 2 steps and a checkpoint at step 2, a relaunch that
# resumes from it and takes step 3, then an evaluation of the final policy on 8 AMC23 problems.
#
# Environment: as deepmath_recipe.sh (data from data_prep, preflight, PYTHON), and
#   OPTIMIZER   pion | muon | adamw (default pion): the recipes' optimizer=... override
#   SMOKE_DIR   where checkpoints and the evaluation go (default /tmp/pion-rl-smoke/<optimizer>; its
#               checkpoints/ and eval/ are replaced)
# Extra arguments are Hydra overrides for both launches. DRY_RUN=1 prints the first launch's config and exits.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/deepmath_recipe.sh"

export N_GPUS=${N_GPUS:-1} MODEL_PATH=${MODEL_PATH:-Qwen/Qwen3-0.6B}
optimizer=${OPTIMIZER:-pion}
smoke_dir=${SMOKE_DIR:-/tmp/pion-rl-smoke/$optimizer}
checkpoints=$smoke_dir/checkpoints
python=$(recipe_python)
if [[ ${DRY_RUN:-0} != 1 ]]; then
    rm -rf "$checkpoints" "$smoke_dir/eval"
fi

smoke=(
    data.train_batch_size=8 data.max_response_length=512
    actor_rollout_ref.rollout.n=4 actor_rollout_ref.rollout.tensor_model_parallel_size=1
    actor_rollout_ref.rollout.gpu_memory_utilization=0.4
    trainer.val_before_train=false trainer.test_freq=-1 "trainer.logger=[console]"
    trainer.save_freq=2 "trainer.experiment_name=smoke_$optimizer" "trainer.default_local_dir=$checkpoints"
)
run_deepmath_recipe qwen3_1.7b_deepmath "$optimizer" "${smoke[@]}" trainer.total_training_steps=2 "$@"
if [[ ${DRY_RUN:-0} == 1 ]]; then
    exit 0
fi
saved=$(stat -c %Y "$checkpoints/global_step_2/data.pt")
run_deepmath_recipe qwen3_1.7b_deepmath "$optimizer" "${smoke[@]}" trainer.total_training_steps=3 "$@"
# A resumed run starts at step 3: it leaves step 2's checkpoint as it was and saves step 3.
if [[ $(cat "$checkpoints/latest_checkpointed_iteration.txt") != 3 \
      || $(stat -c %Y "$checkpoints/global_step_2/data.pt") != "$saved" ]]; then
    echo "run_smoke: the relaunch did not resume from step 2 (see $checkpoints)" >&2
    exit 1
fi

"$python" -c 'import sys, pandas; pandas.read_parquet(sys.argv[1]).head(8).to_parquet(sys.argv[2])' \
    "${DATA_DIR:-$HOME/data}/math_eval/amc23.parquet" "$smoke_dir/amc23_8.parquet"
"$python" -m pion_rl.evaluate --model "$optimizer=$checkpoints" --data "$smoke_dir/amc23_8.parquet" \
    --k amc23=4 --max-new-tokens 512 --out "$smoke_dir/eval"
echo "run_smoke: trained, saved at step 2, resumed to step 3, evaluated: $smoke_dir/eval/table.md" >&2
