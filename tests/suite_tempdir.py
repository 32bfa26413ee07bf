"""A private temporary directory for everything a test run writes to "the temp dir", removed afterwards.

verl and its dependencies write there on their own: the checkpoint manager's `local_mkdir_safe` leaves a
`ckpt_<hash>.lock` per checkpoint folder in `tempfile.gettempdir()`. Pointing TMPDIR (read by `tempfile` in
this process and every child it starts, spawned ranks and subprocesses alike) at a fresh folder keeps them
out of the shared /tmp.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def private_tempdir():
    """Within the block, TMPDIR and `tempfile.gettempdir()` are a new folder (yielded); it is deleted after."""
    # A short name: Ray puts its unix sockets under the temp dir, and their paths must stay under 108 bytes.
    folder = Path(tempfile.mkdtemp(prefix="pionrl-"))
    saved_env, saved_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = str(folder), str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = saved_tempdir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        shutil.rmtree(folder, ignore_errors=True)
