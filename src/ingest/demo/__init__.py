"""``ingest demo``: phase 1 end to end on the local stack, with the committed sample data.

1. REST: the mock API's customers, with faults injected, through ``ingest run``'s runner (policy
   stack, merge on the key, watermark).
2. S3: ``data/s3/drops`` uploaded to a bucket and loaded by the S3 loader (bad rows dead-lettered,
   corrupt files quarantined, the incomplete drop left waiting).
3. Webhooks: ``data/webhooks/deliveries.ndjson`` signed with the vendors' SDKs, sent to the real
   receiver (duplicates dropped, a forgery refused with 401), then relayed to landing tables.

The summary counts every number from the tables and sets it beside what the data generators say
should land. Running it again is safe: nothing lands twice, and the summary says what was there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.table import Table

from ingest.demo.context import DemoContext, find_data_dir
from ingest.demo.rest import run_rest_step
from ingest.demo.s3 import DEMO_BUCKET, run_s3_step
from ingest.demo.summary import DemoSummary, SourceLine
from ingest.demo.webhooks import run_webhook_step
from ingest.errors import StackError
from ingest.settings import Settings
from ingest.stack import Stack, StackConfig
from ingest.state.migrate import migrate

__all__ = ["DEMO_BUCKET", "DemoSummary", "SourceLine", "find_data_dir", "run_demo", "run_phase1"]

T = TypeVar("T")


def _start(console: Console, data_dir: Path | None) -> DemoContext:
    """Bring the stack up (what is not already reachable), migrate, find the sample data."""
    data = data_dir or find_data_dir()
    settings = Settings()
    stack = Stack(StackConfig.from_env(), log=lambda msg: console.print(f"[dim]·[/] {msg}"))
    statuses = stack.up()
    broken = [s.name for s in statuses if not s.ok]
    if broken:
        raise StackError(f"services not answering: {', '.join(broken)} (see `ingest stack status`)")
    urls = stack.urls()
    migrate(urls["postgres"], schema=settings.db_schema)
    return DemoContext(
        database_url=urls["postgres"],
        redis_url=urls["redis"],
        s3_endpoint_url=urls["s3"],
        mock_api_url=urls["mock-api"],
        state_schema=settings.db_schema,
        landing_schema=settings.landing_schema,
        data_dir=data,
        console=console,
    )


def run_phase1(
    *, console: Console, bucket: str = DEMO_BUCKET, data_dir: Path | None = None
) -> DemoSummary:
    """Run the three steps on the stack; the summary of what landed, what was there, what not."""
    summary = DemoSummary()
    started = time.monotonic()

    def step(name: str, work: Callable[[], T]) -> T:
        began = time.monotonic()
        try:
            return work()
        finally:
            summary.steps[name] = time.monotonic() - began

    ctx = step("stack", lambda: _start(console, data_dir))
    step("rest", lambda: run_rest_step(ctx, summary))
    step("s3", lambda: run_s3_step(ctx, summary, bucket))
    step("webhooks", lambda: run_webhook_step(ctx, summary))
    summary.seconds = time.monotonic() - started
    summary.facts |= {
        "state_schema": ctx.state_schema,
        "landing_schema": ctx.landing_schema,
        "bucket": bucket,
    }
    return summary


def run_demo(*, console: Console, bucket: str = DEMO_BUCKET, data_dir: Path | None = None) -> Table:
    """Run phase 1 end to end and return the summary table."""
    return run_phase1(console=console, bucket=bucket, data_dir=data_dir).table()
