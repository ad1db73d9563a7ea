"""State migrations: idempotent, concurrent-safe, and loud about edited history."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from ingest.errors import ConfigError, StackError
from ingest.state import migrate as migrate_mod
from ingest.state.migrate import Migration, load_migrations, migrate

EXPECTED_TABLES = {
    "schema_migrations",
    "idempotency_keys",
    "watermarks",
    "dead_letters",
    "webhook_events",
    "outbox",
    "s3_objects",
    "s3_drops",
    "load_log",
    "schema_versions",
}


@pytest.fixture
def schema(database_url: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def _tables(database_url: str, schema: str) -> set[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    return {r[0] for r in rows}


def test_migrate_creates_every_state_table_once(database_url: str, schema: str) -> None:
    first = migrate(database_url, schema=schema)
    assert [m.version for m in first] == [m.version for m in load_migrations()]
    assert _tables(database_url, schema) == EXPECTED_TABLES
    assert migrate(database_url, schema=schema) == []


def test_concurrent_migrations_apply_each_file_once(database_url: str, schema: str) -> None:
    results: list[list[Migration]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(migrate(database_url, schema=schema))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(len(r) for r in results) == [0, 0, 0, len(load_migrations())]


def test_edited_migration_is_refused(
    database_url: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate(database_url, schema=schema)
    original = load_migrations()
    edited = [Migration(m.version, m.name, m.sql + "\n-- edited") for m in original]
    monkeypatch.setattr(migrate_mod, "load_migrations", lambda: edited)
    with pytest.raises(StackError, match="changed after it was applied"):
        migrate(database_url, schema=schema)


def test_state_constraints_enforce_invariants(database_url: str, schema: str) -> None:
    migrate(database_url, schema=schema)
    with psycopg.connect(database_url) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        conn.execute(
            "INSERT INTO webhook_events (source, event_id, payload) VALUES ('s', 'e1', '{}')"
        )
        # Invariant 2: one row per (source, event id).
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO webhook_events (source, event_id, payload) VALUES ('s', 'e1', '{}')"
            )
        conn.rollback()
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        conn.execute(
            "INSERT INTO s3_objects (source, bucket, key, version, etag, size) VALUES ('s','b','k','v1','e',1)"
        )
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO s3_objects (source, bucket, key, version, etag, size) VALUES ('s','b','k','v1','e',1)"
            )
        conn.rollback()
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO s3_objects (source, bucket, key, version, etag, size, state) "
                "VALUES ('s','b','k','v2','e',1,'eaten')"
            )


@pytest.mark.parametrize("bad", ["Ingest", "1abc", "a-b", "a;drop table x", ""])
def test_schema_names_are_checked(database_url: str, bad: str) -> None:
    with pytest.raises(ConfigError):
        migrate(database_url, schema=bad)
