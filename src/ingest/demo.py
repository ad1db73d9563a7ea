"""``ingest demo``: the stack, the state schema and one REST source, end to end.

The source goes through the same runner as ``ingest run``: the policy stack (retry, breaker, Redis
rate limit), page-by-page merge on the primary key, and a watermark that moves with the rows.
"""

from __future__ import annotations

import os
from typing import Any

from psycopg import sql
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ingest.errors import StackError
from ingest.settings import Settings
from ingest.sources.rest import run_rest_source
from ingest.sources.spec import RestSourceSpec
from ingest.stack import Stack, StackConfig
from ingest.state.db import connect
from ingest.state.migrate import migrate

__all__ = ["DEMO_SOURCE", "run_demo"]

# The demo's source, declared as a platform engineer would in sources/*.yaml.
DEMO_SOURCE: dict[str, Any] = {
    "name": "demo_customers",
    "kind": "rest",
    "connection": {
        "base_url_env": "INGEST_MOCK_API_URL",
        "path": "/rest/cursor/customers",
        "params": {"limit": 100},
    },
    "pagination": {"type": "cursor", "cursor_path": "next_cursor", "cursor_param": "cursor"},
    "data_selector": "data",
    "incremental": {"cursor_field": "updated_at", "param": "updated_since", "lookback": "10m"},
    "primary_key": ["id"],
    "rate_limit": {"rate": 50, "capacity": 10},
}


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
    spec = RestSourceSpec.model_validate(DEMO_SOURCE)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("pulling customers", total=None)
        result = run_rest_source(
            spec,
            database_url=urls["postgres"],
            state_schema=settings.db_schema,
            landing_schema=settings.landing_schema,
            redis_url=urls["redis"],
            environ={**os.environ, "INGEST_MOCK_API_URL": urls["mock-api"]},
            on_page=lambda page, partial: progress.update(
                task,
                completed=partial.records,
                description=f"pulling customers (page {partial.pages})",
            ),
        )
    if result.status != "succeeded":
        raise StackError(f"the demo source failed: {result.error}")
    with connect(urls["postgres"], schema=settings.db_schema) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(settings.landing_schema, spec.table)
            )
        ).fetchone()
    table = Table(title="ingest demo")
    for column in (
        "source",
        "pages",
        "fetched",
        "new rows",
        "changed rows",
        "rows in table",
        "watermark",
        "seconds",
    ):
        table.add_column(column, justify="left" if column in {"source", "watermark"} else "right")
    table.add_row(
        f"{settings.landing_schema}.{spec.table}",
        str(result.pages),
        str(result.records),
        str(result.inserted),
        str(result.updated),
        str(row[0] if row else 0),
        result.watermark or "-",
        f"{result.seconds:.2f}",
    )
    if result.inserted == 0 and result.updated == 0:
        table.caption = "every record was already there: nothing landed twice"
    return table
