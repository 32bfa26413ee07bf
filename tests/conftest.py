"""Session-wide test set-up: nothing the suite runs leaves files in the shared temp dir."""

import pytest

from suite_tempdir import private_tempdir


@pytest.fixture(scope="session", autouse=True)
def _private_tempdir(tmp_path_factory):
    tmp_path_factory.getbasetemp()  # pytest's own tmp_path folders stay where pytest keeps and rotates them
    with private_tempdir() as folder:
        yield folder
