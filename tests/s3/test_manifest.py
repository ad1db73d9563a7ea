"""S3 drops and the object manifest: listing, readiness, the overdue report, claims and leases.

Against the session's real S3 (moto server) and PostgreSQL; every test has its own bucket and schema.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest

from ingest.datagen.s3 import write_s3
from ingest.errors import ConfigError, DataError
from ingest.s3 import manifest as manifest_module
from ingest.s3.manifest import (
    MANIFEST_NAME,
    STATES,
    SUCCESS_NAME,
    DropLog,
    DropManifest,
    LeaseLost,
    ObjectChanged,
    ObjectInfo,
    ObjectManifest,
    check_drop,
    discover_drops,
    drop_id_of,
    group_drops,
    is_data_name,
    list_objects,
    open_object,
    parse_manifest,
    scan_drops,
    worker_id,
)
from ingest.state.db import connect

START = datetime(2026, 1, 1, 6, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def md5(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()


def info(key: str, body: bytes = b"x", *, etag: str | None = None, bucket: str = "b") -> ObjectInfo:
    return ObjectInfo(bucket, key, len(body), etag or md5(body))


def manifest_json(files: dict[str, bytes], drop_id: str = "d1") -> bytes:
    entries = [
        {
            "key": name,
            "format": "csv",
            "compression": None,
            "rows": body.count(b"\n"),
            "size": len(body),
            "md5": md5(body),
        }
        for name, body in files.items()
    ]
    return json.dumps({"drop_id": drop_id, "created_at": None, "files": entries}).encode()


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def s3(s3_endpoint_url: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _empty_and_delete(s3: Any, bucket: str) -> None:
    while True:  # one page at a time, listed afresh, until nothing is left
        page = s3.list_object_versions(Bucket=bucket)
        items = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
        if not items:
            break
        objects = [{"Key": i["Key"], "VersionId": i["VersionId"]} for i in items]
        s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
    s3.delete_bucket(Bucket=bucket)


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    name = f"t-manifest-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    yield name
    _empty_and_delete(s3, name)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(database_url: str, fresh_schema: str, clock: FakeClock) -> ObjectManifest:
    return ObjectManifest(database_url, schema=fresh_schema, clock=clock)


@pytest.fixture(scope="module")
def datagen_drops(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("s3")
    return out, write_s3(out, rows=200, customers=200, seed=0)


def put(s3: Any, bucket: str, key: str, body: bytes) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body)


# -- listing --------------------------------------------------------------------------------------


def test_list_objects_follows_every_page(s3: Any, bucket: str) -> None:
    keys = [f"in/{i:03d}.csv" for i in range(30)]
    for key in [*keys, "out/other.csv", "inbox.csv"]:
        put(s3, bucket, key, key.encode())
    calls: list[str] = []
    s3.meta.events.register("before-call.s3.ListObjectsV2", lambda **kw: calls.append("list"))

    listed = list(list_objects(s3, bucket, "in/", page_size=7))

    assert [o.key for o in listed] == keys
    assert len(calls) == 5  # 7 + 7 + 7 + 7 + 2
    first = listed[0]
    assert (first.bucket, first.size, first.etag) == (bucket, 10, md5(b"in/000.csv"))
    assert first.version == first.etag and first.version_id is None


def test_list_versions_gives_the_current_version_of_live_keys(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    put(s3, bucket, "v/a.csv", b"first")
    second = s3.put_object(Bucket=bucket, Key="v/a.csv", Body=b"second")
    put(s3, bucket, "v/b.csv", b"deleted")
    s3.delete_object(Bucket=bucket, Key="v/b.csv")

    [current] = list(list_objects(s3, bucket, "v/", versions=True))

    assert (current.key, current.etag) == ("v/a.csv", md5(b"second"))
    assert current.version == current.version_id == second["VersionId"]


def test_a_missing_bucket_is_a_configuration_error(s3: Any) -> None:
    with pytest.raises(ConfigError, match="NoSuchBucket"):
        list(list_objects(s3, f"t-missing-{uuid.uuid4().hex[:12]}", ""))


def test_version_is_the_version_id_else_the_etag() -> None:
    etag = md5(b"x")
    assert ObjectInfo("b", "k", 1, etag).version == etag
    # Objects written while versioning was off all have VersionId "null", overwritten or not.
    assert ObjectInfo("b", "k", 1, etag, version_id="null").version == etag
    assert (
        ObjectInfo("b", "k", 1, etag, version_id="3HL4kqtJlcpXroDTDmJ").version
        == "3HL4kqtJlcpXroDTDmJ"
    )
    assert ObjectInfo("b", "k", 1, etag).md5 == etag
    assert ObjectInfo("b", "k", 1, f"{etag}-3").md5 is None  # multipart: no MD5 of the content


# -- grouping and manifests -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "drop_id"),
    [
        ("drops/d1/a.csv", "d1"),
        ("drops/d1/nested/a.csv", "d1"),
        ("drops/top-level.csv", None),  # directly under the prefix: no drop
        ("drops/d1/", None),  # a folder placeholder
        ("other/d1/a.csv", None),
    ],
)
def test_drop_id_is_the_segment_after_the_prefix(key: str, drop_id: str | None) -> None:
    assert drop_id_of(key, "drops/") == drop_id
    assert drop_id_of(key, "drops") == drop_id  # the trailing slash is implied


def test_group_drops_orders_drops_by_id() -> None:
    objects = [info("p/d2/a"), info("p/d1/b"), info("p/d1/a"), info("p/loose")]
    grouped = group_drops(objects, "p/")
    assert list(grouped) == ["d1", "d2"]
    assert [o.key for o in grouped["d1"]] == ["p/d1/b", "p/d1/a"]


def test_markers_and_hidden_files_are_not_data() -> None:
    assert is_data_name("part-00000.parquet")
    assert not is_data_name(SUCCESS_NAME)
    assert not is_data_name(MANIFEST_NAME)
    assert not is_data_name("sub/.part-00000.crc")


def test_parse_manifest_reads_what_datagen_writes(
    datagen_drops: tuple[Path, dict[str, Any]],
) -> None:
    out, expected = datagen_drops
    drop = expected["drops"][0]
    raw = json.loads((out / drop["prefix"] / MANIFEST_NAME).read_text())

    manifest = parse_manifest((out / drop["prefix"] / MANIFEST_NAME).read_bytes())

    assert manifest.drop_id == drop["drop_id"] and manifest.created_at == raw["created_at"]
    assert [f.key for f in manifest.files] == [f["key"].rsplit("/", 1)[1] for f in drop["files"]]
    assert [f.rows for f in manifest.files] == [f["rows"] for f in drop["files"]]
    for entry, written in zip(manifest.files, raw["files"], strict=True):
        assert (entry.size, entry.md5, entry.format, entry.compression) == (
            written["size"],
            written["md5"],
            written["format"],
            written["compression"],
        )
    assert manifest.to_json() == raw
    assert manifest.entry(raw["files"][1]["key"]) == manifest.files[1]
    assert manifest.entry("nope.csv") is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "'files' list"),
        (b'{"files": {}}', "'files' list"),
        (b'{"files": ["a.csv"]}', "must be an object"),
        (b'{"files": [{"size": 1}]}', "'key'"),
        (b'{"files": [{"key": "../x.csv", "size": 1}]}', "inside the drop"),
        (b'{"files": [{"key": "/x.csv", "size": 1}]}', "inside the drop"),
        (b'{"files": [{"key": "a.csv", "size": -1}]}', "'size'"),
        (b'{"files": [{"key": "a.csv", "size": "12"}]}', "'size'"),
        (b'{"files": [{"key": "a.csv", "size": true}]}', "'size'"),
        (b'{"files": [{"key": "a.csv", "size": 1, "rows": "3"}]}', "'rows'"),
        (b'{"files": [{"key": "a.csv", "size": 1, "md5": "abc"}]}', "'md5'"),
        (b'{"files": [{"key": "a.csv", "size": 1}, {"key": "a.csv", "size": 1}]}', "twice"),
    ],
)
def test_parse_manifest_refuses_what_it_cannot_rely_on(body: bytes, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_manifest(body)


# -- readiness (no I/O) ---------------------------------------------------------------------------

FILES = {"a.csv": b"id\n1\n", "b.csv": b"id\n2\n3\n"}


def _listing(files: dict[str, bytes], *, marker: bytes | None = None) -> list[ObjectInfo]:
    objects = [info(f"p/d1/{name}", body) for name, body in files.items()]
    if marker is not None:
        objects.append(info(f"p/d1/{MANIFEST_NAME}", marker))
    return objects


def test_a_drop_whose_manifest_checks_out_is_ready() -> None:
    raw = manifest_json(FILES)
    status = check_drop("d1", "p/d1/", _listing(FILES, marker=raw), parse_manifest(raw))
    assert status.ready and status.marker == MANIFEST_NAME
    assert [o.key for o in status.objects] == ["p/d1/a.csv", "p/d1/b.csv"]
    assert status.problems == {} and status.reason == f"ready ({MANIFEST_NAME})"


def test_a_listed_file_not_there_keeps_the_drop_waiting() -> None:
    raw = manifest_json(FILES)
    status = check_drop(
        "d1", "p/d1/", _listing({"a.csv": FILES["a.csv"]}, marker=raw), parse_manifest(raw)
    )
    assert not status.ready
    assert status.missing == ("p/d1/b.csv",)
    assert [o.key for o in status.objects] == ["p/d1/a.csv"]
    assert status.reason == "missing: b.csv"


def test_a_file_of_the_wrong_size_keeps_the_drop_waiting() -> None:
    raw = manifest_json(FILES)
    half = {**FILES, "b.csv": FILES["b.csv"][:3]}
    status = check_drop("d1", "p/d1/", _listing(half, marker=raw), parse_manifest(raw))
    assert not status.ready
    assert status.wrong_size == ("p/d1/b.csv",) and status.missing == ()
    assert status.reason == "wrong size: b.csv"


def test_same_size_other_bytes_is_a_wrong_checksum_unless_not_verified() -> None:
    raw = manifest_json(FILES)
    swapped = {**FILES, "b.csv": b"id\n9\n9\n"}
    status = check_drop("d1", "p/d1/", _listing(swapped, marker=raw), parse_manifest(raw))
    assert not status.ready and status.wrong_checksum == ("p/d1/b.csv",)
    unverified = check_drop(
        "d1", "p/d1/", _listing(swapped, marker=raw), parse_manifest(raw), verify_md5=False
    )
    assert unverified.ready


def test_a_multipart_etag_is_not_taken_for_an_md5() -> None:
    raw = manifest_json(FILES)
    objects = _listing(FILES, marker=raw)
    objects[1] = info("p/d1/b.csv", FILES["b.csv"], etag=f"{md5(b'parts')}-2")
    assert check_drop("d1", "p/d1/", objects, parse_manifest(raw)).ready


def test_files_the_manifest_does_not_list_are_reported_not_loaded() -> None:
    raw = manifest_json(FILES)
    objects = [*_listing(FILES, marker=raw), info("p/d1/stray.csv")]
    status = check_drop("d1", "p/d1/", objects, parse_manifest(raw))
    assert status.ready and status.unlisted == ("p/d1/stray.csv",)
    assert "p/d1/stray.csv" not in [o.key for o in status.objects]


def test_a_success_marker_makes_every_data_file_the_drop() -> None:
    objects = [
        info("p/d1/part-0.parquet"),
        info("p/d1/part-1.parquet"),
        info("p/d1/.part-0.parquet.crc"),
        info(f"p/d1/{SUCCESS_NAME}", b""),
    ]
    status = check_drop("d1", "p/d1/", objects)
    assert status.ready and status.marker == SUCCESS_NAME
    assert [o.key for o in status.objects] == ["p/d1/part-0.parquet", "p/d1/part-1.parquet"]


def test_a_drop_without_a_marker_is_still_being_written() -> None:
    status = check_drop("d1", "p/d1/", _listing(FILES))
    assert not status.ready and status.marker is None
    assert status.reason == f"no {MANIFEST_NAME} or {SUCCESS_NAME} yet"


def test_a_manifest_that_could_not_be_read_keeps_the_drop_waiting() -> None:
    objects = [*_listing(FILES, marker=b"{oops"), info(f"p/d1/{SUCCESS_NAME}", b"")]
    status = check_drop("d1", "p/d1/", objects, manifest_error="manifest is not JSON")
    assert not status.ready and status.objects == ()
    assert status.problems == {"error": "manifest is not JSON"}


# -- discovery against S3 -------------------------------------------------------------------------


def _upload_tree(s3: Any, bucket: str, root: Path, prefix: str) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != "expected.json":
            s3.upload_file(str(path), bucket, prefix + path.relative_to(root).as_posix())


def test_datagen_drops_are_ready_exactly_as_expected_json_says(
    s3: Any, bucket: str, datagen_drops: tuple[Path, dict[str, Any]]
) -> None:
    out, expected = datagen_drops
    _upload_tree(s3, bucket, out, "landing/")

    statuses = discover_drops(s3, bucket, "landing/drops/")

    assert [s.drop_id for s in statuses] == [d["drop_id"] for d in expected["drops"]]
    for status, drop in zip(statuses, expected["drops"], strict=True):
        assert status.ready == drop["complete"], status.reason
        assert status.marker == (MANIFEST_NAME if drop["marker"] == "manifest" else SUCCESS_NAME)
        kinds = {
            "missing": "missing",
            "size_mismatch": "wrong_size",
            "md5_mismatch": "wrong_checksum",
        }
        wanted = {kinds[p["problem"]]: ["landing/" + p["key"]] for p in drop["problems"]}
        assert {k: v for k, v in status.problems.items() if k != "unlisted"} == wanted
        if drop["complete"]:
            assert [o.key for o in status.objects] == ["landing/" + f["key"] for f in drop["files"]]
    assert sum(s.ready for s in statuses) == expected["totals"]["complete_drops"]


def test_discover_keeps_a_drop_with_an_unreadable_manifest_waiting(s3: Any, bucket: str) -> None:
    put(s3, bucket, "in/d1/a.csv", b"id\n1\n")
    put(s3, bucket, f"in/d1/{MANIFEST_NAME}", b'{"files": [{"key": "a.csv"}]}')
    [status] = discover_drops(s3, bucket, "in/")
    assert not status.ready and status.error is not None and "'size'" in status.error


# -- the drop log: waiting and overdue ------------------------------------------------------------


def test_overdue_is_flagged_on_every_scan_and_reported_once_across_runs(
    database_url: str, fresh_schema: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ingest.s3.manifest")
    waiting = check_drop("d1", "p/d1/", _listing({"a.csv": b"1"}))
    hour = timedelta(hours=1)
    first_run = DropLog(database_url, schema=fresh_schema, clock=clock)

    [status] = first_run.track("src", "b", [waiting], overdue_after=hour)
    assert (status.waiting_since, status.overdue) == (START, False)
    clock.advance(minutes=59)
    [status] = first_run.track("src", "b", [waiting], overdue_after=hour)
    assert (status.waiting_since, status.overdue) == (START, False)
    assert caplog.records == []

    clock.advance(minutes=2)
    [status] = first_run.track("src", "b", [waiting], overdue_after=hour)
    assert status.overdue
    [record] = caplog.records
    assert (
        record.levelno == logging.WARNING
        and "S3 drop d1 of source src has waited 1:01:00" in record.message
    )

    # Another process, later: the same first-seen time, still overdue, not reported again.
    clock.advance(hours=2)
    second_run = DropLog(database_url, schema=fresh_schema, clock=clock)
    [status] = second_run.track("src", "b", [waiting], overdue_after=hour)
    assert (status.waiting_since, status.overdue) == (START, True)
    assert len(caplog.records) == 1
    [row] = second_run.drops("src", waiting_only=True)
    assert row.overdue_at == START + timedelta(minutes=61) and row.first_seen_at == START

    clock.advance(minutes=5)
    ready = check_drop("d1", "p/d1/", [info("p/d1/a.csv", b"1"), info(f"p/d1/{SUCCESS_NAME}", b"")])
    [status] = second_run.track("src", "b", [ready], overdue_after=hour)
    assert (status.waiting_since, status.overdue) == (None, False)
    assert second_run.drops("src", waiting_only=True) == []
    [row] = second_run.drops("src")
    assert (row.ready_at, row.overdue_at, row.marker) == (clock(), None, SUCCESS_NAME)


def test_the_drop_log_keeps_the_manifest_for_the_loader(
    database_url: str, fresh_schema: str, clock: FakeClock
) -> None:
    raw = manifest_json(FILES)
    status = check_drop("d1", "p/d1/", _listing(FILES, marker=raw), parse_manifest(raw))
    log = DropLog(database_url, schema=fresh_schema, clock=clock)
    log.track("src", "b", [status])
    assert log.manifest_of("src", "b", "d1") == parse_manifest(raw)
    assert log.manifest_of("src", "b", "unknown") is None


def test_an_injected_clock_must_be_timezone_aware(database_url: str, fresh_schema: str) -> None:
    naive = ObjectManifest(database_url, schema=fresh_schema, clock=lambda: datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        naive.register("src", None, [info("k")])


# -- registering versions -------------------------------------------------------------------------


def test_registering_is_idempotent_and_a_new_etag_is_a_new_version(store: ObjectManifest) -> None:
    objects = [info("p/d1/a.csv", b"a"), info("p/d1/b.csv", b"b")]
    assert store.register("src", "d1", objects) == 2
    assert store.register("src", "d1", objects) == 0
    assert store.register("src", "d1", []) == 0

    assert store.register("src", "d1", [info("p/d1/a.csv", b"a, corrected")]) == 1

    rows = store.objects("src", key="p/d1/a.csv")
    assert [r.version for r in rows] == [md5(b"a"), md5(b"a, corrected")]
    assert all(r.state == "discovered" and r.drop_id == "d1" and r.attempts == 0 for r in rows)
    assert rows[0].discovered_at == START
    assert store.summary("src") == {s: (3 if s == "discovered" else 0) for s in STATES}
    assert store.summary("other") == dict.fromkeys(STATES, 0)


def test_a_version_id_is_the_version_in_a_versioned_bucket(store: ObjectManifest) -> None:
    etag = md5(b"same bytes")
    first = ObjectInfo("b", "k.csv", 10, etag, version_id="v1")
    again = ObjectInfo("b", "k.csv", 10, etag, version_id="v2")  # re-uploaded, identical bytes
    assert store.register("src", None, [first, again]) == 2
    assert [r.version for r in store.objects("src")] == ["v1", "v2"]


# -- claims and leases ----------------------------------------------------------------------------


def _land(conn: psycopg.Connection[Any], store: ObjectManifest, id: int, owner: str) -> None:
    conn.execute("INSERT INTO landed (object_id, worker) VALUES (%s, %s)", (id, owner))
    store.mark_loaded(conn, id, owner, rows=7, bad_rows=1)


@pytest.fixture
def landed(database_url: str, fresh_schema: str) -> None:
    with connect(database_url, schema=fresh_schema) as conn:
        conn.execute("CREATE TABLE landed (object_id bigint NOT NULL, worker text NOT NULL)")
        conn.commit()


def _landed(database_url: str, schema: str) -> list[tuple[int, str]]:
    with connect(database_url, schema=schema) as conn:
        return [(int(i), str(w)) for i, w in conn.execute("SELECT object_id, worker FROM landed")]


@pytest.mark.usefixtures("landed")
def test_claims_are_exclusive_across_concurrent_workers(
    database_url: str, fresh_schema: str
) -> None:
    # The database's clock, no injected one: what production runs with.
    setup = ObjectManifest(database_url, schema=fresh_schema)
    setup.register("src", "d1", [info(f"p/d1/{i:03d}.csv", str(i).encode()) for i in range(120)])
    claimed: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def work(name: str) -> None:
        store = ObjectManifest(database_url, schema=fresh_schema)  # its own connections
        try:
            start.wait()
            while batch := store.claim("src", name, limit=3):
                claimed.extend(r.id for r in batch)
                for record in batch:
                    with connect(database_url, schema=fresh_schema) as conn, conn.transaction():
                        _land(conn, store, record.id, name)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(worker_id(),)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert sorted(claimed) == [r.id for r in setup.objects("src")]  # each once, none left out
    landed = _landed(database_url, fresh_schema)
    assert Counter(i for i, _ in landed) == Counter(claimed)
    assert setup.summary("src")["loaded"] == 120
    loaded = setup.objects("src")
    assert all(r.attempts == 1 and r.rows == 7 and r.bad_rows == 1 for r in loaded)
    assert all(r.lease_owner is None and r.loaded_at is not None for r in loaded)


def test_concurrent_scans_register_each_version_once(
    s3: Any, bucket: str, database_url: str, fresh_schema: str
) -> None:
    for d in range(3):
        for i in range(4):
            put(s3, bucket, f"in/d{d}/part-{i}.csv", f"{d},{i}".encode())
        put(s3, bucket, f"in/d{d}/{SUCCESS_NAME}", b"")
    counts: list[int] = []

    def scan() -> None:
        store = ObjectManifest(database_url, schema=fresh_schema)
        counts.append(scan_drops(s3, store, source="src", bucket=bucket, prefix="in/").registered)

    threads = [threading.Thread(target=scan) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 12 and len(counts) == 3
    assert ObjectManifest(database_url, schema=fresh_schema).summary("src")["discovered"] == 12


@pytest.mark.usefixtures("landed")
def test_an_expired_lease_is_taken_over_and_the_lost_lease_writes_nothing(
    store: ObjectManifest, clock: FakeClock, database_url: str, fresh_schema: str
) -> None:
    store.register("src", "d1", [info("p/d1/a.csv")])
    [mine] = store.claim("src", "slow", lease_seconds=30)
    assert (mine.state, mine.lease_owner, mine.attempts) == ("loading", "slow", 1)
    assert mine.lease_expires_at == START + timedelta(seconds=30)
    assert store.claim("src", "rescue") == []  # a live lease is nobody else's

    clock.advance(seconds=31)
    [taken] = store.claim("src", "rescue", lease_seconds=30)
    assert (taken.id, taken.lease_owner, taken.attempts) == (mine.id, "rescue", 2)

    with (
        pytest.raises(LeaseLost),
        connect(database_url, schema=fresh_schema) as conn,
        conn.transaction(),
    ):
        _land(conn, store, mine.id, "slow")
    assert _landed(database_url, fresh_schema) == []
    row = store.get(mine.id)
    assert row is not None and (row.state, row.lease_owner) == ("loading", "rescue")

    with connect(database_url, schema=fresh_schema) as conn, conn.transaction():
        _land(conn, store, taken.id, "rescue")
    assert _landed(database_url, fresh_schema) == [(mine.id, "rescue")]
    row = store.get(mine.id)
    assert row is not None and (row.state, row.rows, row.loaded_at) == ("loaded", 7, clock())
    with pytest.raises(LeaseLost):
        store.mark_failed(mine.id, "slow", error="too late")


@pytest.mark.usefixtures("landed")
def test_an_expired_lease_nobody_took_over_still_completes(
    store: ObjectManifest, clock: FakeClock, database_url: str, fresh_schema: str
) -> None:
    store.register("src", "d1", [info("p/d1/a.csv")])
    [mine] = store.claim("src", "slow", lease_seconds=30)
    clock.advance(minutes=5)
    with connect(database_url, schema=fresh_schema) as conn, conn.transaction():
        _land(conn, store, mine.id, "slow")
    assert store.summary("src")["loaded"] == 1
    assert store.claim("src", "other") == []


def test_renew_extends_the_lease_and_refuses_others(
    store: ObjectManifest, clock: FakeClock
) -> None:
    store.register("src", "d1", [info("p/d1/a.csv")])
    [mine] = store.claim("src", "w1", lease_seconds=30)
    clock.advance(seconds=20)
    assert store.renew(mine.id, "w1", lease_seconds=30) == clock() + timedelta(seconds=30)
    clock.advance(seconds=20)  # past the first lease, inside the renewed one
    assert store.claim("src", "w2") == []
    with pytest.raises(LeaseLost):
        store.renew(mine.id, "w2")


def test_failed_objects_are_retried_until_attempts_run_out(
    database_url: str, fresh_schema: str, clock: FakeClock
) -> None:
    store = ObjectManifest(database_url, schema=fresh_schema, clock=clock, max_attempts=2)
    store.register("src", "d1", [info("p/d1/a.csv")])
    for attempt in (1, 2):
        [record] = store.claim("src", "w")
        assert record.attempts == attempt
        store.mark_failed(record.id, "w", error=f"timeout {attempt}")
    assert store.claim("src", "w") == []
    [row] = store.objects("src")
    assert (row.state, row.attempts, row.error, row.lease_owner) == ("failed", 2, "timeout 2", None)


def test_a_lease_that_expires_on_the_last_attempt_fails_the_object(
    database_url: str, fresh_schema: str, clock: FakeClock
) -> None:
    store = ObjectManifest(database_url, schema=fresh_schema, clock=clock, max_attempts=1)
    store.register("src", "d1", [info("p/d1/a.csv")])
    store.claim("src", "crashes-every-time", lease_seconds=30)
    clock.advance(seconds=31)
    assert store.claim("src", "w") == []
    [row] = store.objects("src")
    assert row.state == "failed" and row.lease_owner is None
    assert row.error == "lease of crashes-every-time expired on attempt 1 of 1"


def test_quarantine_lands_with_the_callers_transaction(
    store: ObjectManifest, database_url: str, fresh_schema: str
) -> None:
    store.register("src", "d1", [info("p/d1/cut.csv.gz")])
    [record] = store.claim("src", "w")
    with connect(database_url, schema=fresh_schema) as conn:
        store.mark_quarantined(conn, record.id, "w", reason="gzip stream ends early")
        conn.rollback()  # e.g. the dead letter could not be written
    assert store.summary("src")["loading"] == 1

    store.mark_quarantined(None, record.id, "w", reason="gzip stream ends early")
    row = store.get(record.id)
    assert row is not None and (row.state, row.error) == ("quarantined", "gzip stream ends early")
    assert store.claim("src", "w") == []
    with pytest.raises(LeaseLost):
        store.mark_quarantined(None, record.id, "w", reason="again")


def test_release_hands_an_object_back_without_counting_the_attempt(store: ObjectManifest) -> None:
    store.register("src", "d1", [info("p/d1/a.csv")])
    [record] = store.claim("src", "w1")
    store.release(record.id, "w1")
    row = store.get(record.id)
    assert row is not None and (row.state, row.attempts, row.lease_owner) == ("discovered", 0, None)
    with pytest.raises(LeaseLost):
        store.release(record.id, "w1")
    [again] = store.claim("src", "w2")
    assert (again.id, again.attempts) == (record.id, 1)


def test_claim_takes_the_oldest_first_up_to_the_limit(store: ObjectManifest) -> None:
    store.register("src", "d1", [info(f"p/d1/{i}.csv", str(i).encode()) for i in range(5)])
    store.register("other", "d1", [info("q/d1/x.csv")])
    first = store.claim("src", "w", limit=3)
    assert [r.key for r in first] == ["p/d1/0.csv", "p/d1/1.csv", "p/d1/2.csv"]
    assert [r.key for r in store.claim("src", "w", limit=3)] == ["p/d1/3.csv", "p/d1/4.csv"]
    assert store.get(10_000) is None


def test_max_attempts_must_be_positive(database_url: str, fresh_schema: str) -> None:
    with pytest.raises(ConfigError):
        ObjectManifest(database_url, schema=fresh_schema, max_attempts=0)


# -- a scan, and reading the version that was checked ---------------------------------------------


def test_a_scan_registers_the_data_files_of_ready_drops_only(
    s3: Any, bucket: str, store: ObjectManifest
) -> None:
    put(s3, bucket, "in/d1/a.csv", FILES["a.csv"])
    put(s3, bucket, "in/d1/b.csv", FILES["b.csv"])
    put(s3, bucket, f"in/d1/{MANIFEST_NAME}", manifest_json(FILES))
    put(s3, bucket, "in/d2/part-0.csv", b"x\n")
    put(s3, bucket, f"in/d2/{SUCCESS_NAME}", b"")
    put(s3, bucket, "in/d3/a.csv", FILES["a.csv"])
    put(s3, bucket, f"in/d3/{MANIFEST_NAME}", manifest_json(FILES, "d3"))  # b.csv never comes

    report = scan_drops(s3, store, source="src", bucket=bucket, prefix="in/")

    assert [d.drop_id for d in report.ready] == ["d1", "d2"]
    assert [d.drop_id for d in report.waiting] == ["d3"] and report.overdue == []
    assert report.registered == 3
    assert [(r.drop_id, r.key) for r in store.objects("src")] == [
        ("d1", "in/d1/a.csv"),
        ("d1", "in/d1/b.csv"),
        ("d2", "in/d2/part-0.csv"),
    ]
    assert scan_drops(s3, store, source="src", bucket=bucket, prefix="in/").registered == 0
    assert store.drops.manifest_of("src", bucket, "d1") == parse_manifest(manifest_json(FILES))

    put(s3, bucket, "in/d2/part-0.csv", b"x, corrected\n")  # the producer re-sends a part
    assert scan_drops(s3, store, source="src", bucket=bucket, prefix="in/").registered == 1
    versions = store.objects("src", key="in/d2/part-0.csv")
    assert [r.etag for r in versions] == [md5(b"x\n"), md5(b"x, corrected\n")]


def test_open_object_reads_the_registered_version_or_refuses(
    s3: Any, bucket: str, store: ObjectManifest
) -> None:
    put(s3, bucket, "in/d1/a.csv", b"old")
    [listed] = list_objects(s3, bucket, "in/")
    store.register("src", "d1", [listed])
    [record] = store.objects("src")
    assert open_object(s3, record).read() == b"old"

    put(s3, bucket, "in/d1/a.csv", b"new")
    with pytest.raises(ObjectChanged, match="is gone"):
        open_object(s3, record)
    s3.delete_object(Bucket=bucket, Key="in/d1/a.csv")
    with pytest.raises(ObjectChanged):
        open_object(s3, record)


def test_open_object_reads_an_old_version_by_its_id(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    put(s3, bucket, "v/a.csv", b"first")
    [first] = list_objects(s3, bucket, "v/", versions=True)
    put(s3, bucket, "v/a.csv", b"second")
    assert open_object(s3, first).read() == b"first"


def test_the_module_curates_its_public_names() -> None:
    assert "LeaseLost" in manifest_module.__all__ and "ObjectManifest" in manifest_module.__all__
    assert all(hasattr(manifest_module, name) for name in manifest_module.__all__)
    assert isinstance(parse_manifest(b'{"files": []}'), DropManifest)
