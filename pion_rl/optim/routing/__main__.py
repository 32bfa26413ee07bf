"""``python -m pion_rl.optim.routing MODEL``: the routing table of a model, from its config alone.

The model is built on the meta device (no weights read or allocated), so a 30B model costs nothing.
"""

from __future__ import annotations

import argparse
import os

import torch
from torch import nn

from . import ROUTER_CHOICES, route_parameters, routing_table


def _load_model(source: str) -> nn.Module:
    """A model from an HF id in the local cache, a local directory or a ``config.json``, on the meta device."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if os.path.isfile(source):
        config = AutoConfig.from_pretrained(os.path.dirname(os.path.abspath(source)) or ".", local_files_only=True) \
            if os.path.basename(source) == "config.json" else None
        if config is None:
            raise ValueError(f"{source} is a file but not a config.json; give a model directory, its config.json "
                             f"or a Hugging Face id in the local cache")
    else:
        try:
            config = AutoConfig.from_pretrained(source, local_files_only=True)
        except OSError as error:
            raise ValueError(f"no model config for {source!r} on this machine (a local directory, its config.json, "
                             f"or a Hugging Face id already in the cache: huggingface-cli download {source} "
                             f"config.json): {error}") from None
    with torch.device("meta"):
        try:
            return AutoModelForCausalLM.from_config(config)
        except ValueError:
            from transformers import AutoModel

            return AutoModel.from_config(config)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pion_rl.optim.routing",
                                     description="Print how Pion / Muon route a model's parameters.")
    parser.add_argument("model", help="a Hugging Face id in the local cache, a local model directory, or a config.json")
    parser.add_argument("--optimizer", default="pion", choices=("pion", "muon"))
    parser.add_argument("--router", default="adamw", choices=ROUTER_CHOICES)
    parser.add_argument("--tensors", action="store_true", help="also list every tensor with its route and reason")
    args = parser.parse_args(argv)
    try:
        model = _load_model(args.model)
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")
    routes = route_parameters(model, router=args.router)
    print(f"{type(model).__name__} ({args.model}), {args.optimizer}:")
    print(routing_table(routes, args.optimizer))
    if args.tensors:
        for r in routes:
            target = args.optimizer if r.matrix else "adamw"
            print(f"{r.name:<60} {str(list(r.shape)):<20} {target:<6} {r.reason}")


if __name__ == "__main__":
    main()
