"""Module 01 acceptance: a REST source lands exactly once through faults, crashes and dead letters.

Everything here is real: the mock API over a socket (faults injected server-side), PostgreSQL,
Redis, and `ingest run` / `ingest dlq` as separate processes killed with SIGKILL.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from psycopg import sql

from ingest.mockapi.fixtures import rest_records
from ingest.sources.rest import run_rest_source
from ingest.sources.spec import RestSourceSpec
from ingest.state.migrate import migrate
from tests.support.cli import ingest

RETRY_AFTER_CAP = 0.3
TIMEOUT = 0.5


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> Iterator[dict[str, str]]:
    run = uuid.uuid4().hex[:10]
    environ = dict(os.environ)
    environ.update(
        INGEST_DB_SCHEMA=f"t_{run}",
        INGEST_LANDING_SCHEMA=f"t_{run}_landing",
        INGEST_SOURCES_DIR=str(tmp_path / "sources"),
    )
    (tmp_path / "sources").mkdir()
    migrate(database_url, schema=environ["INGEST_DB_SCHEMA"])
    yield environ
    with psycopg.connect(database_url, autocommit=True) as conn:
        for key in ("INGEST_DB_SCHEMA", "INGEST_LANDING_SCHEMA"):
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(environ[key]))
            )


@pytest.fixture
def admin(mock_api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mock_api_url) as client:
        yield client
        client.put("/_admin/config", json={}).raise_for_status()


def _source(client_id: str, *, page: int = 500, rate: float = 1000, **retry: Any) -> dict[str, Any]:
    return {
        "name": "customers",
        "kind": "rest",
        "connection": {
            "base_url_env": "INGEST_MOCK_API_URL",
            "path": "/rest/cursor/customers",
            "params": {"limit": page},
            "headers": {"X-Client-Id": client_id},
            "timeout_seconds": TIMEOUT,
        },
        "pagination": {"type": "cursor"},
        "data_selector": "data",
        "incremental": {"cursor_field": "updated_at", "param": "updated_since", "lookback": "5m"},
        "primary_key": ["id"],
        "rate_limit": {
            "rate": rate,
            "capacity": max(1, int(rate // 4)),
            "key": f"accept-{client_id}",
        },
        "retry": {
            "initial_wait": 0.02,
            "max_wait": 0.2,
            "retry_after_cap": RETRY_AFTER_CAP,
            **retry,
        },
    }


def _write(env: dict[str, str], source: dict[str, Any]) -> None:
    Path(env["INGEST_SOURCES_DIR"], f"{source['name']}.yaml").write_text(yaml.safe_dump(source))


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return ingest(*args, env=env)


def _landed(env: dict[str, str]) -> tuple[list[int], str | None, str | None]:
    """Ids in the landing table, the max cursor of committed rows, and the stored watermark."""
    with psycopg.connect(env["INGEST_DATABASE_URL"]) as conn:
        table = sql.Identifier(env["INGEST_LANDING_SCHEMA"], "customers")
        exists = conn.execute(
            "SELECT to_regclass(%s)", (f"{env['INGEST_LANDING_SCHEMA']}.customers",)
        ).fetchone()
        if not exists or exists[0] is None:
            return [], None, None
        ids = [
            int(r[0]) for r in conn.execute(sql.SQL("SELECT id FROM {} ORDER BY id").format(table))
        ]
        newest = conn.execute(
            sql.SQL(
                "SELECT to_char(max(updated_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM {}"
            ).format(table)
        ).fetchone()
        mark = conn.execute(
            sql.SQL("SELECT value->>'value' FROM {} WHERE source = 'customers'").format(
                sql.Identifier(env["INGEST_DB_SCHEMA"], "watermarks")
            )
        ).fetchone()
    return ids, newest[0] if newest else None, mark[0] if mark else None


def test_20k_records_through_30_percent_faults_land_exactly_once(
    env: dict[str, str], admin: httpx.Client
) -> None:
    # A fixed client id: the mock draws faults from (seed, client, request), so the run is repeatable.
    client_id = "accept-20k"
    admin.put(
        "/_admin/config",
        json={
            "records": 20_000,
            "seed": 11,
            "faults": {"rate": 0.3, "slow_seconds": 1.0, "retry_after_seconds": 1},
        },
    ).raise_for_status()
    spec = RestSourceSpec.model_validate(_source(client_id, page=200))
    result = run_rest_source(
        spec,
        database_url=env["INGEST_DATABASE_URL"],
        state_schema=env["INGEST_DB_SCHEMA"],
        landing_schema=env["INGEST_LANDING_SCHEMA"],
        redis_url=env["INGEST_REDIS_URL"],
    )
    assert result.status == "succeeded", result.error
    expected = rest_records(20_000, seed=11)
    ids, newest, mark = _landed(env)
    assert ids == [r["id"] for r in expected]  # every record, once, nothing else
    assert newest == mark == expected[-1]["updated_at"]

    # From the server's side: every kind of fault happened, and each retry came no sooner than the
    # policy allows: a capped Retry-After for 429/503, the client timeout for a slow answer.
    log = admin.get("/_admin/requests", params={"client": client_id}).json()["requests"]
    stats = admin.get("/_admin/stats").json()["clients"][client_id]
    assert set(stats["by_fault"]) == {
        "429",
        "429-date",
        "500",
        "502",
        "503",
        "slow",
        "drop",
        "truncated",
    }
    by_path: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in log:
        by_path[entry["path"]].append(entry)
    checked = 0
    for attempts in by_path.values():
        for before, after in itertools.pairwise(attempts):
            gap = after["t_monotonic"] - before["t_monotonic"]
            if before["fault"] in {"429", "429-date", "503"}:
                assert gap >= RETRY_AFTER_CAP - 0.01, (before, after)
                checked += 1
            elif before["fault"] == "slow":
                assert gap >= TIMEOUT - 0.01, (before, after)
                checked += 1
    assert checked >= 5
    assert result.retries == len(log) - result.pages


def test_kill_9_halfway_then_rerun_loses_nothing_and_duplicates_nothing(
    env: dict[str, str], admin: httpx.Client
) -> None:
    client_id = f"accept-{uuid.uuid4().hex[:8]}"
    admin.put("/_admin/config", json={"records": 20_000, "seed": 12}).raise_for_status()
    # 200-record pages at 10 pages/s: the run takes ~10 s, so there is a middle to kill it in.
    _write(env, _source(client_id, page=200, rate=10))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingest", "run", "customers"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ids, _, _ = _landed(env)
            if len(ids) >= 4_000:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    ids, newest, mark = _landed(env)
    assert 4_000 <= len(ids) < 20_000, "the kill did not land halfway"
    assert ids == list(range(1, len(ids) + 1))
    assert mark == newest  # the watermark covers exactly the committed rows

    _write(env, _source(client_id, page=200, rate=1000))
    rerun = _cli(env, "run", "customers")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    ids, newest, mark = _landed(env)
    expected = rest_records(20_000, seed=12)
    assert ids == [r["id"] for r in expected]
    assert newest == mark == expected[-1]["updated_at"]
    assert "succeeded" in rerun.stdout


def test_dead_letters_are_listed_and_replayed_through_the_stack(
    env: dict[str, str], admin: httpx.Client
) -> None:
    client_id = f"accept-{uuid.uuid4().hex[:8]}"
    # The API is down (every request 503) and the policy gives up after 3 attempts.
    admin.put(
        "/_admin/config",
        json={
            "records": 100,
            "faults": {"rate": 1.0, "weights": {"503": 1}, "max_consecutive_faults": None},
        },
    ).raise_for_status()
    _write(env, _source(client_id, page=50, max_attempts=3))
    failed = _cli(env, "run", "customers")
    assert failed.returncode == 1
    assert "ServerError" in failed.stderr
    listed = _cli(env, "dlq", "list")
    assert (
        listed.returncode == 0 and "customers" in listed.stdout and "ServerError" in listed.stdout
    )

    replay_down = _cli(env, "dlq", "replay", "--source", "customers")
    assert replay_down.returncode == 1 and "still failing" in replay_down.stdout

    admin.put("/_admin/config", json={"records": 100}).raise_for_status()
    replayed = _cli(env, "dlq", "replay", "--source", "customers")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "resolved" in replayed.stdout
    assert "customers" not in _cli(env, "dlq", "list").stdout.split("dead letters")[1]
    # The replay went through the source's stack: its requests carry the source's client id.
    log = admin.get("/_admin/requests", params={"client": client_id}).json()["requests"]
    assert log and log[-1]["status"] == 200
