"""REST ingestion speed: the full policy stack and `ingest run` against their limits, in one run.

    python bench/bench_rest.py [--records 100000] [--page 1000] [--requests 2000] [--repeat 3]

Everything runs against the same local mock API (no faults, no server-side rate limit) and the
same PostgreSQL, in the same run, so the ratios are comparable across machines where the absolute
numbers are not:

1. per-request overhead: ``GET /rest/customers/{id}`` through a bare ``httpx.Client`` vs. through
   ``build_client`` (retry → breaker → Redis token bucket → network). The bucket is large enough
   never to wait, so what is measured is the cost of the layers, one Redis script call included.
2. records/s: a bare httpx loop over the cursor pages (GET + JSON decode; the limit), vs.
   ``run_rest_source`` landing the same pages into PostgreSQL (merge on the primary key, watermark
   per page), vs. dlt's ``rest_api`` source into the same PostgreSQL when dlt is installed
   (``uv sync --group bench``).

Medians of ``--repeat`` runs are printed. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable

import httpx
import psycopg
import redis
from psycopg import sql

from ingest.http.client import build_client
from ingest.http.ratelimit import RedisTokenBucket
from ingest.http.retry import RetryPolicy
from ingest.netutil import free_port, wait_for_port
from ingest.sources.rest import run_rest_source
from ingest.sources.spec import RestSourceSpec
from ingest.state.migrate import migrate


def _median(runs: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(runs))


def bare_requests(url: str, n: int) -> float:
    with httpx.Client(base_url=url) as client:
        client.get("/rest/customers/1")
        started = time.perf_counter()
        for i in range(n):
            client.get(f"/rest/customers/{i % 1000 + 1}").raise_for_status()
        return (time.perf_counter() - started) / n


def stack_requests(url: str, n: int, redis_url: str) -> float:
    bucket = RedisTokenBucket(redis.Redis.from_url(redis_url), capacity=1_000_000, rate=1_000_000.0)
    with build_client(
        base_url=url, policy=RetryPolicy(), bucket=bucket, bucket_key=f"bench-{uuid.uuid4().hex}"
    ) as client:
        client.get("/rest/customers/1")
        started = time.perf_counter()
        for i in range(n):
            client.get(f"/rest/customers/{i % 1000 + 1}").raise_for_status()
        return (time.perf_counter() - started) / n


def bare_pages(url: str, page: int) -> tuple[int, float]:
    records, cursor = 0, None
    started = time.perf_counter()
    with httpx.Client(base_url=url) as client:
        while True:
            params: dict[str, str | int] = {"limit": page} | ({"cursor": cursor} if cursor else {})
            body = client.get("/rest/cursor/customers", params=params).json()
            records += len(body["data"])
            cursor = body["next_cursor"]
            if not cursor:
                break
    return records, time.perf_counter() - started


def ingest_run(url: str, page: int, database_url: str) -> tuple[int, float]:
    state, landing = f"bench_{uuid.uuid4().hex[:8]}", f"bench_{uuid.uuid4().hex[:8]}_l"
    migrate(database_url, schema=state)
    spec = RestSourceSpec.model_validate(
        {
            "name": "customers",
            "kind": "rest",
            "connection": {
                "base_url": url,
                "path": "/rest/cursor/customers",
                "params": {"limit": page},
            },
            "pagination": {"type": "cursor"},
            "data_selector": "data",
            "incremental": {"cursor_field": "updated_at", "param": "updated_since"},
            "primary_key": ["id"],
        }
    )
    try:
        started = time.perf_counter()
        result = run_rest_source(
            spec, database_url=database_url, state_schema=state, landing_schema=landing
        )
        elapsed = time.perf_counter() - started
        assert result.status == "succeeded", result.error
        return result.records, elapsed
    finally:
        _drop(database_url, state, landing)


def dlt_run(url: str, page: int, database_url: str) -> tuple[int, float] | None:
    try:
        import dlt
        from dlt.sources.rest_api import rest_api_source
    except ImportError:
        return None
    dataset = f"bench_dlt_{uuid.uuid4().hex[:8]}"
    # dlt insists on a password even where the server trusts the client; one it ignores will do.
    credentials = httpx.URL(database_url)
    if not credentials.password:
        # copy_with(password=) alone drops the user name, and dlt would log in as the OS user.
        credentials = credentials.copy_with(username=credentials.username, password="unused")
    source = rest_api_source(
        {
            "client": {
                "base_url": url,
                "paginator": {
                    "type": "cursor",
                    "cursor_path": "next_cursor",
                    "cursor_param": "cursor",
                },
            },
            "resources": [
                {
                    "name": "customers",
                    "primary_key": "id",
                    "write_disposition": "merge",
                    "endpoint": {
                        "path": "rest/cursor/customers",
                        "params": {"limit": page},
                        "data_selector": "data",
                    },
                }
            ],
        }
    )
    with tempfile.TemporaryDirectory() as pipelines:
        pipeline = dlt.pipeline(
            pipeline_name=dataset,
            destination=dlt.destinations.postgres(str(credentials)),
            dataset_name=dataset,
            pipelines_dir=pipelines,
        )
        started = time.perf_counter()
        info = pipeline.run(source)
        elapsed = time.perf_counter() - started
    del info
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(dataset, "customers"))
        ).fetchone()
    _drop(database_url, dataset, f"{dataset}_staging")
    return (int(row[0]) if row else 0), elapsed


def _drop(database_url: str, *schemas: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--page", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("INGEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("INGEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ingest.mockapi",
            "--port",
            str(port),
            "--records",
            str(args.records),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port)
        url = f"http://127.0.0.1:{port}"
        bare = _median(args.repeat, lambda: bare_requests(url, args.requests))
        stacked = _median(args.repeat, lambda: stack_requests(url, args.requests, args.redis_url))
        print(
            f"per request: bare httpx {bare * 1e3:.3f} ms, full stack {stacked * 1e3:.3f} ms, "
            f"overhead {(stacked - bare) * 1e3:.3f} ms ({stacked / bare:.2f}x)"
        )

        rows: list[tuple[str, float]] = []
        for name, measure in (
            ("bare httpx loop", lambda: bare_pages(url, args.page)),
            (
                "ingest run (REST → PostgreSQL)",
                lambda: ingest_run(url, args.page, args.database_url),
            ),
            (
                "dlt rest_api (REST → PostgreSQL)",
                lambda: dlt_run(url, args.page, args.database_url),
            ),
        ):
            speeds = []
            for _ in range(args.repeat):
                measured = measure()
                if measured is None:
                    break
                records, seconds = measured
                assert records == args.records, (
                    f"{name}: {records} records, expected {args.records}"
                )
                speeds.append(records / seconds)
            if speeds:
                rows.append((name, statistics.median(speeds)))
            else:
                print(f"{name}: skipped (dlt is not installed: uv sync --group bench)")
        limit = rows[0][1]
        print(f"\n{args.records:,} records, pages of {args.page:,}, medians of {args.repeat}:")
        for name, speed in rows:
            print(f"  {name:36s} {speed:>10,.0f} records/s  {speed / limit:5.2f}x the bare loop")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
