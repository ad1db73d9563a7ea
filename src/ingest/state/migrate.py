"""Apply the numbered SQL migrations in ``migrations/`` to one schema, idempotently.

Plain files plus a tracking table: the schema is small and SQL-first, and a migration framework
would add an ORM's worth of dependency for what one advisory lock and a loop do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources

import psycopg
from psycopg import sql

from ingest.errors import StackError
from ingest.state.db import check_identifier

__all__ = ["Migration", "applied_versions", "load_migrations", "migrate"]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str = field(repr=False)

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """The packaged migrations, ordered by their number prefix."""
    found = []
    for entry in resources.files("ingest.state.migrations").iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    return sorted(found, key=lambda m: m.version)


_TRACKING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def applied_versions(conn: psycopg.Connection, schema: str) -> dict[int, str]:
    """Version → checksum of the migrations recorded in ``schema``."""
    exists = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"{check_identifier(schema)}.schema_migrations",)
    ).fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute(
        sql.SQL("SELECT version, checksum FROM {}.schema_migrations").format(sql.Identifier(schema))
    ).fetchall()
    return {int(v): str(c) for v, c in rows}


def migrate(url: str, *, schema: str) -> list[Migration]:
    """Bring ``schema`` up to date; return the migrations applied by this call.

    Concurrent callers serialise on an advisory lock, so two processes starting together apply each
    migration once. A recorded migration whose file changed since is an error, not a silent skip.
    """
    check_identifier(schema)
    applied: list[Migration] = []
    try:
        conn = psycopg.connect(url, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise StackError(f"cannot connect to PostgreSQL: {exc}".strip()) from exc
    with conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"ingest.migrate:{schema}",))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        conn.execute(_TRACKING)
        done = applied_versions(conn, schema)
        for migration in load_migrations():
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise StackError(
                        f"migration {migration.version:04d}_{migration.name} changed after it was "
                        f"applied to schema {schema!r}; add a new migration instead"
                    )
                continue
            conn.execute(migration.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
            applied.append(migration)
    return applied
