#!/usr/bin/env bash
# GRPO on DeepMath-103K: DeepSeek-R1-Distill-Qwen-1.5B with Muon
# (configs/r1_distill_qwen_1.5b_deepmath.yaml, configs/optimizer/muon.yaml).
# Environment and DRY_RUN=1: see deepmath_recipe.sh. Extra arguments are Hydra overrides.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/deepmath_recipe.sh"
run_deepmath_recipe r1_distill_qwen_1.5b_deepmath muon "$@"
