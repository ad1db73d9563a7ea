"""S3 → PostgreSQL speed: the loader end to end against the sink's own limit, in one run.

    python bench/bench_s3.py [--rows 1000000] [--repeat 3] [--only csv,parquet] [--no-dlt]

A 1M-row, 10-column CSV (~114 MB) and the same rows as Parquet are uploaded as one drop each
(``_SUCCESS``) to a moto S3 server the bench starts. Then, against the same PostgreSQL:

1. the limit: a bare ``COPY … FROM STDIN (FORMAT csv)`` of the CSV file from local disk into a
   fresh table with the same columns and primary key — PostgreSQL parsing and indexing the rows,
   nothing else;
2. ``run_s3_source`` end to end (scan, claim, GET from S3, parse, COPY, dead letters, the
   manifest row in the same transaction) for the CSV and for the Parquet drop: the default
   (binary COPY straight into the landing table inside a savepoint) and, for comparison, CSV
   COPY (``copy_format="csv"``) and ``strategy="merge"`` (staging table + ``INSERT … ON
   CONFLICT`` for every chunk);
3. dlt's ``filesystem`` source into the same PostgreSQL, merging on the same key, when dlt and
   s3fs are installed (``uv sync --group bench``; dlt reads ``s3://`` through s3fs):
   ``filesystem | read_csv()`` (pandas) and, for Parquet, ``filesystem | read_parquet()`` (Arrow).

Each measurement runs in a fresh process, so its peak RSS is its own. Medians of ``--repeat``
runs. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import sql

from ingest.netutil import free_port, wait_for_port

Measured = tuple[int, float, int]  # rows, seconds, peak RSS in bytes
BUCKET = "bench-s3"
_CURRENCIES = ["usd", "eur", "gbp", "jpy"]
_STATUSES = ["paid", "shipped", "delivered", "pending", "refunded", "canceled"]
_WORDS = ["gift", "wrap", "door", "ring", "twice", "box", "fragile", "side", "entrance", "call"]


def make_table(rows: int, seed: int = 0) -> pa.Table:
    """``rows`` orders in 10 columns, about 114 bytes per row as CSV; the same for every seed."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2026-01-01T00:00:00", "s")
    created = start + np.cumsum(rng.integers(1, 20, rows)).astype("timedelta64[s]")
    words = pa.array(_WORDS)
    note = pc.binary_join_element_wise(
        *(pc.take(words, pa.array(rng.integers(0, len(_WORDS), rows))) for _ in range(3)), " "
    )
    customers = pa.array(rng.integers(1, 200_000, rows)).cast(pa.string())
    return pa.table(
        {
            "id": pa.array(np.arange(1, rows + 1, dtype=np.int64)),
            "customer_id": pa.array(rng.integers(1, 200_000, rows)),
            "amount": pa.array(np.round(rng.uniform(1, 5000, rows), 2)),
            "currency": pc.take(pa.array(_CURRENCIES), pa.array(rng.integers(0, 4, rows))),
            "status": pc.take(pa.array(_STATUSES), pa.array(rng.integers(0, 6, rows))),
            "items": pa.array(rng.integers(1, 20, rows)),
            "email": pc.binary_join_element_wise("c", customers, "@example.com", ""),
            "note": note,
            "created_at": pa.array(created, pa.timestamp("s", tz="UTC")),
            "updated_at": pa.array(
                created + rng.integers(0, 86_400, rows).astype("timedelta64[s]"),
                pa.timestamp("s", tz="UTC"),
            ),
        }
    )


def write_files(folder: Path, rows: int) -> dict[str, Path]:
    table = make_table(rows)
    paths = {"csv": folder / "orders.csv", "parquet": folder / "orders.parquet"}
    # Unquoted, as most exports are (no value holds a comma or a quote).
    pacsv.write_csv(table, paths["csv"], pacsv.WriteOptions(quoting_style="none"))
    pq.write_table(table, paths["parquet"], row_group_size=131_072)
    return paths


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def upload(endpoint: str, paths: dict[str, Path]) -> None:
    s3 = s3_client(endpoint)
    s3.create_bucket(Bucket=BUCKET)
    for fmt, path in paths.items():
        s3.upload_file(str(path), BUCKET, f"{fmt}/drop-0001/{path.name}")
        s3.put_object(Bucket=BUCKET, Key=f"{fmt}/drop-0001/_SUCCESS", Body=b"")


def _drop(database_url: str, *schemas: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _peak_rss() -> int:
    """This process's peak resident memory in bytes.

    ``VmHWM`` rather than ``getrusage``'s ``ru_maxrss``: on Linux the latter carries over the
    parent's size at fork, so a child spawned by a big parent would report the parent's peak.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux: KiB


# -- the measurements, each run in a fresh process ------------------------------------------------


def bare_copy(database_url: str, csv_path: str) -> Measured:
    """COPY the CSV file as it is into a table with the landing table's types and primary key."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    columns = (
        "id bigint PRIMARY KEY, customer_id bigint, amount double precision, currency text,"
        " status text, items bigint, email text, note text, created_at timestamptz,"
        " updated_at timestamptz"
    )
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            table = sql.Identifier(schema, "orders")
            conn.execute(sql.SQL("CREATE TABLE {} ({})").format(table, sql.SQL(columns)))
            started = time.perf_counter()
            with conn.transaction(), open(csv_path, "rb") as fh:
                statement = sql.SQL("COPY {} FROM STDIN (FORMAT csv, HEADER true)").format(table)
                with conn.cursor().copy(statement) as copy:
                    while block := fh.read(1 << 20):
                        copy.write(block)
            elapsed = time.perf_counter() - started
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
        return (int(row[0]) if row else 0), elapsed, _peak_rss()
    finally:
        _drop(database_url, schema)


def ingest_run(
    database_url: str, endpoint: str, fmt: str, strategy: str, copy_format: str
) -> Measured:
    from ingest.s3.loader import run_s3_source
    from ingest.sources.spec import S3SourceSpec
    from ingest.state.migrate import migrate

    state = f"bench_{uuid.uuid4().hex[:8]}"
    landing = f"{state}_l"
    migrate(database_url, schema=state)
    spec = S3SourceSpec.model_validate(
        {"name": "orders", "kind": "s3", "bucket": BUCKET, "prefix": fmt, "primary_key": ["id"]}
    )
    try:
        started = time.perf_counter()
        result = run_s3_source(
            spec,
            database_url=database_url,
            state_schema=state,
            landing_schema=landing,
            s3=s3_client(endpoint),
            strategy=strategy,  # type: ignore[arg-type]
            copy_format=copy_format,  # type: ignore[arg-type]
        )
        elapsed = time.perf_counter() - started
        assert result.status == "succeeded" and result.loaded == 1, result
        return result.rows, elapsed, _peak_rss()
    finally:
        _drop(database_url, state, landing)


def dlt_run(database_url: str, endpoint: str, fmt: str) -> Measured | None:
    if importlib.util.find_spec("s3fs") is None:  # what dlt reads s3:// with
        return None
    try:
        import dlt
        from dlt.common.configuration.specs import AwsCredentials
        from dlt.sources.filesystem import filesystem, read_csv, read_parquet
    except ImportError:
        return None
    import httpx

    dataset = f"bench_dlt_{uuid.uuid4().hex[:8]}"
    # dlt insists on a password even where the server trusts the client; one it ignores will do.
    credentials = httpx.URL(database_url)
    if not credentials.password:
        credentials = credentials.copy_with(password="unused")
    files = filesystem(
        bucket_url=f"s3://{BUCKET}/{fmt}/drop-0001/",
        file_glob=f"*.{fmt}",
        credentials=AwsCredentials(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
            endpoint_url=endpoint,
        ),
    )
    reader = files | (read_csv() if fmt == "csv" else read_parquet())
    reader.apply_hints(write_disposition="merge", primary_key="id", table_name="orders")
    with tempfile.TemporaryDirectory() as pipelines:
        pipeline = dlt.pipeline(
            pipeline_name=dataset,
            destination=dlt.destinations.postgres(str(credentials)),
            dataset_name=dataset,
            pipelines_dir=pipelines,
        )
        started = time.perf_counter()
        pipeline.run(reader)
        elapsed = time.perf_counter() - started
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(dataset, "orders"))
        ).fetchone()
    _drop(database_url, dataset, f"{dataset}_staging")
    return (int(row[0]) if row else 0), elapsed, _peak_rss()


def _in_child(queue: Any, measure: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        queue.put(("ok", measure(*args)))
    except BaseException as exc:  # reported by the parent
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def in_process(measure: Callable[..., Any], *args: Any) -> Any:
    """Run ``measure(*args)`` in a fresh spawned process: its own memory, so its own peak RSS."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_in_child, args=(queue, measure, args))
    child.start()
    kind, value = queue.get()
    child.join()
    if kind == "error":
        raise RuntimeError(value)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="csv,parquet", help="formats to run: csv, parquet")
    parser.add_argument("--no-dlt", action="store_true", help="skip dlt even if installed")
    parser.add_argument(
        "--no-variants", action="store_true", help="only the default strategy and format"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("INGEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    formats = [f for f in args.only.split(",") if f]

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port)
        endpoint = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory(prefix="bench-s3-") as folder:
            paths = write_files(Path(folder), args.rows)
            sizes = {fmt: path.stat().st_size for fmt, path in paths.items()}
            upload(endpoint, paths)
            print(
                f"{args.rows:,} rows x 10 columns: CSV {sizes['csv'] / 1e6:.0f} MB, "
                f"Parquet {sizes['parquet'] / 1e6:.0f} MB; medians of {args.repeat} runs\n"
            )
            runs: list[tuple[str, Callable[[], Measured | None]]] = [
                (
                    "bare COPY FROM STDIN (local CSV)",
                    lambda: in_process(bare_copy, args.database_url, str(paths["csv"])),
                ),
            ]
            for fmt in formats:
                variants = [("binary COPY, merge on conflict", "copy", "binary")]
                if not args.no_variants:
                    if fmt == "csv":
                        variants.append(("CSV COPY, merge on conflict", "copy", "csv"))
                    variants.append(("staging + merge always", "merge", "csv"))
                for label, strategy, copy_format in variants:
                    runs.append(
                        (
                            f"ingest run, {fmt} ({label})",
                            partial(
                                in_process,
                                ingest_run,
                                args.database_url,
                                endpoint,
                                fmt,
                                strategy,
                                copy_format,
                            ),
                        )
                    )
                if not args.no_dlt:
                    reader = "read_csv()" if fmt == "csv" else "read_parquet()"
                    runs.append(
                        (
                            f"dlt filesystem | {reader}",
                            partial(in_process, dlt_run, args.database_url, endpoint, fmt),
                        )
                    )
            report(runs, args.rows, args.repeat)
    finally:
        server.terminate()
        server.wait(timeout=10)


def report(runs: list[tuple[str, Callable[[], Measured | None]]], rows: int, repeat: int) -> None:
    limit: float | None = None
    for name, measure in runs:
        speeds, peaks = [], []
        for _ in range(repeat):
            measured = measure()
            if measured is None:
                break
            landed, seconds, peak = measured
            assert landed == rows, f"{name}: {landed} rows, expected {rows}"
            speeds.append(rows / seconds)
            peaks.append(peak)
        if not speeds:
            print(f"  {name:48s} skipped: dlt and s3fs are not installed (uv sync --group bench)")
            continue
        speed = statistics.median(speeds)
        limit = limit or speed
        print(
            f"  {name:48s} {speed:>10,.0f} rows/s  {speed / limit:5.2f}x COPY"
            f"  peak RSS {max(peaks) / 2**20:6.0f} MiB",
            flush=True,
        )
    print("\ngoal: end to end >= 0.5x the bare COPY")


if __name__ == "__main__":
    main()
