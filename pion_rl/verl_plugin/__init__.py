"""pion-rl on verl: everything verl-specific lives in this subpackage.

- :mod:`.engine`: importing it registers verl's FSDP engine variant that builds ``pion_rl.optim`` optimizers
  from ``named_parameters()`` (load it with ``actor_rollout_ref.model.external_lib=pion_rl.verl_plugin.engine``).
- :mod:`.optimizer_config`: the rules on ``actor_rollout_ref.actor.optim`` (names, FSDP2, head_dim).
- :mod:`.compose`: prints a recipe's fully composed Hydra config (the recipes' ``DRY_RUN=1``).
- :mod:`.worker_build`: builds what the workers build from that config (optimizer, reward options) on stand-ins.
- :mod:`.cpu`: verl's own trainer on a machine with no GPU (a ``cpu`` platform, an ``hf`` rollout, two checked
  patches), loaded with ``VERL_USE_EXTERNAL_MODULES=pion_rl.verl_plugin.cpu`` and ``VERL_PLATFORM=cpu``.

This package does not import verl itself, so the optimizer package stays usable without it.
"""
