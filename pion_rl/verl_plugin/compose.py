"""Print a recipe's fully composed verl config as YAML, after the checks ``main_ppo`` runs at start-up.

    python -m pion_rl.verl_plugin.compose --config-dir configs --config-name qwen3_1.7b_deepmath \
        optimizer=muon trainer.n_gpus_per_node=8

Composes with Hydra's compose API against verl's real config tree (the recipe configs put
``pkg://verl.trainer.config`` on the search path), exactly as ``python -m verl.trainer.main_ppo
--config-path ... --config-name ...`` would, then runs pion-rl's optimizer checks, builds the actor's optimizer and the reward's options as the workers
will (:mod:`pion_rl.verl_plugin.worker_build`) and runs verl's ``validate_config``, so what a worker would
reject fails here. Needs no GPU, Ray, data or model. stdout carries the YAML and nothing else (anything a
library prints goes to stderr); a bad override or config exits 1 with the reason on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path


def compose_config(config_dir: str | Path, config_name: str, overrides: list[str]):
    """The composed, validated recipe config (an OmegaConf DictConfig, interpolations unresolved)."""
    from hydra import compose, initialize_config_dir

    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from .preflight import config_layout_problems
    from .worker_build import build_as_workers

    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base=None):
        config = compose(config_name=config_name, overrides=overrides)
    # The GPU counts against the parallel sizes, as the launch's preflight checks them.
    if problems := config_layout_problems(config):
        raise ValueError("; ".join(problems))
    # pion-rl's optimizer checks included; first, because validate_config announces success on stderr.
    build_as_workers(config)
    validate_config(config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-dir", required=True, help="directory holding the recipe configs")
    parser.add_argument("--config-name", required=True, help="recipe config, e.g. qwen3_1.7b_deepmath")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. optimizer=muon")
    args = parser.parse_args(argv)

    from omegaconf import OmegaConf

    with contextlib.redirect_stdout(sys.stderr):
        try:
            config = compose_config(args.config_dir, args.config_name, args.overrides)
            text = OmegaConf.to_yaml(config, resolve=True)
        except Exception as error:  # noqa: BLE001 - the CLI reports any failure as one line, then exits 1
            reason = " ".join(line.strip() for line in str(error).splitlines() if line.strip())  # one line
            print(f"pion_rl.verl_plugin.compose: {type(error).__name__}: {reason}", file=sys.stderr)
            return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
