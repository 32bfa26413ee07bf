"""pion_rl/optim/ALGORITHM.md: the repository's own description of Pion, the recipe and the paper's results.

It must exist, be what the READMEs and code cite, name every option value the code accepts, and state the
defaults and recipe settings the code and configs actually use.
"""

import inspect
import os
import re
from pathlib import Path

import pytest

from pion_rl.optim import Muon, Pion
from pion_rl.optim.adamw_math import EPS_FORMS
from pion_rl.optim.exp_maps import EXP_MAPS
from pion_rl.optim.newton_schulz import NS_COEFFICIENTS, NS_SCHEDULES
from pion_rl.optim.pion_math import SCALINGS, SIDE_ALIASES, UPDATE_SIDES, VARIANTS
from pion_rl.optim.precision import PRECISIONS

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "pion_rl" / "optim" / "ALGORITHM.md"
SKIPPED_DIRS = {".git", ".venv", "outputs", "wandb", "__pycache__"}
TEXT_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".sh", ".toml", ".txt", ""}


def _repository_text_files():
    for folder, dirs, files in os.walk(REPO):
        # Never descend into environments, run outputs or build metadata (egg-info copies an older README).
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info")]
        for name in files:
            path = Path(folder) / name
            if path.suffix in TEXT_SUFFIXES:
                yield path


def test_no_repository_file_cites_a_document_outside_the_repository():
    outside = "shared" + "/"  # the lead's notes folder, which users of the repository do not have
    citing = [str(p.relative_to(REPO)) for p in _repository_text_files()
              if p != Path(__file__).resolve() and outside + "pion-spec" in p.read_text(errors="ignore")]
    assert not citing


def test_readmes_and_code_cite_the_algorithm_description():
    assert "](pion_rl/optim/ALGORITHM.md" in (REPO / "README.md").read_text()
    assert "pion_rl/optim/ALGORITHM.md" in inspect.getdoc(Pion)


def test_every_option_value_the_code_accepts_is_described():
    doc = DOC.read_text()
    for value in (*VARIANTS, *UPDATE_SIDES, *SIDE_ALIASES, *EXP_MAPS, *SCALINGS, *NS_SCHEDULES, *EPS_FORMS,
                  *PRECISIONS):
        assert f"`{value}`" in doc, value
    for heading in ("Generators", "Maps", "Which side", "Step size", "Variants", "Row blocks", "Which parameters",
                    "The baselines", "The RL recipe", "What the paper reports", "Against the official release"):
        assert re.search(rf"^## {heading}", doc, re.M), heading


def test_stated_defaults_are_the_code_defaults():
    doc = DOC.read_text()
    pion = inspect.signature(Pion).parameters
    assert pion["variant"].default == "lie_lie" and "**`lie_lie`** (default" in doc
    assert pion["exp_map"].default == "taylor" and "`taylor` (default, `degree=2`)" in doc
    assert pion["degree"].default == 2
    assert pion["rms_scale"].default == 0.2 and "rms_scale = 0.2 by default" in doc
    assert pion["weight_decay"].default == 0.0 and pion["adamw_weight_decay"].default == 0.01
    assert "`adamw_weight_decay` 0.01" in doc
    assert NS_COEFFICIENTS == (3.4445, -4.7750, 2.0315) and "(3.4445, -4.7750, 2.0315)" in doc
    assert pion["msign_coefficients"].default == "quintic" and "default the official release's schedule `quintic`" in doc
    for a, b, c in NS_SCHEDULES["quintic"]:
        assert f"({a:.4f}, {b:.4f}, {c:.4f})" in doc
    for optimizer in (Pion, Muon):
        assert inspect.signature(optimizer).parameters["adamw_eps_form"].default == "after_bias_correction"
    assert "`after_bias_correction` (the default" in doc
    muon = inspect.signature(Muon).parameters
    assert (muon["momentum"].default, muon["ns_steps"].default) == (0.95, 5)


def _table_rows(doc: str, first_header: str) -> dict[str, list[str]]:
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header}"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture(scope="module")
def recipes():
    from omegaconf import OmegaConf

    from pion_rl.verl_plugin.compose import compose_config

    composed = {name: OmegaConf.to_container(compose_config(REPO / "configs", name, []), resolve=True)
                for name in ("qwen3_1.7b_deepmath", "r1_distill_qwen_1.5b_deepmath")}
    composed["muon"] = OmegaConf.to_container(
        compose_config(REPO / "configs", "qwen3_1.7b_deepmath", ["optimizer=muon"]), resolve=True)
    return composed


def test_recipe_tables_match_the_configs(recipes):
    doc = DOC.read_text()
    per_model = _table_rows(doc, "| Qwen3-1.7B")
    for column, name in enumerate(("qwen3_1.7b_deepmath", "r1_distill_qwen_1.5b_deepmath")):
        data = recipes[name]["data"]
        assert per_model["`train_batch_size`"][column] == str(data["train_batch_size"])
        assert per_model["`max_response_length`"][column] == str(data["max_response_length"])
    distilled = recipes["r1_distill_qwen_1.5b_deepmath"]["data"]
    assert f"{distilled['train_max_samples']:,} drawn with seed {distilled['seed']}" == per_model["training problems"][1]
    actor = recipes["qwen3_1.7b_deepmath"]["actor_rollout_ref"]["actor"]
    shared = _table_rows(doc, "setting")
    assert f"{actor['optim']['lr']:.0e}".replace("e-0", "e-") in shared["learning rate"][0]
    assert f"`kl_loss_coef` {actor['kl_loss_coef']}" in shared["KL"][0]
    assert f"`n` = {recipes['qwen3_1.7b_deepmath']['actor_rollout_ref']['rollout']['n']}" in shared["advantage"][0]
    pion = recipes["qwen3_1.7b_deepmath"]["actor_rollout_ref"]["actor"]["optim"]["override_optimizer_config"]
    assert f"`{pion['variant']}`, `{pion['update_side']}`" in shared["Pion"][0]
    assert f"`precision` `{pion['precision']}`" in shared["Pion"][0]
    muon = recipes["muon"]["actor_rollout_ref"]["actor"]["optim"]["override_optimizer_config"]
    assert f"`adamw_eps_form` `{muon['adamw_eps_form']}`" in shared["Muon"][0]


def test_paper_results_table_averages_its_rows():
    rows = _table_rows(DOC.read_text(), "model / optimizer")
    assert len(rows) == 8
    for name, cells in rows.items():
        scores = [float(c) for c in cells]
        assert abs(sum(scores[:5]) / 5 - scores[5]) < 0.011, name


@pytest.mark.parametrize("page", [DOC, REPO / "README.md"], ids=lambda page: page.name)
def test_paper_results_table_is_the_evaluation_tables_data(page):
    # The description, the README and `python -m pion_rl.evaluate`'s table.md show the paper's numbers from
    # several places; they must be the same numbers, cell for cell.
    from pion_rl.evaluate import paper

    documented = [tuple(cells) for cells in _table_rows(page.read_text(), "model / optimizer").values()]
    in_code = [row for base in paper.BASE_MODELS for row in base.rows.values()]
    assert documented == in_code
