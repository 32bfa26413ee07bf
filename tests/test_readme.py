"""The documentation's commands, run as written, and its links and figures.

Every fenced block that follows a ``<!-- README test: run -->`` line in any of the repository's markdown pages
(README.md, docs/*.md, verl/README.md, ...) is run: bash blocks command by command in one scratch copy of the
checkout (links to the repository's files, so ``outputs/`` lands in the scratch folder), README.md first and
then the other pages in path order, as a reader who starts at the README would; ``.venv/bin/python`` (and
``python``, ``python3`` on PATH) stand for this interpreter. Python blocks are executed as pasted, in a fresh
namespace with nothing put in it. Demo commands get tiny sizes appended (later key=value words win), so a block
runs in seconds. Mark a new block in any page and it is run here too.

The other checks are about what a page points to and what it states as a measurement, never its wording: every
relative link resolves to a file (and heading) of the repository, every docs/ page is reachable from the
README, and a time figure says on what machine it was measured and how much it spread.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- README test: run -->"
#: Appended to `python -m pion_rl.demo ...` commands: a microscopic model and two GRPO steps, no wandb.
TINY_DEMO = [
    "steps=2", "hidden_size=16", "intermediate_size=32", "num_layers=1", "num_heads=2", "num_kv_heads=1",
    "head_dim=8", "warm_start_steps=2", "warm_start_batch=4", "prompts_per_step=2", "group_size=4",
    "max_new_tokens=8", "eval_every=1", "eval_problems=4", "eval_samples=2", "threads=1", "wandb=disabled",
]
#: Not linked into the scratch checkout: the environment (replaced by the wrapper) and run outputs.
NOT_LINKED = {".git", ".venv", "outputs", "wandb"}
#: Never searched for markdown pages: environments, run outputs, caches.
NOT_PAGES = {".git", ".venv", "outputs", "wandb", "__pycache__", "node_modules"}


def markdown_pages() -> list[Path]:
    """The repository's markdown pages, relative to it: README.md first, then the rest in path order."""
    pages = []
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in NOT_PAGES and not d.endswith(".egg-info")]
        pages += [(Path(folder) / name).relative_to(REPO) for name in files if name.endswith(".md")]
    return sorted(pages, key=lambda page: (page != Path("README.md"), str(page)))


def docs_pages() -> list[Path]:
    """What a user reads: the README and the pages of docs/ (benchmarks/README.md and ALGORITHM.md are references
    with their own tests)."""
    return [Path("README.md"), *sorted(p.relative_to(REPO) for p in (REPO / "docs").glob("*.md"))]


def without_fences(text: str) -> str:
    """The page with its fenced code blocks blanked out (their lines kept, empty)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
            out.append("")
        else:
            out.append("" if fenced else line)
    return "\n".join(out)


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


def all_marked_blocks() -> list[tuple[Path, str, str]]:
    """``(page, language, body)`` of every marked block, in the order the pages are run."""
    return [(page, language, body) for page in markdown_pages()
            for language, body in marked_blocks((REPO / page).read_text())]


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
    # Not offline: the dry runs name Hub models, which a dry run only needs cached while offline.
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_PATH", "DRY_RUN", "PYTHON", "DATA_DIR",
                                                            "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(PATH=f"{cwd / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(REPO),
               WANDB_MODE="disabled")
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def output_paths(text: str) -> set[str]:
    """Concrete files under outputs/ that a page names in backticks (no placeholders or globs)."""
    return {p for p in re.findall(r"`(outputs/[^`\s]+)`", text) if not set(p) & set("<>*{}")}


def test_the_marker_is_on_the_commands_that_must_hold():
    # The dry-run, demo, compare, evaluation and optimizer examples are the ones under test.
    marked = "\n".join(body for _, _, body in all_marked_blocks())
    for needle in ("DRY_RUN=1 bash examples/grpo_trainer/", "reward_kwargs.mode=math_verify", "-m pion_rl.demo",
                   "-m pion_rl.compare", "-m pion_rl.evaluate", "Pion(model"):
        assert needle in marked, needle


def test_marked_commands_run_as_written(tmp_path):
    root = scratch_checkout(tmp_path)
    for page, language, body in all_marked_blocks():
        if language != "bash":
            continue
        for command in shell_commands(body):
            run = run_shell(with_tiny_demo(command), root)
            assert run.returncode == 0, f"{page}: `{command}` failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    # Every output file a page points the reader to was written by the pages' commands.
    for page in markdown_pages():
        missing = sorted(p for p in output_paths((REPO / page).read_text()) if not (root / p).exists())
        assert not missing, f"{page} names outputs its commands did not write: {missing}"


# ------------------------------------------------------------------ links


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to hyphens, repeats
    numbered."""
    anchors: set[str] = set()
    for title in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", without_fences(text), re.M):
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def relative_links(text: str) -> list[str]:
    """Targets of the page's markdown links and images that point into the repository (no URL scheme)."""
    prose = re.sub(r"`[^`\n]*`", "", without_fences(text))  # code spans hold brackets that are not links
    targets = re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", prose)
    return [t for t in targets if not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", t)]


def test_heading_anchors_follow_githubs_rules():
    # Known values: GitHub's anchors for headings this repository has had.
    text = ("# A\n## The RL recipe (`configs/`, `examples/grpo_trainer/`)\n## The demo's wall time\n"
            "```\n# not a heading\n```\n## Against the official release\n## Against the official release\n")
    assert heading_anchors(text) == {"a", "the-rl-recipe-configs-examplesgrpo_trainer", "the-demos-wall-time",
                                     "against-the-official-release", "against-the-official-release-1"}
    assert relative_links("[x](a.md#b) `[y](c.md)` ![i](d.png) [w](https://e.org/f.md)\n```\n[z](g.md)\n```") == [
        "a.md#b", "d.png"]


@pytest.mark.parametrize("page", markdown_pages(), ids=str)
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links((REPO / page).read_text()):
        path, _, anchor = target.partition("#")
        file = (REPO / page).parent / path if path else REPO / page
        if not file.resolve().is_relative_to(REPO) or not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (file.suffix != ".md" or anchor not in heading_anchors(file.read_text())):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(REPO)}")
    assert not broken, f"{page}: {broken}"


def test_every_docs_page_is_reachable_from_the_readme():
    linked = {(REPO / target.partition("#")[0]).resolve()
              for target in relative_links((REPO / "README.md").read_text())}
    unreachable = [str(page) for page in docs_pages()[1:] if (REPO / page).resolve() not in linked]
    assert not unreachable, f"README.md links no path to {unreachable}"


# ------------------------------------------------------------------ figures

#: A duration: a number and a unit of time.
DURATION = re.compile(r"\b\d+(?:\.\d+)?\s?(?:ms|s|min|minutes?|seconds?|hours?)\b")
#: The machine a figure came from: a core count or GPUs.
MACHINE = re.compile(r"\b\d+-core\b|\b\d+ cores\b|\b\d+ (?:[A-Z]\d+ )?GPUs?\b|\bH[12]00\b")
#: How much it spread: a range, a ± or the load it was measured under.
SPREAD = re.compile(r"\d\s?(?:s|min|minutes)?\s?(?:to|-)\s?\d|\bfrom\b[^.]*\bto \d|±|load average")


def paragraphs(text: str) -> list[str]:
    """A page's prose, split into paragraphs and list items, code blocks left out."""
    blocks = re.split(r"\n\s*\n|\n(?=\s*[-*] )", without_fences(text))
    return [" ".join(block.split()) for block in blocks if block.strip()]


def test_time_figures_name_their_machine_and_spread():
    # A measured time means little without where and how it varied; benchmarks/README.md states its machine
    # once at the top and has its own test below.
    bare = [f"{page}: {paragraph[:120]}..." for page in docs_pages()
            for paragraph in paragraphs((REPO / page).read_text())
            if DURATION.search(paragraph) and not (MACHINE.search(paragraph) and SPREAD.search(paragraph))]
    assert not bare, bare


def test_the_figure_checks_recognise_a_bare_time():
    assert DURATION.search("the warm start takes about 4 minutes") and not MACHINE.search("about 4 minutes")
    assert MACHINE.search("on 2 cores") and SPREAD.search("took 166 to 260 s") and not SPREAD.search("took 39 s")
    assert not DURATION.search("16 prompts x 8 samples, 250 steps, 4 bytes per parameter")


def test_demo_pages_promise_no_figures_that_vary_by_machine():
    # Float results differ across CPUs: the pages give what holds everywhere, not one machine's accuracies (the
    # demo's own summary.md has the user's).
    for page in ("README.md", "docs/demo.md"):
        text = (REPO / page).read_text()
        assert not re.findall(r"(?<!top-p )\b0\.\d{2,}\b", text), page  # an accuracy such as 0.188


def test_benchmarks_readme_is_a_users_document():
    # What each benchmark measures and how to run it, with figures; not a log of who measured what when.
    text = (REPO / "benchmarks" / "README.md").read_text()
    for phrase in ("this session", "the issue", "next session", "this round", "target"):
        assert phrase not in text.lower(), phrase
    for script in sorted((REPO / "benchmarks").glob("*.py")):
        assert f"`{script.name}`" in text and f"benchmarks/{script.name}" in text, script.name
    assert "not yet measured" in text.lower()


def markdown_tables(text: str) -> list[list[str]]:
    """Every markdown table of ``text``, as its rows with the indentation stripped."""
    tables, rows = [], []
    for line in [*text.splitlines(), ""]:
        if line.strip().startswith("|"):
            rows.append(line.strip())
        elif rows:
            tables.append(rows)
            rows = []
    return tables


def test_the_state_tables_are_what_the_benchmark_prints_now():
    # benchmarks/sharded_state.py computes them from shapes (no timing, no hub), so its output is the same on any
    # machine and a page that shows another table is out of date: the table at scale (docs/multi-node.md), its
    # short form (README.md), and the detail at world size 8 (benchmarks/README.md).
    run = subprocess.run([sys.executable, "benchmarks/sharded_state.py"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    at_scale, short, *detail = markdown_tables(run.stdout)
    for page, tables in (("docs/multi-node.md", [at_scale]), ("README.md", [short]),
                         ("benchmarks/README.md", detail)):
        shown = markdown_tables((REPO / page).read_text())
        for table in tables:
            assert table in shown, f"{page} does not show this table of benchmarks/sharded_state.py:\n" + "\n".join(
                table)


# ------------------------------------------------------------------ install


def test_the_gpu_requirements_file_is_the_gpu_extra():
    # verl/README.md installs GPU nodes from either; they must be one set of pins.
    def pins(lines):
        return {Requirement(line).name.lower(): str(Requirement(line)) for line in lines}

    requirements = (REPO / "verl" / "requirements-gpu.txt").read_text().splitlines()
    listed = [line.split("#")[0].strip() for line in requirements]
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    assert pins(line for line in listed if line) == pins(extra)


# ------------------------------------------------------------------ python examples


def _python_blocks() -> list[tuple[Path, str]]:
    return [(page, body) for page, language, body in all_marked_blocks() if language == "python"]


def test_python_examples_import_only_what_they_use():
    for page, body in _python_blocks():
        tree = ast.parse(body)
        imported = {(alias.asname or alias.name).split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
        used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        assert imported <= used, f"{page}: imported but unused: {sorted(imported - used)}"


def test_python_examples_run_as_pasted_and_update_q_k_v_per_head():
    blocks = _python_blocks()
    assert blocks
    for page, body in blocks:
        scope = {"__name__": "__main__"}  # nothing else: a NameError here is one a user would hit
        exec(compile(body, str(page), "exec"), scope)  # noqa: S102 - the page's own example
        model = scope["model"]
        head_size = model.config.head_dim  # declared, and not hidden / heads: the optimizer must read this one
        assert head_size != model.config.hidden_size // model.config.num_attention_heads
        optimizers = [v for v in scope.values() if isinstance(v, torch.optim.Optimizer)]
        assert optimizers, page
        for optimizer in optimizers:
            row_blocks = {g.get("row_block") for g in optimizer.param_groups
                          if any(n.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight"))
                                 for n in g.get("param_names", []))}
            assert row_blocks == {head_size}, (page, row_blocks)
            assert all(int(s["step"]) == 1 for s in optimizer.state.values())  # the example's step ran on everything
