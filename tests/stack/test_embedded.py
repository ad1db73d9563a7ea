"""The embedded path, on purpose: `ingest stack up|status|down` with no service given.

CI gives the machine's PostgreSQL and Redis to the rest of the suite; this test clears those
variables so that all four services are started from wheels, exactly as on a fresh laptop.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from ingest.netutil import free_port
from ingest.stack import SERVICES, probe
from tests.support.cli import ingest

pytestmark = pytest.mark.embedded


def _env(home: Path, ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    env["INGEST_HOME"] = str(home)
    for name, port in ports.items():
        env[f"INGEST_STACK_{name.upper().replace('-', '_')}_PORT"] = str(port)
    env["INGEST_DB_SCHEMA"] = "ingest"
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return ingest(*args, env=env, timeout=180)


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line mentions ``text`` (our home dir or one of our ports)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(") ", 1)[1][:1]
        except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
            continue
        if text in cmdline and state != "Z" and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def test_stack_up_status_down_embedded(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ports = {name: free_port() for name in SERVICES}
    env = _env(home, ports)

    up = _cli(env, "stack", "up")
    assert up.returncode == 0, up.stdout + up.stderr
    state = json.loads((home / "stack.json").read_text())
    records = {s["name"]: s for s in state["services"]}
    assert set(records) == set(SERVICES)
    assert all(r["origin"] == "embedded" for r in records.values())
    try:
        # Four real services answer a real protocol question each.
        for name in SERVICES:
            ok, detail = probe(name, records[name]["url"])  # type: ignore[arg-type]
            assert ok, f"{name}: {detail}"
            assert f":{ports[name]}" in records[name]["url"]
        env_file = (home / "stack.env").read_text()
        assert f"INGEST_DATABASE_URL={records['postgres']['url']}" in env_file

        status = _cli(env, "stack", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count("yes") == len(SERVICES)

        # A second `up` starts nothing: the same processes keep serving.
        again = _cli(env, "stack", "up")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already running" in again.stderr
        pids_before = {n: r["pid"] for n, r in records.items()}
        pids_after = {
            s["name"]: s["pid"] for s in json.loads((home / "stack.json").read_text())["services"]
        }
        assert pids_after == pids_before

        # The migrations ran against the embedded PostgreSQL.
        import psycopg

        with psycopg.connect(records["postgres"]["url"]) as conn:
            row = conn.execute("SELECT count(*) FROM ingest.schema_migrations").fetchone()
        assert row is not None and row[0] >= 1
    finally:
        down = _cli(env, "stack", "down")
    assert down.returncode == 0, down.stdout + down.stderr
    for name in SERVICES:
        assert name in down.stdout
    # Nothing of ours is left running, and `status` now says so with a non-zero exit.
    assert _processes_mentioning(str(home)) == []
    for name, record in records.items():
        assert not _running(record["pid"]), f"{name} (pid {record['pid']}) still running"
        assert not _listening(ports[name])
    after = _cli(env, "stack", "status")
    assert after.returncode == 1


def _running(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().split(") ", 1)[1][:1] != "Z"
    except FileNotFoundError:
        return False


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_taken_port_is_a_clear_error_and_leaves_nothing_running(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ports = {name: free_port() for name in SERVICES}
    env = _env(home, ports)
    with socket.socket() as blocker:
        # Somebody else's server on the Redis port: PostgreSQL starts first, then `up` must stop it.
        blocker.bind(("127.0.0.1", ports["redis"]))
        blocker.listen()
        up = _cli(env, "stack", "up")
    assert up.returncode == 1
    assert f"port {ports['redis']}" in up.stderr and "INGEST_STACK_REDIS_PORT" in up.stderr
    assert _processes_mentioning(str(home)) == []
    assert not _listening(ports["postgres"])


def test_given_service_is_used_not_started(tmp_path: Path, database_url: str) -> None:
    """A URL that answers is used as it is: `up` starts no PostgreSQL of its own."""
    from ingest.stack import Stack, StackConfig

    ports = {name: free_port() for name in SERVICES}
    stack = Stack(StackConfig(home=tmp_path, ports=ports, given={"postgres": database_url}))  # type: ignore[arg-type]
    record = stack._resolve("postgres", None)
    assert record.origin == "given" and record.url == database_url and record.pid is None
    assert not (tmp_path / "postgres").exists()
