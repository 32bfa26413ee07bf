"""verl's own trainer (``python -m verl.trainer.main_ppo``) on a machine with no GPU.

Loaded in every verl process (driver, Ray workers) by ``VERL_USE_EXTERNAL_MODULES=pion_rl.verl_plugin.cpu``,
which ``verl/__init__.py`` imports. Importing it:

- registers the ``cpu`` platform in verl's ``PlatformRegistry`` (:mod:`.platform`), chosen with
  ``VERL_PLATFORM=cpu``;
- registers the ``hf`` rollout (:mod:`.hf_rollout`) in ``RolloutReplicaRegistry`` and in the workers' rollout
  table, chosen with ``actor_rollout_ref.rollout.name=hf``;
- when the CPU platform is selected, applies the two patches of :mod:`.patches`, each after checking the verl
  and torch code it changes (a changed target fails here, in one line naming the patch).

Not imported here: :mod:`.ordered_replay_buffer`, the replay buffer verl loads by name for a bitwise
reproducible run (``trainer.v1.sampler.custom_sampler.*``, docs/cpu-run.md).
"""

from __future__ import annotations

import os

from . import platform  # first: verl modules imported below may read the platform

from verl.workers.rollout import base as _rollout_base  # noqa: E402, I001
from verl.workers.rollout.replica import RolloutReplicaRegistry  # noqa: E402

from .patches import PatchTargetChanged, apply_patches

ROLLOUT_NAME = "hf"
_ADAPTER = f"{__name__}.hf_rollout.HFServerAdapter"


def _load_replica():
    from .hf_rollout import HFReplica

    return HFReplica


def _register_rollout() -> None:
    # verl 0.9.1 has no register function for the worker-side table: it is a module-level dict read by
    # get_rollout_class, so its shape is checked like a patch target.
    table = getattr(_rollout_base, "_ROLLOUT_REGISTRY", None)
    if not isinstance(table, dict) or ("vllm", "async") not in table:
        raise PatchTargetChanged(
            "pion_rl.verl_plugin.cpu patch 'rollout-table' cannot apply: verl.workers.rollout.base has no "
            "_ROLLOUT_REGISTRY dict keyed (name, mode); pion-rl's CPU path is written for verl 0.9.1 "
            "(`make setup` installs it with torch 2.13.0)")
    table[(ROLLOUT_NAME, "async")] = _ADAPTER
    RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_replica)


def cpu_platform_selected() -> bool:
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == platform.NAME


_register_rollout()
if cpu_platform_selected():
    apply_patches()
