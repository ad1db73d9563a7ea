"""`ingest.sources.rest`: a REST source lands exactly once, resumes from its watermark, dead-letters."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from ingest.mockapi.fixtures import rest_records
from ingest.sources.rest import RunResult, run_rest_source
from ingest.sources.spec import RestSourceSpec
from ingest.state.migrate import migrate


@pytest.fixture
def schemas(database_url: str) -> Iterator[tuple[str, str]]:
    state, landing = f"t_{uuid.uuid4().hex[:10]}", f"t_{uuid.uuid4().hex[:10]}_l"
    migrate(database_url, schema=state)
    yield state, landing
    with psycopg.connect(database_url, autocommit=True) as conn:
        for schema in (state, landing):
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def mock(mock_api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mock_api_url) as admin:
        yield admin
        admin.put("/_admin/config", json={}).raise_for_status()


def _spec(client_id: str, **overrides: Any) -> RestSourceSpec:
    raw: dict[str, Any] = {
        "name": "customers",
        "kind": "rest",
        "connection": {
            "base_url_env": "INGEST_MOCK_API_URL",
            "path": "/rest/cursor/customers",
            "params": {"limit": 200},
            "headers": {"X-Client-Id": client_id},
            "timeout_seconds": 0.5,
        },
        "pagination": {"type": "cursor", "cursor_path": "next_cursor", "cursor_param": "cursor"},
        "data_selector": "data",
        "incremental": {"cursor_field": "updated_at", "param": "updated_since", "lookback": "10m"},
        "primary_key": ["id"],
        "rate_limit": {"rate": 500, "capacity": 50, "key": f"test-{client_id}"},
        "retry": {
            "initial_wait": 0.01,
            "max_wait": 0.05,
            "retry_after_cap": 0.05,
            "max_attempts": 10,
        },
    }
    raw.update(overrides)
    return RestSourceSpec.model_validate(raw)


def _run(
    spec: RestSourceSpec, schemas: tuple[str, str], database_url: str, redis_url: str
) -> RunResult:
    state, landing = schemas
    return run_rest_source(
        spec,
        database_url=database_url,
        state_schema=state,
        landing_schema=landing,
        redis_url=redis_url,
    )


def _landed(database_url: str, landing: str) -> list[tuple[int, str]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT id, to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM {} ORDER BY id"
            ).format(sql.Identifier(landing, "customers"))
        ).fetchall()
    return [(int(r[0]), str(r[1])) for r in rows]


def test_faulty_api_lands_every_record_once_and_watermark_matches(
    schemas: tuple[str, str], database_url: str, redis_url: str, mock: httpx.Client
) -> None:
    # A fixed client id: the mock draws faults from (seed, client, request), so this run always
    # meets the same faults (a random id left ~2% of runs with none to retry).
    client_id = "runner-faulty"
    mock.put(
        "/_admin/config",
        json={"records": 2000, "seed": 3, "faults": {"rate": 0.3, "slow_seconds": 1.0}},
    )
    result = _run(_spec(client_id), schemas, database_url, redis_url)
    assert result.status == "succeeded", result.error
    expected = rest_records(2000, seed=3)
    landed = _landed(database_url, schemas[1])
    assert [i for i, _ in landed] == [r["id"] for r in expected]
    assert landed == [(r["id"], r["updated_at"]) for r in expected]
    assert result.watermark == max(r["updated_at"] for r in expected)
    stats = mock.get("/_admin/stats").json()["clients"][client_id]
    assert sum(stats["by_fault"].values()) > 0 and result.retries > 0

    # The next run starts from the watermark minus the lookback: it re-reads a few records and lands none.
    again = _run(_spec(client_id), schemas, database_url, redis_url)
    assert (again.status, again.inserted, again.updated) == ("succeeded", 0, 0)
    assert 0 < again.records < 50
    log = mock.get("/_admin/requests", params={"client": client_id}).json()["requests"]
    assert "updated_since=" in log[-1]["path"]


def test_new_records_after_the_watermark_are_picked_up(
    schemas: tuple[str, str], database_url: str, redis_url: str, mock: httpx.Client
) -> None:
    client_id = f"runner-{uuid.uuid4().hex[:8]}"
    mock.put("/_admin/config", json={"records": 500})
    first = _run(_spec(client_id), schemas, database_url, redis_url)
    mock.put("/_admin/config", json={"records": 800})
    second = _run(_spec(client_id), schemas, database_url, redis_url)
    assert (first.inserted, second.inserted) == (500, 300)
    assert second.records < 400  # it did not walk the whole data set again
    assert len(_landed(database_url, schemas[1])) == 800


def test_unordered_source_advances_the_watermark_only_at_the_end(
    schemas: tuple[str, str], database_url: str, redis_url: str, mock: httpx.Client
) -> None:
    client_id = f"runner-{uuid.uuid4().hex[:8]}"
    mock.put("/_admin/config", json={"records": 300})
    spec = _spec(
        client_id,
        incremental={"cursor_field": "updated_at", "param": "updated_since", "ordered": False},
    )
    seen: list[str | None] = []
    state, landing = schemas
    result = run_rest_source(
        spec,
        database_url=database_url,
        state_schema=state,
        landing_schema=landing,
        redis_url=redis_url,
        on_page=lambda page, partial: seen.append(partial.watermark),
    )
    assert seen and all(mark is None for mark in seen)
    assert result.watermark == rest_records(300)[-1]["updated_at"]


def test_terminal_error_is_dead_lettered_and_the_run_fails(
    schemas: tuple[str, str],
    database_url: str,
    redis_url: str,
    mock: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client_id = f"runner-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("RUNNER_TEST_TOKEN", "tok-secret-123")
    spec = _spec(
        client_id,
        connection={"base_url_env": "INGEST_MOCK_API_URL", "path": "/rest/customers/999999"},
        pagination="single_page",
        data_selector=None,
        incremental=None,
        auth={"type": "bearer", "token_env": "RUNNER_TEST_TOKEN"},
    )
    result = _run(spec, schemas, database_url, redis_url)
    assert result.status == "failed" and result.dead_letters == 1
    assert "ClientError" in (result.error or "")
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            sql.SQL("SELECT source, kind, error_class, context FROM {}.dead_letters").format(
                sql.Identifier(schemas[0])
            )
        ).fetchone()
        log = conn.execute(
            sql.SQL("SELECT status FROM {}.load_log").format(sql.Identifier(schemas[0]))
        ).fetchone()
    assert row is not None and row[:3] == ("customers", "request", "ClientError")
    assert "/rest/customers/999999" in row[3]["request"]["url"]
    assert "tok-secret-123" not in str(row[3])
    assert log == ("failed",)
