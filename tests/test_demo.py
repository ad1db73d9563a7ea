"""`ingest demo`: the README's first command, against the session's services."""

from __future__ import annotations

import os
import subprocess

import httpx
import psycopg
from psycopg import sql

from tests.support.cli import ingest


def _demo() -> subprocess.CompletedProcess[str]:
    return ingest("demo")


def _landed(database_url: str) -> list[tuple[int, str]]:
    with psycopg.connect(database_url) as conn:
        table = sql.Identifier(os.environ["INGEST_LANDING_SCHEMA"], "demo_customers")
        rows = conn.execute(
            sql.SQL("SELECT id, updated_at::text FROM {} ORDER BY id").format(table)
        ).fetchall()
    return [(int(r[0]), str(r[1])) for r in rows]


def test_demo_lands_every_record_once_and_rerun_lands_nothing(
    database_url: str, mock_api_url: str
) -> None:
    # What should land is what the API serves: count it from the API, not from a constant.
    expected: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
        body = httpx.get(f"{mock_api_url}/rest/cursor/customers", params=params).json()
        expected += [r["id"] for r in body["data"]]
        cursor = body["next_cursor"]
        if not cursor:
            break

    first = _demo()
    assert first.returncode == 0, first.stdout + first.stderr
    landed = _landed(database_url)
    assert [i for i, _ in landed] == expected
    assert f"{len(expected)}" in first.stdout

    second = _demo()
    assert second.returncode == 0, second.stdout + second.stderr
    assert _landed(database_url) == landed
    assert "nothing landed twice" in second.stdout

    with psycopg.connect(database_url) as conn:
        log = conn.execute(
            sql.SQL(
                "SELECT status, rows_loaded FROM {}.load_log WHERE source = 'demo_customers' ORDER BY id"
            ).format(sql.Identifier(os.environ["INGEST_DB_SCHEMA"]))
        ).fetchall()
    assert log[-2:] == [("succeeded", len(expected)), ("succeeded", 0)]
