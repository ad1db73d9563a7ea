"""The I/O-free pieces of the mock API, with a fake clock where time matters."""

from __future__ import annotations

import random

import pytest

from ingest.mockapi import MockConfig, create_app
from ingest.mockapi.config import FaultConfig, FaultKind, RateLimitConfig
from ingest.mockapi.errors import BadRequest
from ingest.mockapi.faults import FaultPlanner, RequestKey, draw
from ingest.mockapi.pagination import Dataset, decode_cursor, encode_cursor, parse_timestamp
from ingest.mockapi.ratelimit import RateLimiter, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_burst_refill_and_retry_after() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=0.25, burst=2, clock=clock)
    assert [bucket.take().allowed for _ in range(3)] == [True, True, False]
    rejected = bucket.take()
    assert (rejected.remaining, rejected.retry_after, rejected.reset_after) == (0, 4, 8.0)
    clock.now += 3.0
    assert not bucket.take().allowed
    clock.now += 1.0
    ok = bucket.take()
    assert ok.allowed and ok.retry_after == 0 and ok.remaining == 0
    clock.now += 1000
    assert bucket.take().remaining == 1  # refill stops at the burst size


def test_retry_after_is_at_least_one_second() -> None:
    bucket = TokenBucket(rate=100.0, burst=1, clock=FakeClock())
    bucket.take()
    decision = bucket.take()
    assert not decision.allowed and decision.retry_after == 1
    headers = decision.headers(wall_now=1000.2)
    assert headers == {
        "X-RateLimit-Limit": "1",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "1001",
        "Retry-After": "1",
    }


def test_rate_limiter_scopes() -> None:
    clock = FakeClock()
    per_client = RateLimiter(RateLimitConfig(rate=1.0, burst=1, scope="client"), clock=clock)
    assert per_client.check("a").allowed and per_client.check("b").allowed
    shared = RateLimiter(RateLimitConfig(rate=1.0, burst=1, scope="global"), clock=clock)
    assert shared.check("a").allowed and not shared.check("b").allowed


def test_cursor_round_trip_and_junk() -> None:
    for last_id in (0, 1, 999, 10**12):
        cursor = encode_cursor(last_id)
        assert decode_cursor(cursor) == last_id and str(last_id) not in cursor
    for junk in ("", "!!!", "djE6", "djE6LTE", encode_cursor(5)[:-1] + "$"):
        with pytest.raises(BadRequest):
            decode_cursor(junk)


def test_timestamps() -> None:
    assert parse_timestamp("2026-01-01T00:00:00Z") == parse_timestamp("2026-01-01T01:00:00+01:00")
    assert parse_timestamp("2026-01-01T00:00:00") == parse_timestamp("2026-01-01T00:00:00Z")
    with pytest.raises(BadRequest):
        parse_timestamp("soon")


def test_dataset_filters_strictly_after() -> None:
    data = Dataset.generate(10, seed=1)
    since = parse_timestamp(str(data.records[3]["updated_at"]))
    page = data.slice(offset=0, limit=100, updated_since=since)
    assert [r["id"] for r in page.records] == [5, 6, 7, 8, 9, 10] and not page.has_more
    page = data.after(after_id=7, limit=2, updated_since=since)
    assert [r["id"] for r in page.records] == [8, 9] and page.has_more and page.total == 6


def test_draws_are_uniform_enough_and_stable() -> None:
    key: RequestKey = ("c", "GET", "/x")
    assert draw(0, key, 0) == draw(0, key, 0) != draw(0, key, 1)
    values = [draw(0, key, n)[0] for n in range(4000)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert 0.27 < sum(v < 0.3 for v in values) / len(values) < 0.33


def test_planner_is_independent_of_arrival_order() -> None:
    config = FaultConfig(rate=0.3)
    keys: list[RequestKey] = [("c", "GET", f"/r?i={i}") for i in range(200)] * 2
    shuffled = list(keys)
    random.Random(1).shuffle(shuffled)

    def decisions(order: list[RequestKey]) -> dict[RequestKey, list[FaultKind | None]]:
        planner = FaultPlanner(config, seed=9)
        out: dict[RequestKey, list[FaultKind | None]] = {}
        for key in order:
            out.setdefault(key, []).append(planner.decide(key))
        return out

    assert decisions(keys) == decisions(shuffled)
    kinds = {k for ks in decisions(keys).values() for k in ks if k is not None}
    assert kinds == set(FaultKind)  # default weights reach every kind


def test_weights_must_allow_some_fault() -> None:
    with pytest.raises(ValueError, match="at least one fault weight"):
        FaultConfig(weights={FaultKind.DROP: 0.0})


def test_create_app_takes_a_config() -> None:
    app = create_app(MockConfig(records=3, seed=4))
    assert len(app.state.mock.dataset) == 3
    paths = {getattr(route, "path", None) for route in app.routes}
    assert {"/healthz", "/_admin/config", "/rest/cursor/customers"} <= paths
