#!/usr/bin/env bash
# The paper's final evaluation (AIME24/25 avg@32, AMC23 avg@8, Minerva avg@4, OlympiadBench avg@8, T=0.6,
# top-p 0.95, the recipe's response length) of one model's base and the final checkpoints of its runs (those of
# the three that exist; each missing one is named on stderr, and none at all is an error), spread over the
# node's GPUs, written as OUT/results.json, OUT/responses.jsonl.gz and OUT/table.md beside the paper's Table 3,
# with paired-bootstrap intervals.
#
# Environment:
#   MODEL      qwen3_1.7b (default) | distilled: which recipes' runs
#   MODEL_PATH the base model (default: the recipe's, from the Hub)
#   CKPT_ROOT  where the runs' checkpoints are (default checkpoints/$WANDB_PROJECT, verl's default_local_dir
#              root relative to where the recipes were launched); runs are found by the recipes' names,
#              <CKPT_ROOT>/<config>_<AdamW|Muon|Pion>, and their latest checkpoint is evaluated
#   DATA_DIR, WANDB_PROJECT, PYTHON: as deepmath_recipe.sh
#   OUT        output directory (default eval/<model>)
# Extra arguments go to python -m pion_rl.evaluate (e.g. --backend hf, --seed 1, --mode math_verify).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/deepmath_recipe.sh"

model=${MODEL:-qwen3_1.7b}
case $model in
    qwen3_1.7b) config=qwen3_1.7b_deepmath base=Qwen/Qwen3-1.7B ;;
    distilled) config=r1_distill_qwen_1.5b_deepmath base=deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B ;;
    *) echo "eval_deepmath: MODEL=$model is not qwen3_1.7b or distilled" >&2; exit 1 ;;
esac
ckpt_root=${CKPT_ROOT:-checkpoints/${WANDB_PROJECT:-pion-rl}}
data_dir=${DATA_DIR:-$HOME/data}

models=(--model "base=${MODEL_PATH:-$base}")
found=0
for optimizer in AdamW Muon Pion; do
    run=$ckpt_root/${config}_$optimizer
    if [[ -d $run ]]; then
        models+=(--model "${optimizer,,}=$run")
        found=$((found + 1))
    else
        echo "eval_deepmath: no $optimizer run at $run, so it is left out: train it with" \
             "examples/grpo_trainer/run_${model}_${optimizer,,}_deepmath.sh, or set CKPT_ROOT to the directory" \
             "holding ${config}_$optimizer" >&2
    fi
done
if ((found == 0)); then
    echo "eval_deepmath: none of the three runs is under $ckpt_root: nothing to evaluate beside the base model" >&2
    exit 1
fi
data=()
for benchmark in "${DEEPMATH_VAL_BENCHMARKS[@]}"; do
    data+=("$data_dir/math_eval/$benchmark.parquet")
done
exec "$(recipe_python)" -m pion_rl.evaluate "${models[@]}" --data "${data[@]}" --out "${OUT:-eval/$model}" "$@"
