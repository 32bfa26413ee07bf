"""Installing pion-rl: the build backend reads pyproject.toml without deprecation banners, and `make` installs
torch's CPU build."""

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]


def test_metadata_builds_without_deprecation_warnings_and_carries_the_spdx_license(tmp_path):
    # What `pip install -e .` runs first: the setuptools backend turns pyproject.toml into metadata.
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "pion_rl", tmp_path / "pion_rl")
    (tmp_path / "out").mkdir()
    build = subprocess.run(
        [sys.executable, "-W", "default", "-c",
         "import setuptools.build_meta as backend; print(backend.prepare_metadata_for_build_wheel('out'))"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr
    output = build.stdout + build.stderr
    assert "deprecated" not in output.lower(), output
    metadata = (tmp_path / "out" / build.stdout.strip().splitlines()[-1] / "METADATA").read_text()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()


def test_build_requires_a_setuptools_that_reads_spdx_license_strings():
    # setuptools < 77 rejects `license = "<SPDX>"`; pip's isolated build must never pick one.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert isinstance(pyproject["project"]["license"], str)
    (setuptools,) = [Requirement(r) for r in pyproject["build-system"]["requires"] if r.startswith("setuptools")]
    assert not setuptools.specifier.contains(Version("76.1"))
    assert setuptools.specifier.contains(Version("77.0"))


# ------------------------------------------------------------------ `make`'s torch: the CPU build, never CUDA


def fake_wheel(directory: Path, version: str) -> Path:
    """An empty, installable `torch` wheel of `version` (a stand-in: only its name and metadata matter)."""
    import zipfile

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"torch-{version}-py3-none-any.whl"
    info = f"torch-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
        wheel.writestr(f"{info}/WHEEL",
                       "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    return path


def simple_index(root: Path, *versions: str) -> str:
    """A PEP 503 index on disk serving `torch` in `versions`; returns its file:// URL."""
    project = root / "simple" / "torch"
    links = "".join(f'<a href="{fake_wheel(project, v).name}">{fake_wheel(project, v).name}</a>\n' for v in versions)
    (project / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")
    return (root / "simple").as_uri()


def make_torch(tmp_path: Path, torch_index: str, standard_index: str, find_links: Path | None = None):
    """`make torch` as `make` runs it, resolved (pip --dry-run --report) instead of installed, against
    stand-ins for PyPI (`standard_index`) and PyTorch's CPU index; this machine's pip config is ignored."""
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL=standard_index, PIP_NO_CACHE_DIR="1")
    if find_links is not None:
        env["PIP_FIND_LINKS"] = str(find_links)
    started = time.monotonic()
    run = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), "torch", f"PY={sys.executable}", f"TORCH_INDEX={torch_index}",
         f"PIP_ARGS=--dry-run --ignore-installed --report {report}"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    installs = json.loads(report.read_text())["install"] if report.exists() else []
    picked = [item["metadata"]["version"] for item in installs if item["metadata"]["name"] == "torch"]
    return run, picked, time.monotonic() - started


LINUX = platform.system() == "Linux"


@pytest.mark.skipif(not LINUX, reason="the +cpu local version is how Linux CPU wheels are named")
def test_make_installs_the_cpu_build_from_pytorchs_index_not_the_standard_indexs_cuda_build(tmp_path):
    pypi = simple_index(tmp_path / "pypi", "2.13.0")  # the standard index: CUDA build, no suffix
    cpu = simple_index(tmp_path / "cpu", "2.13.0+cpu")
    run, picked, _ = make_torch(tmp_path, cpu, pypi)
    assert run.returncode == 0, run.stdout + run.stderr
    assert picked == ["2.13.0+cpu"]


@pytest.mark.skipif(not LINUX, reason="the +cpu local version is how Linux CPU wheels are named")
def test_an_unreachable_cpu_index_costs_seconds_and_local_wheels_take_over(tmp_path):
    # A host that accepts connections and never answers: what a firewalled index looks like.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        pypi = simple_index(tmp_path / "pypi", "2.13.0")
        local = fake_wheel(tmp_path / "wheels", "2.13.0+cpu").parent
        run, picked, seconds = make_torch(tmp_path, f"http://127.0.0.1:{silent.getsockname()[1]}/simple", pypi, local)
    assert run.returncode == 0, run.stdout + run.stderr
    assert picked == ["2.13.0+cpu"]
    assert seconds < 60  # pip's defaults (15 s timeout, 5 retries) would wait minutes


@pytest.mark.skipif(not LINUX, reason="the +cpu local version is how Linux CPU wheels are named")
def test_without_a_cpu_build_anywhere_make_stops_with_one_line_instead_of_taking_cuda(tmp_path):
    pypi = simple_index(tmp_path / "pypi", "2.13.0")
    run, picked, _ = make_torch(tmp_path, (tmp_path / "nowhere").as_uri(), pypi)
    assert run.returncode != 0 and picked == []
    error = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert error == ["error: no torch==2.13.0+cpu found: make needs file://" + str(tmp_path / "nowhere")
                     + " reachable, TORCH_INDEX=<a mirror of it>, or the wheel in pip's find-links"], run.stderr
