"""A real mock-API server for these tests: ``python -m ingest.mockapi`` on a free port.

The server is this module's own (not the session stack's), because tests here reconfigure it:
every test starts from ``PUT /_admin/config`` with its own config, which also zeroes the counters.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from ingest.netutil import free_port, wait_for_port

HOST = "127.0.0.1"

Configure = Callable[..., dict[str, Any]]


@contextlib.contextmanager
def running_server(*args: str) -> Iterator[str]:
    """``python -m ingest.mockapi ARGS`` on a free port; yields its base URL, then stops it."""
    port = free_port(HOST)
    argv = [sys.executable, "-m", "ingest.mockapi", "--host", HOST, "--port", str(port), *args]
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            try:
                wait_for_port(HOST, port, timeout=30)
            except TimeoutError:
                stderr.seek(0)
                pytest.fail(f"mock API did not start: {stderr.read().decode(errors='replace')}")
            yield f"http://{HOST}:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def mockapi_url() -> Iterator[str]:
    """Base URL of a mock API subprocess, stopped at the end of the session."""
    with running_server() as url:
        yield url


@pytest.fixture
def client(mockapi_url: str) -> Iterator[httpx.Client]:
    """A client of the mock API, which has just been reset to the default config."""
    with httpx.Client(base_url=mockapi_url, timeout=10.0) as c:
        c.put("/_admin/config", json={}).raise_for_status()
        yield c


@pytest.fixture
def configure(client: httpx.Client) -> Configure:
    """``configure(records=…, faults={…})``: start a new run with that config."""

    def put(**config: Any) -> dict[str, Any]:
        response = client.put("/_admin/config", json=config)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    return put
