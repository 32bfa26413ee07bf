"""pion-rl: the Pion optimizer and matched AdamW / Muon baselines for GRPO training on verl."""

__version__ = "0.1.0"
