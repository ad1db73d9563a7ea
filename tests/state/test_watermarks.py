"""Watermarks never move backwards, compare by type, and live and die with the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ingest.errors import ConfigError, DataError
from ingest.mockapi.fixtures import rest_records
from ingest.state.watermarks import (
    CursorStrategy,
    IncrementalCursor,
    Watermark,
    WatermarkStore,
    format_value,
    is_later,
    parse_value,
    start_from,
)

SOURCE = "test-source"


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection: each ``with conn.transaction():`` is a real transaction."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def store(fresh_schema: str) -> WatermarkStore:
    return WatermarkStore(fresh_schema)


def advance(
    conn: psycopg.Connection[Any], store: WatermarkStore, value: Any, stream: str = "s"
) -> Watermark:
    with conn.transaction():
        return store.advance(conn, SOURCE, stream, value, run_id=f"run-{value}")


# -- typed values, no database ----------------------------------------------------------------------


def test_parse_value_types_timestamps_and_integers() -> None:
    assert parse_value("2026-01-01T10:00:00+02:00") == datetime(2026, 1, 1, 8, tzinfo=UTC)
    assert parse_value("2026-01-01T08:00:00Z") == datetime(2026, 1, 1, 8, tzinfo=UTC)
    assert parse_value("2026-01-01 08:00:00") == datetime(2026, 1, 1, 8, tzinfo=UTC)  # naive = UTC
    local = datetime(2026, 1, 1, 9, tzinfo=timezone(timedelta(hours=1)))
    assert parse_value(local) == datetime(2026, 1, 1, 8, tzinfo=UTC)
    assert parse_value(42) == 42


@pytest.mark.parametrize("value", ["20260101", "2026-01-01", "yesterday", "42", 4.2, True, None])
def test_anything_else_is_not_a_watermark(value: Any) -> None:
    with pytest.raises(DataError, match="ISO 8601 timestamp or an integer"):
        parse_value(value)


def test_format_value_is_utc_with_z() -> None:
    assert format_value(parse_value("2026-01-01T10:00:00.5+02:00")) == "2026-01-01T08:00:00.500000Z"
    assert format_value(7) == "7"


def test_is_later_compares_by_type() -> None:
    assert is_later(10, 9)  # "10" < "9" as text
    assert not is_later(parse_value("2026-01-01T10:00:00+02:00"), parse_value("2026-01-01T09:00Z"))
    with pytest.raises(DataError, match="cannot compare an integer with a timestamp"):
        is_later(1, parse_value("2026-01-01T09:00Z"))


# -- start_from and the cursor strategy ---------------------------------------------------------------


def test_start_from_subtracts_the_lookback() -> None:
    mark = Watermark(SOURCE, "s", parse_value("2026-01-01T03:20:00Z"))
    assert start_from(mark, timedelta(minutes=5)) == "2026-01-01T03:15:00Z"
    assert start_from(mark) == "2026-01-01T03:20:00Z"
    assert start_from("2026-01-01T00:02:00+01:00", timedelta(minutes=3)) == "2025-12-31T22:59:00Z"
    assert start_from(Watermark(SOURCE, "s", 100), 10) == "90"
    assert start_from(100) == "100"


@pytest.mark.parametrize(
    ("watermark", "lookback", "message"),
    [
        ("2026-01-01T00:00:00Z", 5, "timestamp watermark needs a timedelta"),
        (100, timedelta(minutes=1), "integer watermark needs an integer"),
        (100, -1, "must not be negative"),
        ("2026-01-01T00:00:00Z", timedelta(minutes=-1), "must not be negative"),
        (100, True, "must be a timedelta or an integer"),
    ],
)
def test_start_from_refuses_a_lookback_of_the_wrong_kind(
    watermark: Any, lookback: Any, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        start_from(watermark, lookback)


def test_incremental_cursor_max_seen_and_request_params() -> None:
    cursor = IncrementalCursor(lookback=timedelta(minutes=5))
    assert isinstance(cursor, CursorStrategy)
    records = rest_records(5, seed=3)
    shuffled = [records[2], records[4], records[0]]
    assert cursor.max_seen(shuffled) == parse_value(records[4]["updated_at"])
    assert cursor.max_seen([]) is None
    assert cursor.request_params(None) == {}  # first run, no initial: everything
    mark = Watermark(SOURCE, "s", parse_value("2026-01-01T03:20:00Z"))
    assert cursor.request_params(mark) == {"updated_since": "2026-01-01T03:15:00Z"}


def test_incremental_cursor_initial_and_custom_field() -> None:
    cursor = IncrementalCursor(field="seq", initial=1000, lookback=50, param="since_seq")
    assert cursor.initial == 1000
    assert cursor.request_params(None) == {"since_seq": "1000"}
    assert cursor.request_params(Watermark(SOURCE, "s", 2000)) == {"since_seq": "1950"}
    assert cursor.max_seen([{"seq": 3}, {"seq": 12}, {"seq": 9}]) == 12
    timed = IncrementalCursor(initial="2026-01-01T01:00:00+01:00")
    assert timed.request_params(None) == {"updated_since": "2026-01-01T00:00:00Z"}


def test_incremental_cursor_rejects_bad_config_and_records() -> None:
    with pytest.raises(ConfigError, match="field must be a non-empty string"):
        IncrementalCursor(field="")
    with pytest.raises(ConfigError, match="initial"):
        IncrementalCursor(initial="soon")
    with pytest.raises(ConfigError, match="integer watermark needs an integer lookback"):
        IncrementalCursor(initial=5, lookback=timedelta(minutes=1))
    with pytest.raises(ConfigError, match="must not be negative"):
        IncrementalCursor(lookback=timedelta(seconds=-1))
    with pytest.raises(DataError, match="record 1 has no cursor value in 'updated_at'"):
        IncrementalCursor().max_seen([{"updated_at": "2026-01-01T00:00:00Z"}, {"id": 2}])
    with pytest.raises(DataError, match="cannot compare"):
        IncrementalCursor().max_seen([{"updated_at": "2026-01-01T00:00:00Z"}, {"updated_at": 3}])


# -- the store, on a real PostgreSQL ----------------------------------------------------------------


def test_no_watermark_before_the_first_advance(
    conn: psycopg.Connection[Any], store: WatermarkStore
) -> None:
    assert store.get(conn, SOURCE, "s") is None
    mark = advance(conn, store, "2026-01-01T00:05:00Z")
    assert mark == Watermark(
        SOURCE, "s", parse_value("2026-01-01T00:05:00Z"), "run-2026-01-01T00:05:00Z"
    )
    assert store.get(conn, SOURCE, "s") == mark
    assert store.get(conn, SOURCE, "other") is None
    assert store.get(conn, "other-source", "s") is None


def test_a_watermark_never_moves_backwards(
    conn: psycopg.Connection[Any], store: WatermarkStore
) -> None:
    advance(conn, store, "2026-01-01T09:00:00Z")
    kept = advance(conn, store, "2026-01-01T08:59:59Z")
    assert kept.value == parse_value("2026-01-01T09:00:00Z")
    assert kept.run_id == "run-2026-01-01T09:00:00Z"  # the earlier run's, untouched
    same = advance(conn, store, "2026-01-01T09:00:00Z")  # equal is not later either
    assert same.run_id == "run-2026-01-01T09:00:00Z"
    moved = advance(conn, store, "2026-01-01T09:00:01Z")
    assert moved.value == parse_value("2026-01-01T09:00:01Z")
    assert store.get(conn, SOURCE, "s") == moved


def test_timestamps_compare_as_timestamptz_not_text(
    conn: psycopg.Connection[Any], store: WatermarkStore
) -> None:
    advance(conn, store, "2026-01-01T09:00:00Z")
    # Later as text, earlier in time (08:00 UTC): the watermark stays.
    kept = advance(conn, store, "2026-01-01T10:00:00+02:00")
    assert format_value(kept.value) == "2026-01-01T09:00:00Z"
    # Earlier as text, later in time (09:30 UTC): the watermark moves.
    moved = advance(conn, store, "2026-01-01T08:30:00-01:00")
    assert format_value(moved.value) == "2026-01-01T09:30:00Z"
    # Half a second later; as text "…09:30:00.500000Z" sorts before "…09:30:00Z".
    assert format_value(advance(conn, store, "2026-01-01T09:30:00.5Z").value) == (
        "2026-01-01T09:30:00.500000Z"
    )
    moved = advance(conn, store, "2026-01-01T09:30:01Z")
    stored = conn.execute(
        sql.SQL("SELECT value FROM {}.watermarks WHERE source = %s").format(
            sql.Identifier(store.schema)
        ),
        (SOURCE,),
    ).fetchone()
    assert stored is not None
    assert stored[0] == {"type": "timestamp", "value": "2026-01-01T09:30:01Z"}


def test_integers_compare_as_numbers_not_text(
    conn: psycopg.Connection[Any], store: WatermarkStore
) -> None:
    advance(conn, store, 9)
    assert advance(conn, store, 10).value == 10  # "10" < "9" as text
    assert advance(conn, store, 9).value == 10
    big = 2**70  # beyond bigint: compared as numeric
    assert advance(conn, store, big).value == big
    assert store.get(conn, SOURCE, "s") == Watermark(SOURCE, "s", big, f"run-{big}")


def test_a_stream_keeps_its_kind(conn: psycopg.Connection[Any], store: WatermarkStore) -> None:
    advance(conn, store, 10)
    with pytest.raises(
        ConfigError, match="holds an integer; it cannot be advanced with a timestamp"
    ):
        advance(conn, store, "2030-01-01T00:00:00Z")
    assert store.get(conn, SOURCE, "s") == Watermark(SOURCE, "s", 10, "run-10")


def test_rolling_back_the_callers_transaction_rolls_the_watermark_back(
    conn: psycopg.Connection[Any], store: WatermarkStore
) -> None:
    conn.execute(
        sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY)").format(
            sql.Identifier(store.schema, "rows")
        )
    )
    insert = sql.SQL("INSERT INTO {} (id) VALUES (%s)").format(sql.Identifier(store.schema, "rows"))
    with conn.transaction():
        conn.execute(insert, (1,))
        store.advance(conn, SOURCE, "s", 1)

    class Crash(Exception):
        pass

    with pytest.raises(Crash), conn.transaction():
        conn.execute(insert, (2,))
        assert store.advance(conn, SOURCE, "s", 2).value == 2  # visible inside the transaction
        raise Crash

    assert store.get(conn, SOURCE, "s") == Watermark(SOURCE, "s", 1)
    count = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(store.schema, "rows"))
    assert conn.execute(count).fetchone() == (1,)


def test_a_non_autocommit_connection_commits_only_when_the_caller_does(
    database_url: str, store: WatermarkStore, conn: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(database_url) as caller:
        store.advance(caller, SOURCE, "s", "2026-01-01T00:00:00Z")
        assert store.get(conn, SOURCE, "s") is None  # not committed: invisible elsewhere
        caller.rollback()
        store.advance(caller, SOURCE, "s", "2026-01-02T00:00:00Z")
        caller.commit()
    assert store.get(conn, SOURCE, "s") == Watermark(SOURCE, "s", parse_value("2026-01-02T00:00Z"))


def test_advance_outside_a_transaction_is_refused(
    conn: psycopg.Connection[Any], store: WatermarkStore
) -> None:
    with pytest.raises(ConfigError, match="inside the transaction that writes the rows"):
        store.advance(conn, SOURCE, "s", 1)
    assert store.get(conn, SOURCE, "s") is None


def test_the_store_checks_its_schema_name() -> None:
    with pytest.raises(ConfigError, match="schema name"):
        WatermarkStore("Robert'); DROP TABLE students;--")
