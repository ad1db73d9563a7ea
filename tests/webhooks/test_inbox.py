"""The webhook inbox (group commit) and the outbox relay, against the real PostgreSQL.

Every answer of ``GroupCommitter.write`` must come after its COMMIT; PostgreSQL going away is
played by a TCP proxy the test starts in front of the real server and then closes and reopens.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ingest.errors import ConfigError, DataError, Transient
from ingest.netutil import free_port
from ingest.state.db import connect
from ingest.webhooks.inbox import (
    OUTBOX_TOPIC,
    DatabaseUnavailable,
    GroupCommitter,
    InboundEvent,
    landing_table_name,
    relay_batch,
    run_relay,
)

T = TypeVar("T")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
TYPES = ["order.created", "order.paid", "Refund/Created", None]


def event(n: int, *, source: str = "shop", body: bytes | None = None) -> InboundEvent:
    event_id = f"evt_{n:05d}"
    payload = body if body is not None else json.dumps({"id": event_id, "n": n}).encode()
    return InboundEvent(
        source=source,
        event_id=event_id,
        event_type=TYPES[n % len(TYPES)],
        headers={"content-type": "application/json", "x-n": str(n)},
        payload=payload,
        received_at=T0 + timedelta(seconds=n),
    )


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def count(database_url: str, schema: str, query: str, *params: Any) -> int:
    with connect(database_url, schema=schema) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def landing_schema(database_url: str) -> Iterator[str]:
    """A landing schema of this test's own (the relay creates it), dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}_landing"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


class TcpProxy:
    """A TCP forwarder in front of PostgreSQL that a test can cut and restore.

    ``close()`` stops listening and aborts every forwarded connection (a server that went away);
    ``drop_connections()`` aborts them but keeps listening (a server that restarted).
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._streams: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self.drop_connections()
            await self._server.wait_closed()
            self._server = None

    def drop_connections(self) -> None:
        for stream in list(self._streams):
            stream.transport.abort()
        self._streams.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._streams |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()


def via(database_url: str, port: int) -> str:
    return make_conninfo(database_url, host="127.0.0.1", port=str(port))


def target_of(database_url: str) -> tuple[str, int]:
    params = conninfo_to_dict(database_url)
    return str(params.get("host", "127.0.0.1")), int(str(params.get("port", 5432)))


async def eventually(attempt: Callable[[], Awaitable[T]], *, within: float = 20.0) -> T:
    """The first result of ``attempt`` that does not raise DatabaseUnavailable."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await attempt()
        except DatabaseUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


# -- the event ------------------------------------------------------------------------------------


def test_inbound_event_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        InboundEvent("shop", "e1", None, {}, b"{}", received_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="source and an event id"):
        InboundEvent("shop", "", None, {}, b"{}")
    assert event(1).key == ("shop", "evt_00001")
    assert event(1).received_at.tzinfo is not None


def test_database_unavailable_is_transient() -> None:
    exc = DatabaseUnavailable("down", retry_after=0.25)
    assert isinstance(exc, Transient) and exc.retry_after == 0.25


def test_committer_validates_its_options(database_url: str) -> None:
    with pytest.raises(ConfigError):
        GroupCommitter(database_url, schema="Not-A-Schema")
    with pytest.raises(ValueError, match="must be >= 1"):
        GroupCommitter(database_url, schema="ingest", max_batch=0)
    assert "password" not in repr(GroupCommitter("postgresql://u:password@h/db", schema="ingest"))


# -- group commit ---------------------------------------------------------------------------------


def test_concurrent_writes_share_transactions_and_answer_right(
    database_url: str, fresh_schema: str
) -> None:
    """500 concurrent writes, 30% repeated keys, some stored before: right answers, few commits."""
    rng = random.Random(7)
    keys = list(range(350)) + rng.sample(range(350), 150)
    rng.shuffle(keys)
    stored_before = set(range(0, 350, 7))

    async def scenario() -> tuple[list[bool], GroupCommitter]:
        async with GroupCommitter(database_url, schema=fresh_schema) as committer:
            earlier = await asyncio.gather(*(committer.write(event(n)) for n in stored_before))
            assert all(earlier)
            answers = await asyncio.gather(*(committer.write(event(n)) for n in keys))
        return list(answers), committer

    answers, committer = run(scenario())

    news = Counter(n for n, new in zip(keys, answers, strict=True) if new)
    assert set(news) == set(keys) - stored_before  # new exactly when not stored before …
    assert set(news.values()) == {1}  # … and only for one copy of each key
    assert answers.count(False) == len(keys) - len(news)
    assert count(database_url, fresh_schema, "SELECT count(*) FROM webhook_events") == 350
    assert (
        count(
            database_url, fresh_schema, "SELECT count(*) FROM outbox WHERE topic = %s", OUTBOX_TOPIC
        )
        == 350
    )
    stats = committer.stats
    assert stats.inserted == 350 and stats.duplicates == len(keys) + len(stored_before) - 350
    assert stats.durable == len(keys) + len(stored_before) and stats.failed == 0
    assert stats.transactions < len(keys) + len(stored_before)
    assert stats.largest_batch > 1


def test_stored_row_keeps_what_was_received(database_url: str, fresh_schema: str) -> None:
    body = (
        b'{"id": "evt_00002", "nested": {"a": [1, 2.5, "x"]}, "unicode": "caf\\u00e9 \xe2\x82\xac"}'
    )
    original = event(2, body=body)

    async def scenario() -> bool:
        async with GroupCommitter(database_url, schema=fresh_schema) as committer:
            return await committer.write(original)

    assert run(scenario()) is True
    with connect(database_url, schema=fresh_schema) as conn:
        row = conn.execute(
            "SELECT e.event_type, e.received_at, e.headers, e.payload, o.topic, o.payload"
            " FROM webhook_events e JOIN outbox o USING (source, event_id)"
        ).fetchone()
    assert row is not None
    event_type, received_at, headers, payload, topic, outbox_payload = row
    assert (event_type, received_at, headers) == (
        "Refund/Created",
        original.received_at,
        original.headers,
    )
    assert payload == json.loads(body)
    assert topic == "landing" and outbox_payload["event_type"] == "Refund/Created"


def test_repeats_within_one_batch_resolve_as_one_insert(
    database_url: str, fresh_schema: str
) -> None:
    """Queued in one go, the batch is one transaction; each repeated key is one insert."""
    events = [event(1), event(2), event(1), event(3), event(1), event(2)]

    async def scenario() -> tuple[list[bool], int, int]:
        async with GroupCommitter(database_url, schema=fresh_schema, writers=1) as committer:
            answers = await asyncio.gather(*(committer.write(e) for e in events))
        return list(answers), committer.stats.transactions, committer.stats.largest_batch

    answers, transactions, largest = run(scenario())
    assert answers == [True, True, False, True, False, False]
    assert (transactions, largest) == (1, len(events))
    assert count(database_url, fresh_schema, "SELECT count(*) FROM webhook_events") == 3


def test_max_batch_splits_the_queue(database_url: str, fresh_schema: str) -> None:
    async def scenario() -> GroupCommitter:
        async with GroupCommitter(
            database_url, schema=fresh_schema, writers=1, max_batch=10
        ) as committer:
            assert all(await asyncio.gather(*(committer.write(event(n)) for n in range(95))))
        return committer

    committer = run(scenario())
    assert committer.stats.largest_batch == 10
    assert committer.stats.transactions >= 10
    assert count(database_url, fresh_schema, "SELECT count(*) FROM webhook_events") == 95


def test_every_answer_comes_after_the_commit(database_url: str, fresh_schema: str) -> None:
    """Right after write() returns, another connection already sees the inbox and outbox rows."""

    async def scenario() -> list[tuple[bool, bool, bool]]:
        observer = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
        await observer.execute(
            sql.SQL("SET search_path TO {}").format(sql.Identifier(fresh_schema))
        )

        async def write_then_look(
            committer: GroupCommitter, e: InboundEvent
        ) -> tuple[bool, bool, bool]:
            new = await committer.write(e)
            cur = await observer.execute(
                "SELECT EXISTS (SELECT 1 FROM webhook_events WHERE source = %s AND event_id = %s),"
                " EXISTS (SELECT 1 FROM outbox WHERE source = %s AND event_id = %s)",
                (*e.key, *e.key),
            )
            row = await cur.fetchone()
            assert row is not None
            return new, bool(row[0]), bool(row[1])

        try:
            async with GroupCommitter(database_url, schema=fresh_schema) as committer:
                numbers = [n % 150 for n in range(200)]  # the last 50 repeat earlier keys
                return list(
                    await asyncio.gather(*(write_then_look(committer, event(n)) for n in numbers))
                )
        finally:
            await observer.close()

    seen = run(scenario())
    assert [new for new, _, _ in seen].count(True) == 150
    assert all(in_inbox and in_outbox for _, in_inbox, in_outbox in seen)


def test_exists_reads_committed_rows(database_url: str, fresh_schema: str) -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        async with GroupCommitter(database_url, schema=fresh_schema) as committer:
            before = await committer.exists("shop", "evt_00001")
            await committer.write(event(1))
            return (
                before,
                await committer.exists("shop", "evt_00001"),
                await committer.exists("other", "evt_00001"),
            )

    assert run(scenario()) == (False, True, False)


def test_a_refused_body_fails_alone(database_url: str, fresh_schema: str) -> None:
    """Not JSON, or a NUL jsonb cannot hold: that write fails with DataError, its batch is stored."""
    events = [
        event(1),
        event(2, body=b"{not json"),
        event(3, body=b'{"text": "a\\u0000b"}'),
        event(4),
        event(2),  # a valid copy of the refused key gets its own try
    ]

    async def scenario() -> list[object]:
        async with GroupCommitter(database_url, schema=fresh_schema, writers=1) as committer:
            return list(
                await asyncio.gather(*(committer.write(e) for e in events), return_exceptions=True)
            )

    results = run(scenario())
    assert results[0] is True and results[3] is True and results[4] is True
    assert isinstance(results[1], DataError) and "evt_00002" in str(results[1])
    assert isinstance(results[2], DataError) and "evt_00003" in str(results[2])
    stored = count(database_url, fresh_schema, "SELECT count(*) FROM webhook_events")
    assert stored == 3


def test_a_body_that_is_not_utf8_fails_at_once(database_url: str, fresh_schema: str) -> None:
    async def scenario() -> None:
        async with GroupCommitter(database_url, schema=fresh_schema) as committer:
            with pytest.raises(DataError, match="UTF-8"):
                await committer.write(event(1, body=b'{"a": "\xff"}'))
            assert committer.stats.transactions == 0

    run(scenario())


def test_overload_is_refused_with_database_unavailable(
    database_url: str, fresh_schema: str
) -> None:
    """Beyond max_pending queued writes, new ones get a 503 at once instead of a longer queue."""

    async def scenario() -> list[object]:
        async with GroupCommitter(
            database_url, schema=fresh_schema, writers=1, max_pending=5
        ) as committer:
            return list(
                await asyncio.gather(
                    *(committer.write(event(n)) for n in range(20)), return_exceptions=True
                )
            )

    results = run(scenario())
    refused = [r for r in results if isinstance(r, DatabaseUnavailable)]
    assert results[:5] == [True] * 5
    assert len(refused) == 15 and all("overloaded" in str(r) for r in refused)


def test_start_and_close_rules(database_url: str, fresh_schema: str) -> None:
    async def scenario() -> None:
        committer = GroupCommitter(database_url, schema=fresh_schema)
        with pytest.raises(RuntimeError, match="start"):
            await committer.write(event(1))
        await committer.start()
        with pytest.raises(RuntimeError, match="once"):
            await committer.start()
        assert await committer.write(event(1)) is True
        await committer.aclose()
        await committer.aclose()  # closing twice is fine
        with pytest.raises(DatabaseUnavailable, match="closed"):
            await committer.write(event(2))
        with pytest.raises(DatabaseUnavailable):
            await committer.exists("shop", "evt_00001")

    run(scenario())


# -- PostgreSQL away ------------------------------------------------------------------------------


def test_unreachable_database_fails_waiters_then_backs_off(
    database_url: str, fresh_schema: str
) -> None:
    nowhere = via(database_url, free_port())

    async def scenario() -> None:
        async with GroupCommitter(
            nowhere, schema=fresh_schema, backoff_initial=5.0, backoff_max=5.0
        ) as committer:
            results = await asyncio.wait_for(
                asyncio.gather(
                    *(committer.write(event(n)) for n in range(5)), return_exceptions=True
                ),
                timeout=30,
            )
            assert all(isinstance(r, DatabaseUnavailable) for r in results)
            first = results[0]
            assert isinstance(first, DatabaseUnavailable)
            assert "cannot connect" in str(first) and first.retry_after == 5.0
            # During the backoff no connection is tried: the answer says so and comes at once.
            with pytest.raises(DatabaseUnavailable, match="is unavailable") as during:
                await asyncio.wait_for(committer.write(event(6)), timeout=30)
            assert 0 < during.value.retry_after <= 5.0
            assert committer.stats.durable == 0 and committer.stats.failed == 6

    run(scenario())
    assert count(database_url, fresh_schema, "SELECT count(*) FROM webhook_events") == 0


def test_database_going_away_and_coming_back(database_url: str, fresh_schema: str) -> None:
    """Cut: every waiter gets DatabaseUnavailable, nothing is stored. Restored: writes succeed."""

    async def scenario() -> None:
        proxy = TcpProxy(*target_of(database_url))
        await proxy.open()
        committer = GroupCommitter(
            via(database_url, proxy.port),
            schema=fresh_schema,
            connect_timeout=2.0,
            backoff_initial=0.01,
            backoff_max=0.1,
        )
        try:
            await committer.start()
            assert await committer.write(event(1)) is True

            await proxy.close()
            results = await asyncio.wait_for(
                asyncio.gather(
                    *(committer.write(event(n)) for n in range(2, 12)), return_exceptions=True
                ),
                timeout=30,
            )
            assert all(isinstance(r, DatabaseUnavailable) for r in results), results
            with pytest.raises(DatabaseUnavailable):
                await committer.exists("shop", "evt_00001")

            await proxy.open()
            assert await eventually(lambda: committer.write(event(2))) is True
            assert await committer.write(event(1)) is False  # stored before the cut
            assert await eventually(lambda: committer.exists("shop", "evt_00002")) is True
        finally:
            await committer.aclose()
            await proxy.close()

    run(scenario())
    with connect(database_url, schema=fresh_schema) as conn:
        ids = [r[0] for r in conn.execute("SELECT event_id FROM webhook_events ORDER BY event_id")]
    assert ids == ["evt_00001", "evt_00002"]  # nothing of the failed writes was stored


def test_a_restarted_server_costs_no_failed_write(database_url: str, fresh_schema: str) -> None:
    """Connections dropped while idle (a server restart): the next batch reconnects and succeeds."""

    async def scenario() -> None:
        proxy = TcpProxy(*target_of(database_url))
        await proxy.open()
        try:
            async with GroupCommitter(
                via(database_url, proxy.port), schema=fresh_schema, writers=1
            ) as committer:
                assert await committer.write(event(1)) is True
                proxy.drop_connections()
                await asyncio.sleep(0.05)  # let the abort reach the client's socket
                assert await committer.write(event(2)) is True
                assert await committer.write(event(1)) is False
                assert committer.stats.failed == 0
        finally:
            await proxy.close()

    run(scenario())


def test_an_administrator_terminating_the_writers_costs_no_failed_write(
    database_url: str, fresh_schema: str
) -> None:
    """pg_terminate_backend (57P01, as in a fast shutdown) on idle writers: the next write reconnects."""
    app = f"inbox-test-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        conninfo = make_conninfo(database_url, application_name=app)
        async with GroupCommitter(conninfo, schema=fresh_schema) as committer:
            assert all(await asyncio.gather(*(committer.write(event(n)) for n in range(50))))
            with psycopg.connect(database_url, autocommit=True) as admin:
                ended = admin.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
                    " FROM pg_stat_activity WHERE application_name = %s",
                    (app,),
                ).fetchone()
            assert ended is not None and ended[0] >= 1
            await asyncio.sleep(0.05)
            answers = await asyncio.gather(*(committer.write(event(n)) for n in range(25, 75)))
            assert answers == [False] * 25 + [True] * 25
            assert committer.stats.failed == 0

    run(scenario())


def test_close_answers_queued_waiters_instead_of_hanging(
    database_url: str, fresh_schema: str
) -> None:
    """A server that accepts and never answers: closing fails queued and in-flight writes."""

    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read()  # hold the connection open, say nothing

    async def scenario() -> list[object]:
        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        committer = GroupCommitter(
            via(database_url, port), schema=fresh_schema, writers=1, connect_timeout=1.0
        )
        await committer.start()
        in_flight = asyncio.create_task(committer.write(event(1)))
        await asyncio.sleep(0.1)  # the writer is now stuck connecting
        queued = [asyncio.create_task(committer.write(event(n))) for n in range(2, 8)]
        await asyncio.sleep(0)
        await asyncio.wait_for(committer.aclose(), timeout=30)
        results = await asyncio.gather(in_flight, *queued, return_exceptions=True)
        server.close()
        for writer in accepted:
            writer.transport.abort()
        return list(results)

    results = run(scenario())
    assert len(results) == 7
    assert all(isinstance(r, DatabaseUnavailable) for r in results), results
    assert sum("closing" in str(r) for r in results) == 6


# -- the relay ------------------------------------------------------------------------------------


def write_events(database_url: str, schema: str, events: list[InboundEvent]) -> list[bool]:
    async def scenario() -> list[bool]:
        async with GroupCommitter(database_url, schema=schema) as committer:
            return list(await asyncio.gather(*(committer.write(e) for e in events)))

    return run(scenario())


def landing_rows(database_url: str, landing_schema: str) -> dict[str, dict[str, Any]]:
    """table → event_id → (received_at, payload, relayed_at)."""
    with psycopg.connect(database_url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (landing_schema,),
            )
        ]
        return {
            table: {
                event_id: (received_at, payload, relayed_at)
                for event_id, received_at, payload, relayed_at in conn.execute(
                    sql.SQL("SELECT event_id, received_at, payload, relayed_at FROM {}").format(
                        sql.Identifier(landing_schema, table)
                    )
                )
            }
            for table in tables
        }


def test_landing_table_names() -> None:
    assert landing_table_name("shop", "order.created") == "shop__order_created"
    assert landing_table_name("shop", None) == "shop__unknown"
    assert landing_table_name("shop", "...") == "shop__unknown"
    assert (
        landing_table_name("GitHub-App", "pull_request/opened") == "github_app__pull_request_opened"
    )
    assert landing_table_name("3ds", "Auth.OK") == "_3ds__auth_ok"
    long_a = landing_table_name("source", "x" * 80 + ".a")
    long_b = landing_table_name("source", "x" * 80 + ".b")
    assert len(long_a) <= 63 and len(long_b) <= 63 and long_a != long_b


def test_two_workers_deliver_each_row_exactly_once(
    database_url: str, fresh_schema: str, landing_schema: str
) -> None:
    events = [event(n) for n in range(400)]
    assert all(write_events(database_url, fresh_schema, events))

    delivered = run_relay(
        database_url,
        schema=fresh_schema,
        landing_schema=landing_schema,
        workers=2,
        drain=True,
        limit=15,
    )

    assert delivered == 400  # a row delivered twice would be counted twice
    assert (
        count(database_url, fresh_schema, "SELECT count(*) FROM outbox WHERE delivered_at IS NULL")
        == 0
    )
    landed = landing_rows(database_url, landing_schema)
    expected: dict[str, set[str]] = {}
    for e in events:
        expected.setdefault(landing_table_name(e.source, e.event_type), set()).add(e.event_id)
    assert {table: set(rows) for table, rows in landed.items()} == expected
    assert set(landed) == {
        "shop__order_created",
        "shop__order_paid",
        "shop__refund_created",
        "shop__unknown",
    }
    received_at, payload, _ = landed["shop__order_paid"]["evt_00001"]
    assert received_at == events[1].received_at and payload == json.loads(events[1].payload)


def test_skip_locked_workers_take_disjoint_rows(
    database_url: str, fresh_schema: str, landing_schema: str
) -> None:
    """While worker A holds its claimed rows, worker B is not blocked: it takes all the others."""
    assert all(write_events(database_url, fresh_schema, [event(n) for n in range(4)]))
    run_relay(database_url, schema=fresh_schema, landing_schema=landing_schema, drain=True)
    assert all(write_events(database_url, fresh_schema, [event(n) for n in range(4, 104)]))
    with (
        connect(database_url, schema=fresh_schema) as a,
        connect(database_url, schema=fresh_schema) as b,
    ):
        with a.transaction():
            assert relay_batch(a, landing_schema=landing_schema, limit=30) == 30
            b.execute("SET lock_timeout = '10s'")  # waiting for A's rows would fail the test
            assert relay_batch(b, landing_schema=landing_schema, limit=1000) == 70
        assert relay_batch(b, landing_schema=landing_schema) == 0
    assert sum(len(rows) for rows in landing_rows(database_url, landing_schema).values()) == 104


def test_workers_started_together_share_the_work(
    database_url: str, fresh_schema: str, landing_schema: str
) -> None:
    assert all(write_events(database_url, fresh_schema, [event(n) for n in range(300)]))
    start = threading.Barrier(2)
    per_worker: list[int] = [0, 0]

    def worker(index: int) -> None:
        with connect(database_url, schema=fresh_schema) as conn:
            start.wait()
            while (n := relay_batch(conn, landing_schema=landing_schema, limit=10)) > 0:
                per_worker[index] += n

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(per_worker) == 300
    assert min(per_worker) > 0  # both took part
    assert sum(len(rows) for rows in landing_rows(database_url, landing_schema).values()) == 300


def test_relaying_again_is_harmless(
    database_url: str, fresh_schema: str, landing_schema: str
) -> None:
    assert all(write_events(database_url, fresh_schema, [event(n) for n in range(50)]))
    with connect(database_url, schema=fresh_schema) as conn:
        assert relay_batch(conn, landing_schema=landing_schema) == 50
        conn.commit()
        assert relay_batch(conn, landing_schema=landing_schema) == 0  # nothing pending
        conn.commit()
        before = landing_rows(database_url, landing_schema)
        # At least once: a relay that applied but never marked the rows delivered.
        conn.execute("UPDATE outbox SET delivered_at = NULL")
        conn.commit()
        assert relay_batch(conn, landing_schema=landing_schema) == 50
        conn.commit()
    assert landing_rows(database_url, landing_schema) == before  # same rows, same relayed_at


def test_a_failing_apply_is_retried_later_without_blocking_others(
    database_url: str, fresh_schema: str, landing_schema: str
) -> None:
    refund_table = landing_table_name("shop", "refund.created")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(landing_schema)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (event_id text PRIMARY KEY, received_at timestamptz NOT NULL,"
                " payload jsonb NOT NULL CONSTRAINT has_amount CHECK (payload ? 'amount'),"
                " relayed_at timestamptz NOT NULL)"
            ).format(sql.Identifier(landing_schema, refund_table))
        )
    refunds = [
        InboundEvent("shop", f"re_{n}", "refund.created", {}, body, T0)
        for n, body in enumerate([b'{"amount": 1}', b"{}", b'{"amount": 3}'])
    ]
    orders = [event(n) for n in range(10) if n % len(TYPES) != 2]  # none of them a refund
    assert all(write_events(database_url, fresh_schema, refunds + orders))

    def outbox_row(event_id: str) -> tuple[Any, ...]:
        with connect(database_url, schema=fresh_schema) as conn:
            row = conn.execute(
                "SELECT delivered_at, attempts, last_error, available_at FROM outbox"
                " WHERE event_id = %s",
                (event_id,),
            ).fetchone()
        assert row is not None
        return tuple(row)

    now = datetime.now(UTC) + timedelta(minutes=1)  # injected, and after every available_at
    with connect(database_url, schema=fresh_schema) as conn:
        assert relay_batch(conn, landing_schema=landing_schema, now=now) == 10
        conn.commit()
        delivered_at, attempts, error, available_at = outbox_row("re_1")
        assert delivered_at is None and attempts == 1
        assert "has_amount" in error and "CheckViolation" in error
        assert available_at == now + timedelta(seconds=1)

        assert relay_batch(conn, landing_schema=landing_schema, now=now) == 0  # not due yet
        conn.commit()
        later = now + timedelta(seconds=5)
        assert relay_batch(conn, landing_schema=landing_schema, now=later) == 0  # due, fails again
        conn.commit()
        _, attempts, _, available_at = outbox_row("re_1")
        assert attempts == 2 and available_at == later + timedelta(seconds=2)  # exponential

        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT has_amount").format(
                sql.Identifier(landing_schema, refund_table)
            )
        )
        conn.commit()
        assert (
            relay_batch(conn, landing_schema=landing_schema, now=later + timedelta(minutes=1)) == 1
        )
        conn.commit()
    assert outbox_row("re_1")[0] is not None
    assert set(landing_rows(database_url, landing_schema)[refund_table]) == {"re_0", "re_1", "re_2"}


def test_retry_delay_is_capped(database_url: str, fresh_schema: str, landing_schema: str) -> None:
    """A row that failed many times waits the cap, and the exponent cannot overflow."""
    with connect(database_url, schema=fresh_schema) as conn:
        conn.execute(
            "INSERT INTO outbox (source, event_id, topic, payload, attempts)"
            " VALUES ('shop', 'orphan', %s, '{}', 5000)",
            (OUTBOX_TOPIC,),
        )
        conn.commit()
        now = datetime.now(UTC) + timedelta(minutes=1)
        assert relay_batch(conn, landing_schema=landing_schema, now=now, retry_max_seconds=60) == 0
        conn.commit()
        row = conn.execute("SELECT attempts, last_error, available_at FROM outbox").fetchone()
    assert row == (5001, "the inbox row is missing", now + timedelta(seconds=60))


def test_a_broken_connection_aborts_the_batch(
    database_url: str, fresh_schema: str, landing_schema: str
) -> None:
    """Losing the connection is not a row failure: nothing is marked, the rows stay pending."""
    assert all(write_events(database_url, fresh_schema, [event(n) for n in range(5)]))
    conn = connect(database_url, schema=fresh_schema)
    pid = conn.info.backend_pid
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError):
        relay_batch(conn, landing_schema=landing_schema)
    conn.close()
    assert (
        count(database_url, fresh_schema, "SELECT count(*) FROM outbox WHERE delivered_at IS NULL")
        == 5
    )
    assert count(database_url, fresh_schema, "SELECT coalesce(max(attempts), 0) FROM outbox") == 0


def test_run_relay_until_stopped(database_url: str, fresh_schema: str, landing_schema: str) -> None:
    stop = threading.Event()
    result: list[int] = []
    relay = threading.Thread(
        target=lambda: result.append(
            run_relay(
                database_url,
                schema=fresh_schema,
                landing_schema=landing_schema,
                workers=2,
                stop=stop,
                poll_seconds=0.05,
            )
        )
    )
    relay.start()
    try:
        assert all(write_events(database_url, fresh_schema, [event(n) for n in range(60)]))
        deadline = time.monotonic() + 30
        while count(
            database_url, fresh_schema, "SELECT count(*) FROM outbox WHERE delivered_at IS NULL"
        ):
            assert time.monotonic() < deadline, "the relay did not deliver the events"
            time.sleep(0.05)
    finally:
        stop.set()
        relay.join(timeout=30)
    assert not relay.is_alive()
    assert result == [60]


def test_run_relay_needs_stop_or_drain(database_url: str, fresh_schema: str) -> None:
    with pytest.raises(ValueError, match="drain"):
        run_relay(database_url, schema=fresh_schema, landing_schema="x_landing")
    with pytest.raises(ConfigError):
        run_relay(database_url, schema=fresh_schema, landing_schema="Bad-Name", drain=True)


def test_run_relay_in_drain_mode_raises_when_the_database_is_unreachable(
    database_url: str, fresh_schema: str
) -> None:
    nowhere = make_conninfo(database_url, port=str(free_port()))
    with pytest.raises(Exception, match="cannot connect"):
        run_relay(nowhere, schema=fresh_schema, landing_schema="x_landing", drain=True)
