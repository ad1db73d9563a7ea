"""The S3 loader: objects into landing tables exactly once, bad rows and files set aside.

Against the session's real S3 (moto server) and PostgreSQL; every test has its own bucket, state
schema and landing schema.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import orjson
import psycopg
import pyarrow as pa
import pytest
from botocore.exceptions import ReadTimeoutError
from psycopg import sql

from ingest.datagen.s3 import write_s3
from ingest.errors import ConfigError
from ingest.load.postgres import LandingTable
from ingest.s3 import loader as loader_module
from ingest.s3.loader import (
    OBJECT_ID_COLUMN,
    LandingWriter,
    LeaseHeartbeat,
    ObjectLoad,
    S3RunResult,
    encode_binary,
    landing_csv,
    landing_types,
    run_s3_source,
)
from ingest.s3.manifest import LeaseLost, ObjectManifest, ObjectRecord
from ingest.s3.parsers import JSONB
from ingest.sources.spec import S3SourceSpec
from ingest.state.db import connect
from ingest.state.migrate import migrate

# -- shared with the reliability tests ------------------------------------------------------------


def s3_client(endpoint_url: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def empty_and_delete(s3: Any, bucket: str) -> None:
    while True:
        page = s3.list_object_versions(Bucket=bucket)
        items = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
        if not items:
            break
        objects = [{"Key": i["Key"], "VersionId": i["VersionId"]} for i in items]
        s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
    s3.delete_bucket(Bucket=bucket)


def orders_csv(
    ids: range | list[int], *, amount: float = 9.5, bad: dict[int, str] | None = None
) -> bytes:
    """A CSV of orders ``ids``; ``bad`` maps a 0-based row index to the raw line written instead."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "customer", "amount", "created_at"])
    for index, i in enumerate(ids):
        if bad and index in bad:
            out.write(bad[index] + "\n")
        else:
            writer.writerow(
                [i, f"c{i % 7}", f"{amount + i:.2f}", f"2026-01-01T00:{i % 60:02d}:00Z"]
            )
    return out.getvalue().encode()


def put_drop(
    s3: Any,
    bucket: str,
    drop: str,
    files: dict[str, bytes],
    *,
    prefix: str = "in/",
    marker: str = "manifest",
    rows: dict[str, int] | None = None,
) -> None:
    """Upload a drop's files, then its marker: a producer manifest (sizes, MD5s, rows) or _SUCCESS."""
    for name, body in files.items():
        s3.put_object(Bucket=bucket, Key=f"{prefix}{drop}/{name}", Body=body)
    if marker == "manifest":
        entries = [
            {
                "key": name,
                "size": len(body),
                "md5": hashlib.md5(body).hexdigest(),
                "rows": (rows or {}).get(name),
            }
            for name, body in files.items()
        ]
        manifest = json.dumps({"drop_id": drop, "files": entries}).encode()
        s3.put_object(Bucket=bucket, Key=f"{prefix}{drop}/_manifest.json", Body=manifest)
    else:
        s3.put_object(Bucket=bucket, Key=f"{prefix}{drop}/_SUCCESS", Body=b"")


def landed(
    database_url: str, landing: str, table: str = "orders"
) -> dict[int, list[dict[str, Any]]]:
    """The landing table's rows by ``_s3_object_id``; {} when the table does not exist."""
    with psycopg.connect(database_url) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (f"{landing}.{table}",)).fetchone()
        if not exists or exists[0] is None:
            return {}
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        rows = cur.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(landing, table)))
        by_object: dict[int, list[dict[str, Any]]] = {}
        for row in rows:
            by_object.setdefault(row[OBJECT_ID_COLUMN], []).append(row)
    return by_object


def dead_letters(database_url: str, schema: str, kind: str) -> list[dict[str, Any]]:
    with connect(database_url, schema=schema) as conn:
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        return cur.execute(
            "SELECT * FROM dead_letters WHERE kind = %s ORDER BY id", (kind,)
        ).fetchall()


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def s3(s3_endpoint_url: str) -> Any:
    return s3_client(s3_endpoint_url)


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    name = f"t-loader-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    yield name
    empty_and_delete(s3, name)


@pytest.fixture
def landing(database_url: str, fresh_schema: str) -> Iterator[str]:
    name = f"{fresh_schema}_landing"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def run(database_url: str, fresh_schema: str, landing: str, s3: Any, bucket: str) -> Any:
    """``run(**spec fields, **run_s3_source options)`` for an ``orders`` source on the bucket."""
    spec_fields = set(S3SourceSpec.model_fields)

    def go(**options: Any) -> S3RunResult:
        fields = {k: v for k, v in options.items() if k in spec_fields}
        rest = {k: v for k, v in options.items() if k not in spec_fields}
        spec = S3SourceSpec.model_validate(
            {
                "name": "orders",
                "kind": "s3",
                "bucket": bucket,
                "prefix": "in/",
                "primary_key": ["id"],
                **fields,
            }
        )
        return run_s3_source(
            spec,
            database_url=database_url,
            state_schema=fresh_schema,
            landing_schema=landing,
            **{"s3": s3, **rest},
        )

    return go


@pytest.fixture
def manifest(database_url: str, fresh_schema: str) -> ObjectManifest:
    return ObjectManifest(database_url, schema=fresh_schema)


# -- the sample drops -----------------------------------------------------------------------------


def test_the_sample_drops_land_as_their_expected_json_says(
    tmp_path: Path,
    s3: Any,
    bucket: str,
    run: Any,
    manifest: ObjectManifest,
    database_url: str,
    fresh_schema: str,
    landing: str,
) -> None:
    expected = write_s3(tmp_path, rows=300, customers=50, seed=3)
    for path in sorted((tmp_path / "drops").rglob("*")):
        if path.is_file():
            s3.upload_file(
                str(path), bucket, "in/" + path.relative_to(tmp_path / "drops").as_posix()
            )
    # The malformed CSV is 10% bad rows on purpose: allowed here, so that it loads.
    result = run(primary_key=["order_id"], max_bad_fraction=0.2)

    totals = expected["totals"]
    assert (result.status, result.failed, result.lost) == ("succeeded", 0, 0)
    assert result.drops_ready == totals["complete_drops"]
    assert result.drops_waiting == totals["drops"] - totals["complete_drops"]
    assert result.quarantined == totals["corrupt_files"]
    assert result.rows == totals["rows_to_land"] and result.bad_rows == totals["bad_rows"]

    records = {r.key.removeprefix("in/"): r for r in manifest.objects("orders")}
    rows = landed(database_url, landing)
    for drop in expected["drops"]:
        for f in drop["files"]:
            key = f["key"].removeprefix("drops/")
            if not drop["complete"]:
                assert key not in records  # an incomplete drop's files are never registered
                continue
            record = records[key]
            if f["corrupt"]:
                assert record.state == "quarantined" and record.error
                assert record.id not in rows
            else:
                assert (record.state, record.rows, record.bad_rows) == (
                    "loaded",
                    f["good_rows"],
                    f["bad_rows"],
                )
                assert len(rows[record.id]) == f["good_rows"]
    all_ids = [r["order_id"] for object_rows in rows.values() for r in object_rows]
    assert len(all_ids) == len(set(all_ids)) == totals["rows_to_land"]

    files = dead_letters(database_url, fresh_schema, "s3_file")
    assert sorted(d["context"]["key"] for d in files) == sorted(
        r.key for r in records.values() if r.state == "quarantined"
    )
    for letter in files:  # the corrupt bytes are kept, exactly
        body = s3.get_object(Bucket=bucket, Key=letter["context"]["key"])["Body"].read()
        assert bytes(letter["payload"]) == body and letter["context"]["kept"] is True
    assert len(dead_letters(database_url, fresh_schema, "s3_row")) == totals["bad_rows"]

    again = run(primary_key=["order_id"], max_bad_fraction=0.2)
    assert (again.registered, again.objects, again.rows) == (0, 0, 0)


# -- bad rows and bad files -----------------------------------------------------------------------


def test_bad_rows_below_the_limit_load_and_are_dead_lettered_with_file_line_and_text(
    s3: Any, bucket: str, run: Any, database_url: str, fresh_schema: str, landing: str
) -> None:
    bad_line = "17,c3,12.50,oops,extra"
    body = orders_csv(range(1, 201), bad={16: bad_line})  # 1 bad row in 200: 0.5%
    put_drop(s3, bucket, "d1", {"orders.csv": body}, rows={"orders.csv": 200})
    result = run(max_bad_fraction=0.01)

    assert (result.loaded, result.rows, result.bad_rows) == (1, 199, 1)
    [letter] = dead_letters(database_url, fresh_schema, "s3_row")
    assert bytes(letter["payload"]) == bad_line.encode()
    assert letter["context"]["key"] == "in/d1/orders.csv"
    assert letter["context"]["line"] == 18  # the header is line 1
    assert letter["context"]["bucket"] == bucket and letter["context"]["version"]
    assert "fields" in letter["reason"] and letter["source"] == "orders"
    [ids] = [[r["id"] for r in rows] for rows in landed(database_url, landing).values()]
    assert sorted(ids) == [i for i in range(1, 201) if i != 17]


def test_bad_rows_above_the_limit_quarantine_the_file_and_nothing_of_it_lands(
    s3: Any,
    bucket: str,
    run: Any,
    manifest: ObjectManifest,
    database_url: str,
    fresh_schema: str,
    landing: str,
) -> None:
    bad = {i: f"{i + 1},short" for i in range(0, 100, 20)}  # 5 bad rows in 100: 5%
    put_drop(s3, bucket, "d1", {"bad.csv": orders_csv(range(1, 101), bad=bad)})
    put_drop(s3, bucket, "d2", {"good.csv": orders_csv(range(101, 151))})
    result = run(max_bad_fraction=0.01)

    assert (result.loaded, result.quarantined, result.rows) == (1, 1, 50)
    [record] = manifest.objects("orders", state="quarantined")
    assert record.key == "in/d1/bad.csv" and "5 of 100 rows are bad" in (record.error or "")
    assert record.id not in landed(database_url, landing)
    [letter] = dead_letters(database_url, fresh_schema, "s3_file")
    assert letter["reason"] == record.error and letter["error_class"] == "QuarantineError"
    assert dead_letters(database_url, fresh_schema, "s3_row") == []  # rolled back with the rows
    assert result.quarantined_files == [("in/d1/bad.csv", record.error)]


def test_rows_without_a_primary_key_value_are_dead_lettered(
    s3: Any, bucket: str, run: Any, database_url: str, fresh_schema: str
) -> None:
    body = orders_csv(range(1, 101), bad={4: ",c1,3.00,2026-01-01T00:00:00Z"})
    put_drop(s3, bucket, "d1", {"orders.csv": body})
    result = run(max_bad_fraction=0.05)

    assert (result.rows, result.bad_rows) == (99, 1)
    [letter] = dead_letters(database_url, fresh_schema, "s3_row")
    assert letter["reason"] == "no value for the primary key (id)"
    assert orjson.loads(bytes(letter["payload"]))["customer"] == "c1"


def test_a_file_that_breaks_its_producers_row_count_is_quarantined(
    s3: Any, bucket: str, run: Any, manifest: ObjectManifest
) -> None:
    put_drop(s3, bucket, "d1", {"orders.csv": orders_csv(range(1, 10))}, rows={"orders.csv": 10})
    result = run()
    assert result.quarantined == 1
    [record] = manifest.objects("orders")
    assert record.error == (
        "the producer's manifest promises 10 rows; the file has 9 (9 readable, 0 bad)"
    )


def test_a_file_without_the_primary_key_column_is_quarantined(
    s3: Any, bucket: str, run: Any, manifest: ObjectManifest
) -> None:
    put_drop(s3, bucket, "d1", {"a.csv": orders_csv(range(1, 4))})
    put_drop(s3, bucket, "d2", {"b.csv": b"customer,amount\nc1,1.5\n"})
    result = run()
    assert (result.loaded, result.quarantined) == (1, 1)
    [record] = manifest.objects("orders", state="quarantined")
    assert "primary key" in (record.error or "") and record.key == "in/d2/b.csv"


# -- versions, merges and types -------------------------------------------------------------------


def test_an_overwritten_key_loads_again_as_a_new_version_and_merges_on_the_key(
    s3: Any, bucket: str, run: Any, manifest: ObjectManifest, database_url: str, landing: str
) -> None:
    put_drop(s3, bucket, "d1", {"part-0.csv": orders_csv(range(1, 6))}, marker="_SUCCESS")
    first = run()
    [old] = manifest.objects("orders")
    assert (first.loaded, first.inserted) == (1, 5)

    # The producer re-sends the file: orders 3-5 corrected, 6-7 added.
    s3.put_object(Bucket=bucket, Key="in/d1/part-0.csv", Body=orders_csv(range(3, 8), amount=100.0))
    loads: list[ObjectLoad] = []
    second = run(on_object=lambda load, _: loads.append(load))

    assert second.registered == 1 and second.loaded == 1
    [load] = loads
    assert (load.inserted, load.updated, load.merged) == (2, 3, 1)
    versions = manifest.objects("orders", key="in/d1/part-0.csv")
    assert [r.state for r in versions] == ["loaded", "loaded"]
    new = versions[1]
    assert new.etag != old.etag
    rows = {
        r["id"]: r for object_rows in landed(database_url, landing).values() for r in object_rows
    }
    assert sorted(rows) == [1, 2, 3, 4, 5, 6, 7]  # one row per key
    assert {i: rows[i][OBJECT_ID_COLUMN] for i in rows} == {
        1: old.id,
        2: old.id,
        3: new.id,
        4: new.id,
        5: new.id,
        6: new.id,
        7: new.id,
    }
    assert rows[3]["amount"] == 103.0 and rows[1]["amount"] == 10.5


def test_a_key_twice_in_one_file_falls_back_to_the_merge_and_lands_once(
    s3: Any, bucket: str, run: Any, database_url: str, landing: str
) -> None:
    body = orders_csv([1, 2, 3, 2, 4])
    put_drop(s3, bucket, "d1", {"dupes.csv": body})
    loads: list[ObjectLoad] = []
    result = run(on_object=lambda load, _: loads.append(load))
    assert (result.loaded, result.rows) == (1, 5)
    [load] = loads
    assert (load.copied, load.merged, load.inserted) == (0, 1, 4)
    ids = sorted(r["id"] for rows in landed(database_url, landing).values() for r in rows)
    assert ids == [1, 2, 3, 4]


def test_an_object_overwritten_between_scan_and_load_is_quarantined_and_its_new_version_loads(
    s3: Any,
    bucket: str,
    run: Any,
    manifest: ObjectManifest,
    database_url: str,
    fresh_schema: str,
    landing: str,
) -> None:
    put_drop(s3, bucket, "d1", {"a.csv": orders_csv(range(1, 4))}, marker="_SUCCESS")

    def overwrite_after_scan(result: S3RunResult) -> None:
        if result.objects == 0 and not result.rows_in_progress:
            s3.put_object(Bucket=bucket, Key="in/d1/a.csv", Body=orders_csv(range(1, 5)))

    first = run(on_progress=overwrite_after_scan, max_objects=1)
    assert first.quarantined == 1
    [gone] = dead_letters(database_url, fresh_schema, "s3_file")
    assert gone["error_class"] == "ObjectChanged" and gone["payload"] is None
    second = run()
    assert (second.registered, second.loaded, second.rows) == (1, 1, 4)
    assert [r.state for r in manifest.objects("orders")] == ["quarantined", "loaded"]
    assert sum(len(v) for v in landed(database_url, landing).values()) == 4


def test_a_file_typed_unlike_the_table_lands_through_csv(
    s3: Any, bucket: str, run: Any, database_url: str, landing: str
) -> None:
    put_drop(s3, bucket, "d1", {"a.csv": b"id,amount\n1,1.5\n2,2.5\n"})
    put_drop(s3, bucket, "d2", {"b.csv": b"id,amount\n3,3\n4,4\n"})  # amounts read as int64
    result = run()
    assert (result.loaded, result.rows) == (2, 4)
    amounts = {r["id"]: r["amount"] for v in landed(database_url, landing).values() for r in v}
    assert amounts == {1: 1.5, 2: 2.5, 3: 3.0, 4: 4.0}


def _table_rows(database_url: str, landing: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s"
                " AND table_name = 'orders' AND column_name NOT IN (%s, '_ingested_at')"
                " ORDER BY column_name",
                (landing, OBJECT_ID_COLUMN),
            )
        ]
        query = sql.SQL("SELECT {} FROM {} ORDER BY order_id").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(landing, "orders")
        )
        return [tuple(r) for r in conn.execute(query)]


def test_every_strategy_and_copy_format_lands_the_same_rows(
    tmp_path: Path, s3: Any, bucket: str, database_url: str, landing: str
) -> None:
    write_s3(tmp_path, rows=300, customers=50, seed=5)
    for path in sorted((tmp_path / "drops").rglob("*")):
        if path.is_file():
            s3.upload_file(
                str(path), bucket, "in/" + path.relative_to(tmp_path / "drops").as_posix()
            )
    spec = S3SourceSpec.model_validate(
        {
            "name": "orders",
            "kind": "s3",
            "bucket": bucket,
            "prefix": "in/",
            "primary_key": ["order_id"],
            "max_bad_fraction": 0.2,
        }
    )
    tables = []
    for options in (
        {"strategy": "copy", "copy_format": "binary"},
        {"strategy": "copy", "copy_format": "csv"},
        {"strategy": "merge"},
    ):
        state = f"t_{uuid.uuid4().hex[:12]}"  # a manifest of its own: every object loads again
        migrate(database_url, schema=state)
        try:
            result = run_s3_source(
                spec,
                database_url=database_url,
                state_schema=state,
                landing_schema=landing,
                s3=s3,
                **options,
            )
            assert result.status == "succeeded" and result.rows > 200
            tables.append(_table_rows(database_url, landing))
        finally:
            with psycopg.connect(database_url, autocommit=True) as conn:
                for schema in (state, landing):
                    conn.execute(
                        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                    )
    assert tables[0] == tables[1] == tables[2]


def test_binary_copy_reads_back_as_the_csv_copy_does(database_url: str, landing: str) -> None:
    tz = "UTC"
    data = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "small": pa.array([-5, None, 7], pa.int8()),
            "unsigned": pa.array([0, 4_000_000_000, None], pa.uint32()),
            "ratio": pa.array([0.25, None, -1e300], pa.float32()).cast(pa.float64()),
            "single": pa.array([1.5, 2.0, None], pa.float32()),
            "flag": pa.array([True, None, False]),
            "day": pa.array([dt.date(1999, 12, 31), dt.date(2000, 1, 1), None]),
            "at_s": pa.array([0, None, 1_767_225_600], pa.timestamp("s", tz)),
            "at_ns": pa.array([1_400, 1_767_225_600_123_456_789, None], pa.timestamp("ns", tz)),
            "naive": pa.array([dt.datetime(2026, 1, 1, 12), None, dt.datetime(1970, 1, 1)]),
            "name": pa.array(["naïve café", "", None]),
            "doc": pa.array(['{"a": [1, 2]}', None, '"x"'], pa.string()),
        }
    )
    data = data.set_column(
        data.schema.get_field_index("doc"),
        pa.field("doc", pa.string(), metadata=JSONB),
        data.column("doc"),
    )
    results = []
    with connect(database_url, schema="public", autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        for fmt in ("binary", "csv"):
            table = LandingTable(landing, f"types_{fmt}", ("id",))
            with conn.transaction():
                writer = LandingWriter(conn, table)
                types = writer.prepare(data.schema)
                assert types == landing_types(data.schema)
                payload = encode_binary(data, types) if fmt == "binary" else [landing_csv(data)]
                assert payload is not None
                writer.write(data, fmt, payload)
                assert writer.copied == 1
            rows = conn.execute(
                sql.SQL("SELECT * FROM {} ORDER BY id").format(table.ident)
            ).fetchall()
            results.append([row[: len(data.schema)] for row in rows])
    assert results[0] == results[1]
    assert results[0][1][2] == 4_000_000_000 and results[0][0][10] == "naïve café"
    assert results[0][0][11] == {"a": [1, 2]}


def test_binary_encoding_declines_types_it_does_not_know() -> None:
    data = pa.table({"id": [1], "price": pa.array([1], pa.decimal128(5, 2))})
    assert encode_binary(data, landing_types(data.schema)) is None


# -- leases, failures, concurrency ----------------------------------------------------------------


def test_a_lease_taken_over_mid_load_lands_nothing_of_ours(
    s3: Any,
    bucket: str,
    run: Any,
    manifest: ObjectManifest,
    database_url: str,
    fresh_schema: str,
    landing: str,
) -> None:
    bad = {10: "11,short"}
    put_drop(s3, bucket, "d1", {"big.csv": orders_csv(range(1, 2001), bad=bad)})
    taken: list[ObjectRecord] = []

    def take_over(result: S3RunResult) -> None:
        # After the first chunk: the lease "expires" (a stalled worker) and a rescuer claims.
        if result.rows_in_progress and not taken:
            with connect(database_url, schema=fresh_schema, autocommit=True) as conn:
                conn.execute("UPDATE s3_objects SET lease_expires_at = now() - interval '1 s'")
            taken.extend(manifest.claim("orders", "rescuer", lease_seconds=600))

    result = run(on_progress=take_over, chunk_rows=500, max_bad_fraction=0.01)

    assert (result.lost, result.loaded, result.status) == (1, 0, "succeeded")
    [record] = manifest.objects("orders")
    assert (record.state, record.lease_owner, record.attempts) == ("loading", "rescuer", 2)
    assert landed(database_url, landing) == {}  # not a row, not even the table
    assert dead_letters(database_url, fresh_schema, "s3_row") == []


def test_the_heartbeat_keeps_the_lease_and_notices_a_takeover(
    manifest: ObjectManifest, database_url: str, fresh_schema: str
) -> None:
    from ingest.s3.manifest import ObjectInfo

    manifest.register("src", "d1", [ObjectInfo("b", "in/d1/a.csv", 1, "0" * 32)])
    [record] = manifest.claim("src", "me", lease_seconds=1)
    with LeaseHeartbeat(manifest, record.id, "me", lease_seconds=1, interval=0.1) as beat:
        time.sleep(1.5)  # longer than the lease: only the heartbeat keeps it
        assert manifest.claim("src", "other") == []
        beat.check()
        # Another worker takes it over (as claim does once a lease has expired).
        with connect(database_url, schema=fresh_schema, autocommit=True) as conn:
            conn.execute("UPDATE s3_objects SET lease_owner = 'other', attempts = attempts + 1")
        deadline = time.monotonic() + 10
        while beat.lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(LeaseLost):
            beat.check()
    assert beat.renewals >= 5


class _BreakingBody:
    """A body whose connection drops after the first read, as a stalled download does."""

    def __init__(self, body: Any) -> None:
        self._body = body
        self._reads = 0

    def read(self, amount: int | None = None) -> bytes:
        self._reads += 1
        if self._reads > 1:
            raise ReadTimeoutError(endpoint_url="http://s3.test")
        return self._body.read(min(amount or 100, 100))

    def close(self) -> None:
        self._body.close()


class _FlakyS3:
    """A real client whose object bodies break mid-read."""

    def __init__(self, s3: Any) -> None:
        self._s3 = s3

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    def get_object(self, **kwargs: Any) -> Any:
        answer = self._s3.get_object(**kwargs)
        if not kwargs["Key"].endswith(".json"):
            answer["Body"] = _BreakingBody(answer["Body"])
        return answer


def test_a_read_that_breaks_fails_the_attempt_and_the_next_run_loads_the_object(
    s3: Any, bucket: str, run: Any, manifest: ObjectManifest, database_url: str, landing: str
) -> None:
    put_drop(s3, bucket, "d1", {"orders.csv": orders_csv(range(1, 301))})
    broken = run(s3=_FlakyS3(s3), max_objects=1)
    assert (broken.status, broken.failed, broken.quarantined) == ("failed", 1, 0)
    assert broken.error is not None and "ConnectError" in broken.error
    [record] = manifest.objects("orders")
    assert record.state == "failed" and "ConnectError" in (record.error or "")
    assert landed(database_url, landing) == {}

    fixed = run()
    assert (fixed.status, fixed.loaded, fixed.rows) == ("succeeded", 1, 300)
    [record] = manifest.objects("orders")
    assert (record.state, record.attempts) == ("loaded", 2)


def test_loaders_in_parallel_load_each_object_once(
    s3: Any, bucket: str, run: Any, manifest: ObjectManifest, database_url: str, landing: str
) -> None:
    for d in range(4):
        files = {
            f"part-{i}.csv": orders_csv(range(1000 * (10 * d + i), 1000 * (10 * d + i) + 50))
            for i in range(10)
        }
        put_drop(s3, bucket, f"d{d}", files)
    results: list[S3RunResult] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker() -> None:
        try:
            start.wait()  # all of them on the empty landing table at once
            results.append(run())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.loaded for r in results) == 40 and all(r.failed == r.lost == 0 for r in results)
    records = manifest.objects("orders")
    assert Counter(r.state for r in records) == {"loaded": 40}
    assert all(r.attempts == 1 for r in records)
    rows = landed(database_url, landing)
    assert {r.id: len(rows[r.id]) for r in records} == {r.id: 50 for r in records}


# -- the run --------------------------------------------------------------------------------------


def test_a_run_is_recorded_in_the_load_log(
    s3: Any, bucket: str, run: Any, database_url: str, fresh_schema: str
) -> None:
    put_drop(s3, bucket, "d1", {"a.csv": orders_csv(range(1, 11))})
    s3.put_object(Bucket=bucket, Key="in/d2/a.csv", Body=orders_csv(range(20, 25)))  # no marker
    result = run()
    with connect(database_url, schema=fresh_schema) as conn:
        status, rows, detail = conn.execute(
            "SELECT status, rows_loaded, detail FROM load_log WHERE run_id = %s", (result.run_id,)
        ).fetchone() or (None, None, None)
    assert (status, rows) == ("succeeded", 10)
    assert detail["loaded"] == 1 and detail["drops_waiting"] == 1 and detail["drops_ready"] == 1


def test_an_interrupted_run_hands_its_object_back_and_is_recorded(
    s3: Any,
    bucket: str,
    run: Any,
    manifest: ObjectManifest,
    database_url: str,
    fresh_schema: str,
    landing: str,
) -> None:
    put_drop(s3, bucket, "d1", {"a.csv": orders_csv(range(1, 3000))})

    def interrupt(result: S3RunResult) -> None:
        if result.rows_in_progress:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(on_progress=interrupt, chunk_rows=500)
    [record] = manifest.objects("orders")
    assert (record.state, record.attempts, record.lease_owner) == ("discovered", 0, None)
    assert landed(database_url, landing) == {}
    with connect(database_url, schema=fresh_schema) as conn:
        [(status, detail)] = conn.execute("SELECT status, detail FROM load_log").fetchall()
    assert status == "failed" and detail["error"] == "interrupted (KeyboardInterrupt)"


def test_a_missing_bucket_is_a_configuration_error(
    database_url: str, fresh_schema: str, landing: str, s3: Any
) -> None:
    spec = S3SourceSpec.model_validate(
        {"name": "orders", "kind": "s3", "bucket": "no-such-bucket-here", "primary_key": ["id"]}
    )
    with pytest.raises(ConfigError):
        run_s3_source(
            spec,
            database_url=database_url,
            state_schema=fresh_schema,
            landing_schema=landing,
            s3=s3,
        )


def test_the_module_exports_its_public_names() -> None:
    assert set(loader_module.__all__) >= {
        "run_s3_source",
        "S3Loader",
        "S3RunResult",
        "ObjectLoad",
        "LandingWriter",
        "LeaseHeartbeat",
        "landing_chunks",
        "encode_binary",
        "dead_letter_rows",
    }
    assert all(hasattr(loader_module, name) for name in loader_module.__all__)
