"""Module 02 acceptance: S3 drops land exactly once through a SIGKILL, and with two ingesters.

Everything is real: a moto S3 server, PostgreSQL, and `ingest run` as separate processes, one of
them killed with SIGKILL in the middle of an object.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml
from psycopg import sql

from ingest.state.migrate import migrate
from tests.s3.test_loader import empty_and_delete, s3_client
from tests.support.cli import ingest

FORMATS = ("csv", "csv.gz", "parquet", "ndjson")


@dataclass
class Drops:
    """What was uploaded, and what a loader must make of it."""

    rows: dict[str, int] = field(default_factory=dict)  # good objects: key → rows
    corrupt: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # drop ids that are not complete
    big: str = ""  # the object the ingester is killed in


def _orders(first: int, count: int) -> pa.Table:
    ids = np.arange(first, first + count, dtype=np.int64)
    return pa.table(
        {
            "id": ids,
            "customer": pa.array(ids % 997),
            "amount": pa.array(np.round(ids * 0.37 % 500, 2)),
            "status": pa.array(np.where(ids % 3 == 0, "paid", "shipped")),
            "created_at": pa.array(
                np.datetime64("2026-01-01T00:00:00", "s") + (ids * 7).astype("timedelta64[s]"),
                pa.timestamp("s", tz="UTC"),
            ),
        }
    )


def _encode(table: pa.Table, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt in ("csv", "csv.gz"):
        pacsv.write_csv(table, out)
        return gzip.compress(out.getvalue(), mtime=0) if fmt == "csv.gz" else out.getvalue()
    if fmt == "parquet":
        pq.write_table(table, out)
        return out.getvalue()
    rows = table.to_pylist()
    return b"".join(orjson.dumps(r, option=orjson.OPT_NAIVE_UTC) + b"\n" for r in rows)


def _corrupt(fmt: str, body: bytes) -> bytes:
    if fmt == "csv.gz":
        return body[: len(body) // 2]  # a gzip stream cut in half
    footer = int.from_bytes(body[-8:-4], "little")
    return body[: len(body) - 8 - footer]  # a Parquet file without its footer


def upload_drops(
    s3: Any,
    bucket: str,
    *,
    drops: int,
    files: int,
    rows: int,
    corrupt: set[tuple[int, int]] = frozenset(),  # type: ignore[assignment]
    incomplete: int | None = None,
    big: tuple[int, int, int] | None = None,  # (drop, file, rows)
) -> Drops:
    """``drops`` drops of ``files`` files each under ``drops/``, each announced by a manifest.

    ``corrupt`` files are cut (gzip) or lose their footer (Parquet); the ``incomplete`` drop's
    manifest lists a file whose upload is cut short, so the drop never checks out.
    """
    expected = Drops()
    next_id = 1
    for d in range(drops):
        drop_id = f"20260101T{d:02d}0000Z"
        entries = []
        for i in range(files):
            fmt = ("csv.gz", "parquet")[i % 2] if (d, i) in corrupt else FORMATS[i % 4]
            count = big[2] if big and (d, i) == big[:2] else rows
            key = f"drops/{drop_id}/part-{i:03d}.{fmt}"
            body = _encode(_orders(next_id, count), fmt)
            next_id += count
            if (d, i) in corrupt:
                body = _corrupt(fmt, body)
                expected.corrupt.append(key)
            elif d != incomplete:
                expected.rows[key] = count
            if big and (d, i) == big[:2]:
                expected.big = key
            entries.append(
                {
                    "key": key.rsplit("/", 1)[1],
                    "size": len(body),
                    "md5": hashlib.md5(body).hexdigest(),
                    "rows": count,
                }
            )
            if d == incomplete and i == files // 2:
                body = body[: len(body) // 2]  # still uploading when the manifest went up
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        manifest = {"drop_id": drop_id, "files": entries}
        s3.put_object(
            Bucket=bucket, Key=f"drops/{drop_id}/_manifest.json", Body=json.dumps(manifest)
        )
        if d == incomplete:
            expected.waiting.append(drop_id)
    return expected


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def bucket(s3_endpoint_url: str) -> Iterator[str]:
    s3 = s3_client(s3_endpoint_url)
    name = f"t-accept-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    yield name
    empty_and_delete(s3, name)


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> Iterator[dict[str, str]]:
    run = uuid.uuid4().hex[:10]
    environ = dict(os.environ)
    environ.update(
        INGEST_DB_SCHEMA=f"t_{run}",
        INGEST_LANDING_SCHEMA=f"t_{run}_landing",
        INGEST_SOURCES_DIR=str(tmp_path / "sources"),
    )
    (tmp_path / "sources").mkdir()
    migrate(database_url, schema=environ["INGEST_DB_SCHEMA"])
    yield environ
    with psycopg.connect(database_url, autocommit=True) as conn:
        for key in ("INGEST_DB_SCHEMA", "INGEST_LANDING_SCHEMA"):
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(environ[key]))
            )


def _write_source(env: dict[str, str], bucket: str, **fields: Any) -> None:
    source = {
        "name": "orders",
        "kind": "s3",
        "bucket": bucket,
        "prefix": "drops/",
        "primary_key": ["id"],
        **fields,
    }
    Path(env["INGEST_SOURCES_DIR"], "orders.yaml").write_text(yaml.safe_dump(source))


def _query(env: dict[str, str], query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(env["INGEST_DATABASE_URL"]) as conn:
        conn.execute(
            sql.SQL("SET search_path TO {}").format(sql.Identifier(env["INGEST_DB_SCHEMA"]))
        )
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def _objects(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    rows = _query(
        env,
        "SELECT key, id, state, rows, attempts, error, lease_expires_at > now() FROM s3_objects",
    )
    return {
        r[0]: {
            "id": r[1],
            "state": r[2],
            "rows": r[3],
            "attempts": r[4],
            "error": r[5],
            "leased": r[6],
        }
        for r in rows
    }


def _landed(env: dict[str, str]) -> tuple[int, int, dict[int, int]]:
    """Rows in the landing table, distinct keys, and rows per s3 object."""
    table = f"{env['INGEST_LANDING_SCHEMA']}.orders"
    if _query(env, "SELECT to_regclass(%s)", table)[0][0] is None:
        return 0, 0, {}
    ident = sql.Identifier(env["INGEST_LANDING_SCHEMA"], "orders")
    with psycopg.connect(env["INGEST_DATABASE_URL"]) as conn:
        total, distinct = conn.execute(
            sql.SQL("SELECT count(*), count(DISTINCT id) FROM {}").format(ident)
        ).fetchone() or (0, 0)
        per_object = dict(
            conn.execute(
                sql.SQL("SELECT _s3_object_id, count(*) FROM {} GROUP BY 1").format(ident)
            ).fetchall()
        )
    return int(total), int(distinct), {int(k): int(v) for k, v in per_object.items()}


def _wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- the acceptance scenario ----------------------------------------------------------------------


def test_200_objects_through_a_sigkill_land_exactly_once(
    env: dict[str, str], bucket: str, s3_endpoint_url: str
) -> None:
    corrupt = {(0, 3), (1, 6), (2, 1), (3, 9), (5, 14), (6, 2), (7, 17), (8, 5), (9, 10), (9, 19)}
    drops = upload_drops(
        s3_client(s3_endpoint_url),
        bucket,
        drops=10,
        files=20,
        rows=300,
        corrupt=corrupt,  # 5% of the 200 objects
        incomplete=4,
        big=(6, 0, 250_000),  # a file long enough to be killed in
    )
    assert len(drops.rows) + len(drops.corrupt) + 20 == 200
    _write_source(env, bucket, lease_seconds=2)

    killed = subprocess.Popen(
        [sys.executable, "-m", "ingest", "run", "orders"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(
            lambda: _objects(env).get(drops.big, {}).get("state") == "loading",
            timeout=120,
            what="the big object to be loading",
        )
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10)
    finally:
        if killed.poll() is None:
            killed.kill()

    objects = _objects(env)
    loaded_before = [k for k, o in objects.items() if o["state"] == "loaded"]
    assert 50 <= len(loaded_before) < len(drops.rows), "the kill did not land mid-run"
    assert objects[drops.big]["state"] == "loading"
    assert objects[drops.big]["id"] not in _landed(env)[2]  # its rows died with the process

    # The dead worker's lease runs out (it renews no more); then the re-run takes the object over.
    _wait_for(lambda: not _objects(env)[drops.big]["leased"], timeout=30, what="the lease")
    rerun = ingest("run", "orders", env=env)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "succeeded" in rerun.stdout
    reported = " ".join(rerun.stderr.split())
    before = _objects(env)
    for key in drops.corrupt:  # the re-run reports those it quarantined itself
        if before[key]["id"] > before[drops.big]["id"]:
            assert f"orders: quarantined {key}:" in reported

    objects = _objects(env)
    total, distinct, per_object = _landed(env)
    for key, rows in drops.rows.items():
        record = objects[key]
        assert (record["state"], record["rows"]) == ("loaded", rows), key
        assert per_object[record["id"]] == rows, key
        # Each claim is an attempt: one for every object, two for the one killed mid-load.
        assert record["attempts"] == (2 if key == drops.big else 1), key
    assert total == distinct == sum(drops.rows.values())
    for key in drops.corrupt:
        assert objects[key]["state"] == "quarantined" and objects[key]["error"], key
        assert objects[key]["id"] not in per_object
    letters = _query(env, "SELECT context->>'key', reason FROM dead_letters WHERE kind = 's3_file'")
    assert sorted(k for k, _ in letters) == sorted(drops.corrupt)
    assert all(reason for _, reason in letters)

    [waiting] = drops.waiting
    assert not any(f"/{waiting}/" in key for key in objects)  # never registered
    [(since, problems)] = _query(
        env, "SELECT waiting_since, problems FROM s3_drops WHERE drop_id = %s", waiting
    )
    assert since is not None and problems["wrong_size"]
    assert len(objects) == len(drops.rows) + len(drops.corrupt)


def test_two_ingesters_on_one_bucket_never_load_an_object_twice(
    env: dict[str, str], bucket: str, s3_endpoint_url: str
) -> None:
    drops = upload_drops(s3_client(s3_endpoint_url), bucket, drops=4, files=15, rows=2000)
    _write_source(env, bucket)
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "ingest", "run", "orders"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (stdout, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stdout + stderr

    objects = _objects(env)
    assert len(objects) == len(drops.rows) == 60
    assert all(o["state"] == "loaded" and o["attempts"] == 1 for o in objects.values())
    runs = _query(env, "SELECT status, detail FROM load_log WHERE source = 'orders'")
    assert [status for status, _ in runs] == ["succeeded", "succeeded"]
    assert sum(detail["loaded"] for _, detail in runs) == 60  # each object counted by one run
    assert sum(detail["rows"] for _, detail in runs) == sum(drops.rows.values())
    total, distinct, per_object = _landed(env)
    assert total == distinct == sum(drops.rows.values())
    assert {objects[k]["id"]: n for k, n in drops.rows.items()} == per_object
