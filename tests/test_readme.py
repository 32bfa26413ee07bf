"""The READMEs' commands, run as written.

Every fenced block that follows a ``<!-- README test: run -->`` line is run: bash blocks command by command in
a scratch copy of the checkout (links to the repository's files, so ``outputs/`` lands in the scratch folder),
with ``.venv/bin/python`` (and ``python``, ``python3`` on PATH) standing for this interpreter; python blocks
are executed as pasted, in a fresh namespace with nothing put in it. Demo commands get tiny sizes appended
(later key=value words win), so the block runs in seconds. Mark a new block in either README and it is run
here too.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
READMES = ("README.md", "verl/README.md")
MARKER = "<!-- README test: run -->"
#: Appended to `python -m pion_rl.demo ...` commands: a microscopic model and two GRPO steps, no wandb.
TINY_DEMO = [
    "steps=2", "hidden_size=16", "intermediate_size=32", "num_layers=1", "num_heads=2", "num_kv_heads=1",
    "head_dim=8", "warm_start_steps=2", "warm_start_batch=4", "prompts_per_step=2", "group_size=4",
    "max_new_tokens=8", "eval_every=1", "eval_problems=4", "eval_samples=2", "threads=1", "wandb=disabled",
]
#: Not linked into the scratch checkout: the environment (replaced by the wrapper) and run outputs.
NOT_LINKED = {".git", ".venv", "outputs", "wandb"}


def marked_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block right after a marker line."""
    lines, blocks = text.splitlines(), []
    for i, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        fence = lines[i + 1].strip() if i + 1 < len(lines) else ""
        assert fence.startswith("```"), f"line {i + 1}: {MARKER} must be followed by a fenced block"
        end = next(j for j in range(i + 2, len(lines)) if lines[j].strip() == "```")
        blocks.append((fence[3:].strip(), "\n".join(lines[i + 2:end])))
    return blocks


def shell_commands(body: str) -> list[str]:
    """The commands of a bash block: one per line (backslash continuations joined), comments skipped."""
    commands, pending = [], ""
    for line in body.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        command = (pending + line).strip()
        pending = ""
        if command and not command.startswith("#"):
            commands.append(command)
    return commands


def with_tiny_demo(command: str) -> str:
    words = shlex.split(command, comments=True)
    if words[1:3] != ["-m", "pion_rl.demo"]:
        return command
    return shlex.join(words + TINY_DEMO)


def scratch_checkout(root: Path) -> Path:
    """A folder that looks like a built checkout: links to the repository's files and a .venv whose
    interpreters are this one."""
    for entry in REPO.iterdir():
        if entry.name not in NOT_LINKED:
            (root / entry.name).symlink_to(entry)
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python", "python3"):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
        (bin_dir / name).chmod(0o755)
    return root


def run_shell(command: str, cwd: Path) -> subprocess.CompletedProcess:
    # Not offline: the README's dry runs name Hub models, which a dry run only needs cached while offline.
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_PATH", "DRY_RUN", "PYTHON", "DATA_DIR",
                                                            "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(PATH=f"{cwd / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(REPO),
               WANDB_MODE="disabled")
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def output_paths(text: str) -> set[str]:
    """Concrete files under outputs/ that the README names in backticks (no placeholders or globs)."""
    return {p for p in re.findall(r"`(outputs/[^`\s]+)`", text) if not set(p) & set("<>*{}")}


def test_the_marker_is_on_the_commands_that_must_hold():
    # The READMEs' dry-run, demo, compare and optimizer examples are the ones under test.
    marked = "\n".join(body for name in READMES for _, body in marked_blocks((REPO / name).read_text()))
    for needle in ("DRY_RUN=1 bash examples/grpo_trainer/", "reward_kwargs.mode=math_verify", "-m pion_rl.demo",
                   "-m pion_rl.compare", "-m pion_rl.evaluate", "Pion(model"):
        assert needle in marked, needle


@pytest.mark.parametrize("readme", READMES)
def test_readme_commands_run_as_written(readme, tmp_path):
    text = (REPO / readme).read_text()
    root = scratch_checkout(tmp_path)
    for language, body in marked_blocks(text):
        if language != "bash":
            continue
        for command in shell_commands(body):
            run = run_shell(with_tiny_demo(command), root)
            assert run.returncode == 0, f"{readme}: `{command}` failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    # Every output file the README points the reader to was written by its commands.
    missing = sorted(p for p in output_paths(text) if not (root / p).exists())
    assert not missing, f"{readme} names outputs its commands did not write: {missing}"


def test_demo_section_promises_no_figures_that_vary_by_machine():
    # Float results differ across CPUs: the README gives what holds everywhere, not one machine's accuracies
    # (the demo's own summary.md has the user's); wall times only with the machine and load they came from.
    text = (REPO / "README.md").read_text()
    demo = text[:text.index("## GRPO on DeepMath")]
    assert not re.findall(r"(?<!top-p )\b0\.\d{2,}\b", demo)  # accuracies such as 0.188 (a sampling setting is fine)
    assert not re.findall(r"\d+ min \d+ s", demo)
    assert "1e-7" in demo and "1e-2 to 1e-1" in demo and "seeds=N" in demo


def _python_blocks() -> list[str]:
    return [body for name in READMES for language, body in marked_blocks((REPO / name).read_text())
            if language == "python"]


def test_readme_python_examples_import_only_what_they_use():
    for body in _python_blocks():
        tree = ast.parse(body)
        imported = {(alias.asname or alias.name).split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
        used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        assert imported <= used, f"imported but unused: {sorted(imported - used)}"


def test_readme_python_examples_run_as_pasted_and_update_q_k_v_per_head():
    (readme,) = _python_blocks()
    scope = {"__name__": "__main__"}  # nothing else: a NameError here is one a user would hit
    exec(compile(readme, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    model = scope["model"]
    head_size = model.config.head_dim  # declared, and not hidden / heads: the optimizer must read this one
    assert head_size != model.config.hidden_size // model.config.num_attention_heads
    optimizers = [v for v in scope.values() if isinstance(v, torch.optim.Optimizer)]
    assert optimizers
    for optimizer in optimizers:
        blocks = {g.get("row_block") for g in optimizer.param_groups
                  if any(n.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight"))
                         for n in g.get("param_names", []))}
        assert blocks == {head_size}, blocks
        assert all(int(s["step"]) == 1 for s in optimizer.state.values())  # the example's step ran on everything


def test_benchmarks_readme_is_a_users_document():
    # What each benchmark measures and how to run it, with figures; not a log of who measured what when.
    text = (REPO / "benchmarks" / "README.md").read_text()
    for phrase in ("this session", "the issue", "next session", "this round", "target"):
        assert phrase not in text.lower(), phrase
    for script in sorted((REPO / "benchmarks").glob("*.py")):
        assert f"`{script.name}`" in text and f"benchmarks/{script.name}" in text, script.name
    assert "not yet measured" in text.lower()


def test_time_figures_say_where_they_were_measured_and_their_spread():
    readme = " ".join((REPO / "README.md").read_text().split())  # sentences across line breaks
    bench = (REPO / "benchmarks" / "README.md").read_text()
    demo = readme[:readme.index("## GRPO on DeepMath")]
    assert "a few minutes" not in demo and "from 6 minutes" in demo and "shared with other jobs" in demo
    assert "## The demo's wall time" in bench and "(\"The demo's wall time\")" in demo
    telemetry = readme[readme.index("## Optimizer telemetry"):readme.index("## The optimizers")]
    assert "35 s on 2 cores" not in telemetry and "load average" in telemetry
