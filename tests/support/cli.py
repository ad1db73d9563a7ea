"""The `ingest` command line as a separate process, the way a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping


def ingest(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``ingest ARGS…`` (as ``python -m ingest``) and capture its output; never raises on exit codes.

    Colour forcing is dropped (Jupyter's kernel sets it for every child): tests read plain text.
    """
    environ = {
        k: v
        for k, v in (os.environ if env is None else env).items()
        if k not in {"FORCE_COLOR", "CLICOLOR_FORCE"}
    }
    return subprocess.run(
        [sys.executable, "-m", "ingest", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
