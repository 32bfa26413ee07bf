"""The recipe's dry run on a bad override_optimizer_config key: the message lists what can be set there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
#: Constructor arguments that are not override_optimizer_config's to set: objects the engine passes, and the
#: optim config's own keys that verl's build_optimizer passes (betas to AdamW only).
NOT_SETTABLE = {"params", "process_group", "lr", "weight_decay"}


def _dry_run_error(capsys, config: str, *overrides: str) -> str:
    from pion_rl.verl_plugin import compose

    code = compose.main(["--config-dir", str(REPO / "configs"), "--config-name", config, *overrides])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    (line,) = [line for line in err.splitlines() if line.startswith("pion_rl.verl_plugin.compose:")]
    return line


@pytest.mark.parametrize("optimizer", ["pion", "muon", "adamw"])
def test_an_unknown_key_lists_only_what_can_be_set_there(capsys, optimizer):
    """As a user saw it: the list named process_group (an object) and lr (set as optim.lr)."""
    line = _dry_run_error(capsys, "qwen3_1.7b_deepmath", f"optimizer={optimizer}",
                          "+actor_rollout_ref.actor.optim.override_optimizer_config.momentm=0.9")
    listed = set(re.search(r"it takes ([\w, ]+)$", line)[1].split(", "))
    assert not listed & NOT_SETTABLE
    assert ("betas" in listed) == (optimizer == "pion")  # AdamW's betas come from optim.betas; Muon has none
    recipe = yaml.safe_load((REPO / "configs" / "optimizer" / f"{optimizer}.yaml").read_text())
    assert set(recipe.get("override_optimizer_config") or {}) - {"telemetry"} <= listed  # what the recipe sets


def test_lr_in_the_overrides_points_at_its_own_key(capsys):
    line = _dry_run_error(capsys, "qwen3_1.7b_deepmath", "+actor_rollout_ref.actor.optim.override_optimizer_config.lr=1")
    assert "['lr'] that Pion does not take there" in line
    assert line.endswith("; set lr as actor_rollout_ref.actor.optim.lr")
