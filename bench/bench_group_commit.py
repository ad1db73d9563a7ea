"""Webhook inbox writes per second: one transaction per event vs the GroupCommitter.

    python bench/bench_group_commit.py [--database-url URL] [--seconds 3] [--concurrency 64]

Every write stores what the receiver stores for one delivery — the ``webhook_events`` row and its
``outbox`` row — and is acknowledged only after its COMMIT. ``--concurrency`` tasks write back to
back for ``--seconds`` in one asyncio loop, as the receiver's concurrent requests would:

* ``per-event, 1 conn``: one transaction per event on one connection (requests take turns);
* ``per-event, pool N``: one transaction per event on a pool of N connections (PostgreSQL itself
  then flushes concurrent commits together);
* ``group commit, W writer(s)``: ``GroupCommitter`` with W writer connections.

The ratios against the per-event rows are what carries across machines (they depend on how long
the disk takes to flush); the absolute numbers do not. A throwaway schema is migrated and dropped.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from ingest.state.migrate import migrate
from ingest.webhooks.inbox import GroupCommitter, InboundEvent

# About 1 KB, like a typical webhook body.
BODY = {
    "object": "event",
    "type": "invoice.paid",
    "data": {"object": {"id": "in_1", "lines": [{"amount": 100 * n, "n": n} for n in range(20)]}},
}
HEADERS = {
    "content-type": "application/json",
    "user-agent": "bench",
    "webhook-signature": "REDACTED",
}

Write = Callable[[InboundEvent], Awaitable[bool]]


def make_event(run: str, n: int) -> InboundEvent:
    event_id = f"{run}-{n}"
    payload = json.dumps({"id": event_id, **BODY}).encode()
    return InboundEvent("bench", event_id, "invoice.paid", HEADERS, payload, datetime.now(UTC))


async def per_event(conn: psycopg.AsyncConnection[Any], event: InboundEvent) -> bool:
    """What a simple receiver does per request: insert the event and its outbox row, commit."""
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO webhook_events (source, event_id, event_type, received_at, headers, payload)"
            " VALUES (%s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT (source, event_id) DO NOTHING"
            " RETURNING id",
            (
                event.source,
                event.event_id,
                event.event_type,
                event.received_at,
                Jsonb(event.headers),
                event.payload.decode(),
            ),
        )
        row = await cur.fetchone()
        if row is None:
            return False
        await conn.execute(
            "INSERT INTO outbox (source, event_id, topic, payload) VALUES (%s, %s, 'landing', %s)",
            (event.source, event.event_id, Jsonb({"inbox_id": row[0]})),
        )
    return True


async def drive(write: Write, concurrency: int, seconds: float) -> float:
    """Writes per second, ``concurrency`` tasks writing new events back to back."""
    run = uuid.uuid4().hex[:8]
    done = 0
    deadline = 0.0

    async def writer(k: int) -> None:
        nonlocal done
        n = 0
        while time.perf_counter() < deadline:
            await write(make_event(run, k * 10_000_000 + n))
            n += 1
            done += 1

    for warm in range(concurrency):  # connect, prepare, fill caches before the clock starts
        await write(make_event(run, -1 - warm))
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(writer(k) for k in range(concurrency)))
    return done / (time.perf_counter() - started)


async def measure_per_event_one(url: str, schema: str, concurrency: int, seconds: float) -> float:
    conn = await psycopg.AsyncConnection.connect(url)
    await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    await conn.commit()
    lock = asyncio.Lock()

    async def write(event: InboundEvent) -> bool:
        async with lock:
            return await per_event(conn, event)

    try:
        return await drive(write, concurrency, seconds)
    finally:
        await conn.close()


async def measure_per_event_pool(
    url: str, schema: str, size: int, concurrency: int, seconds: float
) -> float:
    async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        await conn.commit()

    async with AsyncConnectionPool(
        url, min_size=size, max_size=size, configure=configure, open=False
    ) as pool:
        await pool.wait()

        async def write(event: InboundEvent) -> bool:
            async with pool.connection() as conn:
                return await per_event(conn, event)

        return await drive(write, concurrency, seconds)


async def measure_group(
    url: str, schema: str, writers: int, concurrency: int, seconds: float
) -> tuple[float, float]:
    """Writes per second, and the mean number of events per transaction."""
    async with GroupCommitter(url, schema=schema, writers=writers) as committer:
        rate = await drive(committer.write, concurrency, seconds)
        stats = committer.stats
        return rate, stats.durable / max(1, stats.transactions)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("INGEST_DATABASE_URL"))
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--pool-size", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="median of this many runs")
    args = parser.parse_args()
    if not args.database_url:
        parser.error(
            "give --database-url or set INGEST_DATABASE_URL (`ingest stack up` prints one)"
        )

    url: str = args.database_url
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    migrate(url, schema=schema)
    with psycopg.connect(url) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        sync = conn.execute("SHOW synchronous_commit").fetchone()
    print(
        f"PostgreSQL {version[0] if version else '?'} (synchronous_commit={sync[0] if sync else '?'}),"
        f" {args.concurrency} concurrent writers, {args.seconds:g} s per run, median of {args.repeat}"
    )

    def median(measure: Callable[[], Coroutine[Any, Any, float]]) -> float:
        return statistics.median(asyncio.run(measure()) for _ in range(args.repeat))

    c, s = args.concurrency, args.seconds
    try:
        one = median(lambda: measure_per_event_one(url, schema, c, s))
        pooled = median(lambda: measure_per_event_pool(url, schema, args.pool_size, c, s))
        rows = [
            ("per-event, 1 conn", one, 1.0),
            (f"per-event, pool {args.pool_size}", pooled, 1.0),
        ]
        for writers in (1, 2):
            runs = [
                asyncio.run(measure_group(url, schema, writers, c, s)) for _ in range(args.repeat)
            ]
            rate = statistics.median(r for r, _ in runs)
            batch = statistics.median(b for _, b in runs)
            rows.append(
                (f"group commit, {writers} writer{'s' if writers > 1 else ''}", rate, batch)
            )
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

    print(f"{'':28} {'writes/s':>9} {'÷ 1 conn':>9} {'÷ pool':>8} {'events/tx':>10}")
    for label, rate, batch in rows:
        print(f"{label:28} {rate:9.0f} {rate / one:9.2f} {rate / pooled:8.2f} {batch:10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
