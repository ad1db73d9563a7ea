"""`ingest.load.postgres`: JSON records → Arrow → COPY → merge on the primary key."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from ingest.errors import DataError
from ingest.load.postgres import LandingTable, merge_arrow, records_to_arrow
from ingest.mockapi.fixtures import rest_records


@pytest.fixture
def landing(database_url: str) -> Iterator[tuple[psycopg.Connection, str]]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = psycopg.connect(database_url)
    yield conn, schema
    conn.rollback()
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    conn.commit()
    conn.close()


def _rows(
    conn: psycopg.Connection, schema: str, table: str = "customers"
) -> list[tuple[object, ...]]:
    query = sql.SQL("SELECT id, name, tags, updated_at FROM {} ORDER BY id").format(
        sql.Identifier(schema, table)
    )
    return conn.execute(query).fetchall()


def test_records_to_arrow_types() -> None:
    table = records_to_arrow(
        [
            {
                "id": 1,
                "tags": ["a"],
                "meta": {"k": 1},
                "at": "2026-01-01T00:00:00Z",
                "n": 1.5,
                "ok": True,
            },
            {
                "id": 2,
                "tags": [],
                "meta": None,
                "at": "2026-01-02T00:00:00Z",
                "n": None,
                "ok": False,
                "late": "x",
            },
        ]
    )
    assert table.schema.names == ["id", "tags", "meta", "at", "n", "ok", "late"]
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert table.column("tags").to_pylist() == ['["a"]', "[]"]
    assert table.column("meta").to_pylist() == ['{"k":1}', None]
    assert table.column("late").to_pylist() == [None, "x"]


def test_mixed_types_are_kept_as_json_text_not_dropped() -> None:
    table = records_to_arrow([{"id": 1, "v": 1}, {"id": 2, "v": "one"}])
    assert table.column("v").to_pylist() == ["1", '"one"']


def test_merge_inserts_then_changes_nothing_then_updates_only_newer(
    landing: tuple[psycopg.Connection, str],
) -> None:
    conn, schema = landing
    table = LandingTable(schema, "customers", ("id",), cursor="updated_at")
    records = rest_records(250)
    with conn.transaction():
        first = merge_arrow(conn, table, records_to_arrow(records))
    assert (first.inserted, first.updated) == (250, 0)
    with conn.transaction():
        again = merge_arrow(conn, table, records_to_arrow(records))
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 250)

    newer = dict(records[0], name="Renamed", updated_at="2027-01-01T00:00:00Z")
    older = dict(records[1], name="Stale", updated_at="2020-01-01T00:00:00Z")
    with conn.transaction():
        result = merge_arrow(conn, table, records_to_arrow([newer, older]))
    assert (result.inserted, result.updated) == (0, 1)
    rows = {r[0]: r for r in _rows(conn, schema)}
    assert rows[1][1] == "Renamed" and rows[1][3] == datetime(2027, 1, 1, tzinfo=UTC)
    assert rows[2][1] == records[1]["name"]  # an older version never overwrites a newer one
    assert rows[1][2] == records[0]["tags"]  # jsonb round-trips


def test_duplicates_within_a_batch_keep_the_newest(landing: tuple[psycopg.Connection, str]) -> None:
    conn, schema = landing
    table = LandingTable(schema, "customers", ("id",), cursor="updated_at")
    base = rest_records(1)[0]
    batch = [dict(base, name="old"), dict(base, name="new", updated_at="2030-01-01T00:00:00Z")]
    with conn.transaction():
        result = merge_arrow(conn, table, records_to_arrow(batch))
    assert result.inserted == 1
    assert _rows(conn, schema)[0][1] == "new"


def test_rollback_of_the_callers_transaction_lands_nothing(
    landing: tuple[psycopg.Connection, str],
) -> None:
    conn, schema = landing
    table = LandingTable(schema, "customers", ("id",))
    with conn.transaction():
        merge_arrow(conn, table, records_to_arrow(rest_records(5)))
    with pytest.raises(RuntimeError), conn.transaction():
        merge_arrow(conn, table, records_to_arrow(rest_records(10)))
        raise RuntimeError("crash after the rows, before the commit")
    assert len(_rows(conn, schema)) == 5


def test_new_columns_are_added_not_rejected(landing: tuple[psycopg.Connection, str]) -> None:
    conn, schema = landing
    table = LandingTable(schema, "things", ("id",))
    with conn.transaction():
        merge_arrow(conn, table, records_to_arrow([{"id": 1, "a": "x"}]))
    with conn.transaction():
        merge_arrow(conn, table, records_to_arrow([{"id": 2, "a": "y", "b": 3}]))
    rows = conn.execute(
        sql.SQL("SELECT id, a, b FROM {} ORDER BY id").format(sql.Identifier(schema, "things"))
    ).fetchall()
    assert rows == [(1, "x", None), (2, "y", 3)]


def test_missing_primary_key_is_a_data_error(landing: tuple[psycopg.Connection, str]) -> None:
    conn, schema = landing
    with pytest.raises(DataError, match="primary key"), conn.transaction():
        merge_arrow(conn, LandingTable(schema, "t", ("id",)), records_to_arrow([{"name": "no id"}]))


def test_text_that_needs_quoting_round_trips(landing: tuple[psycopg.Connection, str]) -> None:
    conn, schema = landing
    tricky = ['comma, "quotes"', "new\nline", "", None, "back\\slash"]
    records = [{"id": i, "v": v} for i, v in enumerate(tricky)]
    with conn.transaction():
        merge_arrow(conn, LandingTable(schema, "t", ("id",)), records_to_arrow(records))
    rows = conn.execute(
        sql.SQL("SELECT v FROM {} ORDER BY id").format(sql.Identifier(schema, "t"))
    ).fetchall()
    assert [r[0] for r in rows] == tricky


def test_timestamps_land_as_the_same_instants_whatever_the_session_time_zone(
    landing: tuple[psycopg.Connection, str],
) -> None:
    # The CSV carries zoned timestamps as naive UTC text plus "Z": a session in another zone
    # must not shift them, and offsets in the source must be honoured.
    conn, schema = landing
    conn.execute("SET TimeZone = 'America/New_York'")
    records = [
        {"id": 1, "at": "2026-01-01T01:00:00+02:00"},
        {"id": 2, "at": "2026-06-30T23:59:59.123456Z"},
        {"id": 3, "at": None},
    ]
    merge_arrow(conn, LandingTable(schema, "events", ("id",)), records_to_arrow(records))
    landed = conn.execute(
        sql.SQL("SELECT id, at FROM {} ORDER BY id").format(sql.Identifier(schema, "events"))
    ).fetchall()
    assert landed == [
        (1, datetime(2025, 12, 31, 23, 0, tzinfo=UTC)),
        (2, datetime(2026, 6, 30, 23, 59, 59, 123456, tzinfo=UTC)),
        (3, None),
    ]
