"""Installing pion-rl: the build backend reads pyproject.toml without deprecation banners."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

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
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
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
