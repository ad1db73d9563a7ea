"""Webhook dedup: the generational Bloom filter, its counters, and the rebuild from PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.errors import ConfigError
from ingest.state.db import connect
from ingest.webhooks.dedup import (
    DAY_SECONDS,
    DEFAULT_GENERATION_SECONDS,
    DEFAULT_GENERATIONS,
    EVENT_EXISTS_SQL,
    KEY_SEPARATOR,
    RETRY_HORIZON_SECONDS,
    Deduplicator,
    GenerationalBloom,
    GenerationInfo,
    dedup_key,
    event_exists,
    event_id_for,
    expected_fpr,
    optimal_bits,
    optimal_hashes,
    rebuild_from_postgres,
    stable_hash,
)
from ingest.webhooks.signature import HmacSha256Scheme, StandardWebhooksScheme, StripeScheme

START = 1_699_920_000.0  # midnight UTC, so slices start at whole days from here


class FakeClock:
    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, days: float) -> None:
        self.now += days * DAY_SECONDS


def ring(clock: FakeClock, capacity: int = 1_000, **options: Any) -> GenerationalBloom:
    return GenerationalBloom(capacity, clock=clock, **options)


# -- event ids ------------------------------------------------------------------------------------


def test_event_id_for_uses_the_schemes_id() -> None:
    body = json.dumps({"id": "evt_123", "type": "invoice.paid"}).encode()
    assert event_id_for(StripeScheme(["whsec_x"]), {}, body) == "evt_123"
    headers = {"webhook-id": "msg_1"}
    assert event_id_for(StandardWebhooksScheme(["whsec_eHh4"]), headers, b"{}") == "msg_1"
    github = HmacSha256Scheme(["s"], header="X-Sig", event_id_header="X-GitHub-Delivery")
    assert event_id_for(github, {"x-github-delivery": "d-1"}, b"{}") == "d-1"


def test_event_id_for_falls_back_to_the_body_hash() -> None:
    body = b'["no", "id"]'
    expected = "sha256:" + hashlib.sha256(body).hexdigest()
    assert event_id_for(StripeScheme(["whsec_x"]), {}, body) == expected
    assert event_id_for(StandardWebhooksScheme(["whsec_eHh4"]), {}, body) == expected
    assert event_id_for(HmacSha256Scheme(["s"], header="X-Sig"), {}, body) == expected


# -- theory ---------------------------------------------------------------------------------------


def test_theory_helpers_match_the_textbook_formulas() -> None:
    m = optimal_bits(10_000, 0.01)
    assert m == math.ceil(-10_000 * math.log(0.01) / math.log(2) ** 2) == 95_851
    assert optimal_hashes(10_000, m) == 7
    assert expected_fpr(10_000, m, 7) == pytest.approx(0.01, rel=0.01)
    assert expected_fpr(0, m, 7) == 0.0
    assert expected_fpr(40_000, m, 7) > 0.3  # overfilled four times


def test_theory_helpers_reject_nonsense() -> None:
    with pytest.raises(ConfigError):
        optimal_bits(100, 1.0)
    with pytest.raises(ConfigError):
        optimal_bits(0, 0.01)


# -- the filter -----------------------------------------------------------------------------------


def test_stable_hash_is_a_fixed_signed_128_bit_value() -> None:
    digest = hashlib.blake2b(b"evt_1", digest_size=16).digest()
    assert stable_hash("evt_1") == int.from_bytes(digest, "big", signed=True)
    assert -(2**127) <= stable_hash("evt_1") < 2**127
    assert stable_hash("evt_1") != stable_hash("evt_2")


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=40), st.floats(min_value=0.0, max_value=1.0)),
        max_size=150,
    )
)
def test_no_false_negatives_within_the_window(events: list[tuple[str, float]]) -> None:
    clock = FakeClock(START + 10 * DAY_SECONDS)
    bloom = ring(clock, capacity=200)
    window = bloom.window_seconds
    for key, fraction in events:
        assert bloom.add(key, at=clock() - fraction * window)
    assert bloom.early_drops == 0  # 150 keys never overflow a generation of 200
    assert all(key in bloom for key, _ in events)


def test_false_positive_rate_at_capacity_is_the_configured_one() -> None:
    clock = FakeClock()
    for error_rate in (0.01, 0.001):
        bloom = ring(clock, capacity=10_000, error_rate=error_rate)
        for i in range(10_000):
            bloom.add(f"evt_{i}")
        assert bloom.early_rotations == 0
        probes = 50_000
        hits = sum(f"probe_{i}" in bloom for i in range(probes))
        # rbloom sizes m and k by the formulas; 50k probes measure the rate to about ±15-45 %.
        assert 0.5 * error_rate <= hits / probes <= 1.5 * error_rate


def test_a_full_generation_rotates_early() -> None:
    clock = FakeClock()
    bloom = ring(clock, capacity=100)
    keys = [f"evt_{i}" for i in range(250)]
    for key in keys:
        bloom.add(key)
    assert bloom.early_rotations == 2
    assert bloom.early_drops == 0
    assert [g.items for g in bloom.live_generations] == [100, 100, 50]
    assert {g.start for g in bloom.live_generations} == {START}
    assert all(key in bloom for key in keys)


def test_early_rotation_on_a_full_ring_drops_the_oldest_generation() -> None:
    clock = FakeClock()
    bloom = ring(clock, capacity=100, generations=2)
    first, rest = [f"a_{i}" for i in range(100)], [f"b_{i}" for i in range(200)]
    for key in first + rest:
        bloom.add(key)
    assert bloom.early_rotations == 2
    assert bloom.early_drops == 1
    assert [g.items for g in bloom.live_generations] == [100, 100]
    assert all(key in bloom for key in rest)
    # The dropped generation's keys are forgotten, up to a false positive's worth.
    assert sum(key in bloom for key in first) <= 2


def test_time_rotation_keeps_keys_for_the_window_and_forgets_them_after() -> None:
    clock = FakeClock()
    bloom = ring(clock)
    assert bloom.window_seconds == 3 * DAY_SECONDS
    late = START + DAY_SECONDS - 1  # the last second of the first slice: the shortest stay
    bloom.add("early", at=START)
    clock.now = late
    bloom.add("late")
    clock.now = late + bloom.window_seconds
    assert "early" in bloom and "late" in bloom
    clock.now = START + DEFAULT_GENERATIONS * DAY_SECONDS  # the first slice leaves the ring
    assert "early" not in bloom and "late" not in bloom
    assert bloom.live_generations == ()
    assert bloom.size_bytes == 0


def test_generations_follow_the_clock() -> None:
    clock = FakeClock()
    bloom = ring(clock)
    for day in range(6):
        clock.now = START + day * DAY_SECONDS + 3_600
        bloom.add(f"day_{day}")
    starts = [g.start for g in bloom.live_generations]
    assert starts == [START + d * DAY_SECONDS for d in (2, 3, 4, 5)]
    assert bloom.live_since == START + 2 * DAY_SECONDS
    assert [f"day_{d}" in bloom for d in range(6)] == [False, False, True, True, True, True]
    assert bloom.early_rotations == bloom.early_drops == 0


def test_adds_outside_the_window_are_refused_and_future_ones_count_as_now() -> None:
    clock = FakeClock(START + 10 * DAY_SECONDS)
    bloom = ring(clock)
    assert not bloom.add("too old", at=clock() - 4 * DAY_SECONDS)
    assert "too old" not in bloom
    assert bloom.add("from a fast clock", at=clock() + 2 * DAY_SECONDS)
    assert bloom.live_generations == (GenerationInfo(start=clock(), items=1),)


def test_an_add_older_than_a_full_ring_is_refused() -> None:
    clock = FakeClock(START + 3 * DAY_SECONDS)
    bloom = ring(clock, capacity=1, generations=2)
    bloom.add("today a")
    bloom.add("today b")  # a second generation for today fills the ring
    assert not bloom.add("yesterday", at=clock() - DAY_SECONDS)
    assert bloom.early_drops == 1
    assert [g.start for g in bloom.live_generations] == [clock(), clock()]


def test_two_filters_with_the_same_adds_give_the_same_answers() -> None:
    clock = FakeClock()
    a, b = ring(clock, capacity=500, error_rate=0.05), ring(clock, capacity=500, error_rate=0.05)
    for i in range(500):
        a.add(f"evt_{i}")
        b.add(f"evt_{i}")
    probes = [f"probe_{i}" for i in range(5_000)]
    answers_a, answers_b = [p in a for p in probes], [p in b for p in probes]
    assert answers_a == answers_b
    assert any(answers_a)  # at 5 % there are false positives to agree on


def test_defaults_cover_the_retry_horizon_in_bounded_memory() -> None:
    bloom = GenerationalBloom(100_000)
    assert bloom.generations == DEFAULT_GENERATIONS
    assert bloom.generation_seconds == DEFAULT_GENERATION_SECONDS
    assert bloom.window_seconds >= RETRY_HORIZON_SECONDS
    assert bloom.size_bytes == 0
    bloom.add("x")
    per_filter = bloom.size_bytes
    assert abs(per_filter * 8 - optimal_bits(100_000, bloom.error_rate)) < 8  # rbloom: whole bytes
    assert bloom.max_size_bytes == DEFAULT_GENERATIONS * per_filter


@pytest.mark.parametrize(
    "options",
    [
        {"capacity": 0},
        {"capacity": 10, "error_rate": 0.0},
        {"capacity": 10, "error_rate": 1.5},
        {"capacity": 10, "generations": 1},
        {"capacity": 10, "generation_seconds": 0},
    ],
)
def test_invalid_configuration_is_a_config_error(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        GenerationalBloom(**options)


# -- the deduplicator -----------------------------------------------------------------------------


def test_dedup_key_joins_source_and_id_with_the_unit_separator() -> None:
    assert dedup_key("stripe", "evt_1") == "stripe\x1fevt_1"
    assert KEY_SEPARATOR == "\x1f"
    assert dedup_key("a", "b c") != dedup_key("a b", "c")


def test_counters() -> None:
    clock = FakeClock()
    dedup = Deduplicator(ring(clock, capacity=100))
    assert not dedup.check("stripe", "evt_1")
    assert dedup.remember("stripe", "evt_1")
    assert dedup.check("stripe", "evt_1")
    assert not dedup.check("github", "evt_1")  # the source is part of the key
    dedup.record_confirmation(duplicate=True)
    dedup.record_confirmation(duplicate=False)
    dedup.record_missed_duplicate()
    assert (dedup.checks, dedup.hits) == (3, 1)
    assert (dedup.confirmed_duplicates, dedup.false_positives, dedup.missed_duplicates) == (1, 1, 1)
    assert dedup.false_positive_rate == 1.0  # 1 false positive among 3 - 1 - 1 new events


def test_false_positive_rate_is_zero_before_any_new_event() -> None:
    assert Deduplicator(ring(FakeClock())).false_positive_rate == 0.0


# -- PostgreSQL -----------------------------------------------------------------------------------


@pytest.fixture
def conn(database_url: str, fresh_schema: str) -> Iterator[psycopg.Connection[Any]]:
    with connect(database_url, schema=fresh_schema, autocommit=True) as connection:
        yield connection


def insert(conn: psycopg.Connection[Any], source: str, event_id: str, at: float) -> None:
    conn.execute(
        "INSERT INTO webhook_events (source, event_id, received_at, payload)"
        " VALUES (%s, %s, %s, '{}')",
        (source, event_id, datetime.fromtimestamp(at, UTC)),
    )


def test_event_exists_asks_the_unique_key(conn: psycopg.Connection[Any]) -> None:
    insert(conn, "stripe", "evt_1", START)
    assert event_exists(conn, "stripe", "evt_1")
    assert not event_exists(conn, "stripe", "evt_2")
    assert not event_exists(conn, "github", "evt_1")
    assert "webhook_events" in EVENT_EXISTS_SQL


def test_rebuild_restores_the_window_and_not_older_rows(conn: psycopg.Connection[Any]) -> None:
    clock = FakeClock(START + 10 * DAY_SECONDS + 3_600)
    rows = {
        ("stripe", "evt_today"): clock() - 60,
        ("stripe", "evt_two_days"): clock() - 2 * DAY_SECONDS,
        ("github", "d-2.9"): clock() - 2.9 * DAY_SECONDS,
        ("stripe", "evt_old"): clock() - 5 * DAY_SECONDS,
        ("stripe", "evt_ancient"): clock() - 40 * DAY_SECONDS,
    }
    for (source, event_id), at in rows.items():
        insert(conn, source, event_id, at)

    dedup = Deduplicator(ring(clock))
    assert not dedup.check("stripe", "evt_today")  # the hole a restart would open
    assert rebuild_from_postgres(dedup, conn) == 3
    assert dedup.check("stripe", "evt_today")
    assert dedup.check("stripe", "evt_two_days")
    assert dedup.check("github", "d-2.9")
    assert not dedup.check("stripe", "evt_old")
    assert not dedup.check("stripe", "evt_ancient")
    starts = [g.start for g in dedup.bloom.live_generations]
    assert starts == [START + d * DAY_SECONDS for d in (7, 8, 10)]


def test_rebuild_with_a_shorter_span_and_in_a_transaction(
    database_url: str, fresh_schema: str
) -> None:
    clock = FakeClock(START + 10 * DAY_SECONDS + 3_600)
    with connect(database_url, schema=fresh_schema) as conn:  # not autocommit: the caller's txn
        insert(conn, "stripe", "evt_recent", clock() - 600)
        insert(conn, "stripe", "evt_yesterday", clock() - DAY_SECONDS)
        dedup = Deduplicator(ring(clock))
        assert rebuild_from_postgres(dedup, conn, since_seconds=3_600) == 1
        assert dedup.check("stripe", "evt_recent")
        assert not dedup.check("stripe", "evt_yesterday")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS


def test_rebuild_gives_the_same_filter_as_the_live_adds(conn: psycopg.Connection[Any]) -> None:
    clock = FakeClock(START + 10 * DAY_SECONDS)
    live = Deduplicator(ring(clock, capacity=100, error_rate=0.05))
    for i in range(300):
        at = clock() - 2 * DAY_SECONDS + i * 500
        insert(conn, "stripe", f"evt_{i}", at)
        live.remember("stripe", f"evt_{i}", at=at)
    rebuilt = Deduplicator(ring(clock, capacity=100, error_rate=0.05))
    assert rebuild_from_postgres(rebuilt, conn) == 300
    assert live.bloom.early_rotations == 2  # two days of 173 and 127 events, 100 per generation
    assert rebuilt.bloom.live_generations == live.bloom.live_generations
    probes = [f"probe_{i}" for i in range(2_000)]
    assert [rebuilt.check("stripe", p) for p in probes] == [live.check("stripe", p) for p in probes]
