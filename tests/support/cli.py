"""The `ingest` command line as a separate process, the way a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping


def ingest(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``ingest ARGS…`` (as ``python -m ingest``) and capture its output; never raises on exit codes."""
    return subprocess.run(
        [sys.executable, "-m", "ingest", *args],
        env=dict(os.environ if env is None else env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
