"""The CPU demo: GRPO on synthetic arithmetic with a tiny Qwen3 policy, AdamW vs Muon vs Pion.

`python -m pion_rl.demo [optimizer=pion] [key=value ...]` (see `pion_rl.demo.config`).
"""
