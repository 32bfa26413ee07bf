#!/usr/bin/env bash
# GRPO on DeepMath-103K: Qwen3-1.7B with Muon (configs/qwen3_1.7b_deepmath.yaml, configs/optimizer/muon.yaml).
# Environment and DRY_RUN=1: see deepmath_recipe.sh. Extra arguments are Hydra overrides.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/deepmath_recipe.sh"
run_deepmath_recipe qwen3_1.7b_deepmath muon "$@"
