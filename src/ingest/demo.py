"""``ingest demo``: the stack, the state schema and one REST source, end to end.

This is the foundation's demo: it proves the embedded stack, the migrations and a landing table work
together. The module 01 runner (retries, rate limits, watermarks) takes over the pull as it lands.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from psycopg import sql
from psycopg.types.json import Jsonb
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ingest.errors import StackError
from ingest.settings import Settings
from ingest.stack import Stack, StackConfig
from ingest.state.db import check_identifier, connect
from ingest.state.migrate import migrate

__all__ = ["DemoResult", "pull_customers", "run_demo"]

SOURCE = "demo_customers"
_COLUMNS = (
    "id",
    "name",
    "email",
    "status",
    "amount_cents",
    "currency",
    "tags",
    "created_at",
    "updated_at",
)


@dataclass
class DemoResult:
    pages: int
    fetched: int
    inserted: int
    updated: int
    rows_in_table: int
    seconds: float


def _ensure_landing(conn: Any, schema: str) -> None:
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.{} (
                id bigint PRIMARY KEY, name text, email text, status text, amount_cents bigint,
                currency text, tags jsonb, created_at timestamptz, updated_at timestamptz,
                _loaded_at timestamptz NOT NULL DEFAULT now())"""
        ).format(sql.Identifier(schema), sql.Identifier(SOURCE))
    )


def pull_customers(
    *,
    api_url: str,
    database_url: str,
    state_schema: str,
    landing_schema: str,
    page_size: int = 100,
    progress: Progress | None = None,
) -> DemoResult:
    """Walk the mock API's cursor-paginated customers into ``landing_schema.demo_customers``.

    Each page is merged on the primary key in its own transaction; the merge only overwrites a row
    with one at least as new, so re-running (or re-reading a page) changes nothing.
    """
    check_identifier(landing_schema)
    started = time.monotonic()
    run_id = uuid.uuid4().hex
    pages = fetched = inserted = updated = 0
    merge = sql.SQL(
        """INSERT INTO {table} (id, name, email, status, amount_cents, currency, tags, created_at, updated_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (id) DO UPDATE SET
             name = EXCLUDED.name, email = EXCLUDED.email, status = EXCLUDED.status,
             amount_cents = EXCLUDED.amount_cents, currency = EXCLUDED.currency, tags = EXCLUDED.tags,
             created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, _loaded_at = now()
           WHERE {table}.updated_at < EXCLUDED.updated_at
           RETURNING (xmax = 0) AS inserted"""
    ).format(table=sql.Identifier(landing_schema, SOURCE))
    with (
        connect(database_url, schema=state_schema) as conn,
        httpx.Client(base_url=api_url, timeout=10) as http,
    ):
        _ensure_landing(conn, landing_schema)
        log_id = conn.execute(
            "INSERT INTO load_log (run_id, source) VALUES (%s, %s) RETURNING id", (run_id, SOURCE)
        ).fetchone()
        conn.commit()
        task = progress.add_task("pulling customers", total=None) if progress else None
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if cursor:
                params["cursor"] = cursor
            response = http.get("/rest/cursor/customers", params=params)
            response.raise_for_status()
            body = response.json()
            records = body["data"]
            with conn.transaction():
                for record in records:
                    values = [record[c] for c in _COLUMNS]
                    values[_COLUMNS.index("tags")] = Jsonb(record["tags"])
                    row = conn.execute(merge, values).fetchone()
                    if row is not None:
                        inserted += int(bool(row[0]))
                        updated += int(not row[0])
            pages += 1
            fetched += len(records)
            if progress is not None and task is not None:
                progress.update(
                    task, advance=len(records), description=f"pulling customers (page {pages})"
                )
            cursor = body.get("next_cursor")
            if not cursor:
                break
        count_row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(landing_schema, SOURCE))
        ).fetchone()
        total = int(count_row[0]) if count_row else 0
        conn.execute(
            """UPDATE load_log SET finished_at = now(), status = 'succeeded', rows_loaded = %s,
               detail = %s WHERE id = %s""",
            (
                inserted + updated,
                Jsonb({"pages": pages, "fetched": fetched}),
                log_id[0] if log_id else None,
            ),
        )
        conn.commit()
    return DemoResult(pages, fetched, inserted, updated, total, time.monotonic() - started)


def run_demo(*, console: Console) -> Table:
    """Bring the stack up, migrate, pull the demo source, and return the summary table."""
    settings = Settings()
    stack = Stack(StackConfig.from_env(), log=lambda msg: console.print(f"[dim]·[/] {msg}"))
    statuses = stack.up()
    broken = [s.name for s in statuses if not s.ok]
    if broken:
        raise StackError(f"services not answering: {', '.join(broken)} (see `ingest stack status`)")
    urls = stack.urls()
    migrate(urls["postgres"], schema=settings.db_schema)
    with Progress(console=console, transient=True) as progress:
        result = pull_customers(
            api_url=urls["mock-api"],
            database_url=urls["postgres"],
            state_schema=settings.db_schema,
            landing_schema=settings.landing_schema,
            progress=progress,
        )
    table = Table(title="ingest demo")
    for column in (
        "source",
        "pages",
        "fetched",
        "new rows",
        "changed rows",
        "rows in table",
        "seconds",
    ):
        table.add_column(column, justify="right" if column != "source" else "left")
    table.add_row(
        f"{settings.landing_schema}.{SOURCE}",
        str(result.pages),
        str(result.fetched),
        str(result.inserted),
        str(result.updated),
        str(result.rows_in_table),
        f"{result.seconds:.2f}",
    )
    if result.inserted == 0 and result.updated == 0:
        table.caption = "every record was already there: nothing landed twice"
    return table
