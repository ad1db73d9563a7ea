"""`ingest.http.ratelimit` (exported from notebooks/01-retry-client/03-token-bucket.ipynb).

Unit tests run the in-process bucket and the transport on fake clocks and ``httpx.MockTransport``.
Redis tests use the session's real Redis, every test under a prefix of its own. Server time cannot be
faked, so "time passes" for a Redis bucket by moving its stored timestamps back (``travel``): the
script then sees exactly that much elapsed server time, and nothing really waits.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ingest.errors import ConfigError, ConnectError, ReadTimeout, is_transient
from ingest.http.ratelimit import (
    TOKEN_BUCKET_LUA,
    AsyncRedisTokenBucket,
    LocalTokenBucket,
    RateLimitTransport,
    RedisTokenBucket,
)
from ingest.http.transport import WrappingTransport
from ingest.netutil import free_port

KEY = "api.example.com"


class FakeClock:
    """Time moves only when something sleeps on it (or the test says so)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


# -- LocalTokenBucket ----------------------------------------------------------------------------


def local_bucket(clock: FakeClock, capacity: int = 5, rate: float = 10.0) -> LocalTokenBucket:
    return LocalTokenBucket(capacity=capacity, rate=rate, clock=clock, sleep=clock.sleep)


def test_local_bucket_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    bucket = local_bucket(clock)
    waits = [bucket.acquire(KEY) for _ in range(7)]
    assert waits[:5] == [0.0] * 5
    assert waits[5:] == pytest.approx([0.1, 0.1])
    assert clock.slept == pytest.approx([0.1, 0.1])


def test_local_bucket_refills_by_elapsed_time_up_to_capacity() -> None:
    clock = FakeClock()
    bucket = local_bucket(clock)
    bucket.acquire(KEY, 5)
    assert bucket.level(KEY) == 0.0
    clock.now += 0.25
    assert bucket.level(KEY) == pytest.approx(2.5)
    clock.now += 60
    assert bucket.level(KEY) == 5.0


def test_local_try_acquire_takes_nothing_when_short() -> None:
    clock = FakeClock()
    bucket = local_bucket(clock)
    bucket.acquire(KEY, 4)
    assert bucket.try_acquire(KEY, 3) == pytest.approx(0.2)
    assert bucket.level(KEY) == pytest.approx(1.0)


@pytest.mark.parametrize("n", [0, -1, 6])
def test_local_bucket_rejects_impossible_amounts(n: int) -> None:
    bucket = local_bucket(FakeClock())
    with pytest.raises(ValueError):
        bucket.acquire(KEY, n)


def test_local_drain_blocks_refill_until_its_deadline() -> None:
    clock = FakeClock()
    bucket = local_bucket(clock)
    bucket.drain(KEY, 2.0)
    assert bucket.try_acquire(KEY) == pytest.approx(2.1)
    clock.now += 1.99
    assert bucket.level(KEY) == 0.0
    assert bucket.try_acquire(KEY) > 0
    clock.now += 0.11
    assert bucket.try_acquire(KEY) == 0.0


def test_local_acquire_sleeps_through_a_drain() -> None:
    clock = FakeClock()
    bucket = local_bucket(clock)
    bucket.drain(KEY, 3.0)
    assert bucket.acquire(KEY, 2) == pytest.approx(3.2)
    assert clock.slept == pytest.approx([3.2])


def test_local_keys_are_isolated() -> None:
    clock = FakeClock()
    bucket = local_bucket(clock)
    bucket.drain("a", 10.0)
    assert bucket.try_acquire("b", 5) == 0.0


# -- RedisTokenBucket ----------------------------------------------------------------------------


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    value = f"test:ratelimit:{uuid.uuid4().hex}:"
    yield value
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=value + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def server_time(r: redis.Redis) -> float:
    seconds, micros = r.time()
    return seconds + micros / 1_000_000


def travel(r: redis.Redis, hash_key: str, seconds: float) -> None:
    """Let ``seconds`` of server time pass for one bucket by moving its stored times back."""
    assert r.exists(hash_key), "only an existing bucket can travel in time"
    for field in ("updated", "blocked_until"):
        r.hincrbyfloat(hash_key, field, -seconds)


def dead_client() -> redis.Redis:
    """A client of a port nobody listens on, that gives up at once."""
    return redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))


def test_redis_tokens_never_go_negative(r: redis.Redis, prefix: str, redis_url: str) -> None:
    buckets = [
        RedisTokenBucket(redis.Redis.from_url(redis_url), capacity=3, rate=0.01, prefix=prefix)
        for _ in range(2)
    ]
    granted = 0
    for i in range(10):
        wait = buckets[i % 2].try_acquire(KEY)
        granted += wait == 0
        tokens = float(r.hget(buckets[0].redis_key(KEY), "tokens") or b"nan")
        assert tokens >= 0
    assert granted == 3
    assert buckets[0].level(KEY) >= 0
    # Short by about three tokens at 0.01/s: the wait says so, and nothing was taken.
    assert buckets[1].try_acquire(KEY, 3) == pytest.approx(300, abs=1)
    for bucket in buckets:
        bucket.client.close()


def test_redis_bucket_refills_by_elapsed_server_time(r: redis.Redis, prefix: str) -> None:
    bucket = RedisTokenBucket(r, capacity=5, rate=4, prefix=prefix)
    bucket.acquire(KEY, 5)
    hash_key = bucket.redis_key(KEY)
    before = server_time(r)
    r.hset(hash_key, mapping={"tokens": 0, "updated": f"{before - 0.5:.6f}"})
    level = bucket.level(KEY)
    after = server_time(r)
    # Half a second of server time at 4 tokens/s, plus whatever passed between the reads.
    assert 2.0 <= level <= 2.0 + 4 * (after - before) + 1e-6
    travel(r, hash_key, 100.0)
    assert bucket.level(KEY) == 5.0


def test_redis_level_writes_nothing(r: redis.Redis, prefix: str) -> None:
    bucket = RedisTokenBucket(r, capacity=5, rate=4, prefix=prefix)
    assert bucket.level(KEY) == 5.0
    assert not r.exists(bucket.redis_key(KEY))


def test_redis_acquire_more_than_capacity_raises(prefix: str) -> None:
    # A dead client proves the check happens before any call to Redis.
    bucket = RedisTokenBucket(dead_client(), capacity=5, rate=4, prefix=prefix)
    with pytest.raises(ValueError, match="capacity 5"):
        bucket.acquire(KEY, 6)
    with pytest.raises(ValueError):
        bucket.try_acquire(KEY, 0)


def test_redis_drain_blocks_every_acquirer_until_its_deadline(
    r: redis.Redis, prefix: str, redis_url: str
) -> None:
    hash_key = f"{prefix}{KEY}"
    slept: list[float] = []

    def time_travel(seconds: float) -> None:
        slept.append(seconds)
        travel(r, hash_key, seconds)

    workers = [
        RedisTokenBucket(
            redis.Redis.from_url(redis_url), capacity=5, rate=10, prefix=prefix, sleep=time_travel
        )
        for _ in range(3)
    ]
    workers[0].drain(KEY, 5.0)
    for worker in workers:
        assert 5.0 - 0.5 < worker.try_acquire(KEY) <= 5.1
        assert worker.level(KEY) == 0.0
    travel(r, hash_key, 4.9)
    assert workers[1].try_acquire(KEY) > 0
    assert workers[1].level(KEY) == 0.0
    # The acquirer sleeps exactly the remaining block plus one token's refill, once.
    waited = workers[2].acquire(KEY)
    assert slept == [waited]
    assert 0.1 < waited <= 0.2 + 1e-6
    assert workers[0].try_acquire(KEY) > 0  # that refilled token is gone
    for worker in workers:
        worker.client.close()


def test_redis_keys_are_isolated(r: redis.Redis, prefix: str) -> None:
    bucket = RedisTokenBucket(r, capacity=5, rate=10, prefix=prefix)
    bucket.drain("a", 30.0)
    assert bucket.try_acquire("b", 5) == 0.0
    assert bucket.try_acquire("a") > 29
    other_prefix = RedisTokenBucket(r, capacity=5, rate=10, prefix=prefix + "other:")
    assert other_prefix.try_acquire("a", 5) == 0.0


def test_redis_bucket_hash_expires_once_it_would_be_full(r: redis.Redis, prefix: str) -> None:
    bucket = RedisTokenBucket(r, capacity=5, rate=10, prefix=prefix)
    bucket.acquire(KEY, 5)
    # Empty: refilled after 0.5 s; the hash lives that long plus a second.
    assert 1000 < r.pttl(bucket.redis_key(KEY)) <= 1500
    bucket.drain(KEY, 20.0)
    assert 20_000 < r.pttl(bucket.redis_key(KEY)) <= 21_500


def test_redis_script_reloads_itself_on_noscript(r: redis.Redis, prefix: str) -> None:
    bucket = RedisTokenBucket(r, capacity=5, rate=10, prefix=prefix)
    # A hash the server has never seen: EVALSHA answers NOSCRIPT, as after a restart or failover.
    bucket.script.sha = hashlib.sha1(uuid.uuid4().bytes).hexdigest()
    assert bucket.try_acquire(KEY) == 0.0
    assert bucket.script.sha == hashlib.sha1(TOKEN_BUCKET_LUA.encode()).hexdigest()
    assert r.script_exists(bucket.script.sha) == [True]


def test_redis_unreachable_fails_closed(prefix: str) -> None:
    slept: list[float] = []
    bucket = RedisTokenBucket(dead_client(), capacity=5, rate=10, prefix=prefix, sleep=slept.append)
    with pytest.raises(ConnectError) as excinfo:
        bucket.acquire(KEY)
    assert is_transient(excinfo.value)
    with pytest.raises(ConnectError):
        bucket.drain(KEY, 1.0)
    assert slept == []


def test_redis_that_does_not_answer_is_a_read_timeout(prefix: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        client = redis.Redis(
            port=silent.getsockname()[1], socket_timeout=0.2, retry=Retry(NoBackoff(), 0)
        )
        bucket = RedisTokenBucket(client, capacity=5, rate=10, prefix=prefix)
        with pytest.raises(ReadTimeout):
            bucket.try_acquire(KEY)
        client.close()


def test_wrong_credentials_are_a_config_error_even_with_a_fallback(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, username=f"nobody-{uuid.uuid4().hex}", password="x")
    for fallback in ("closed", "local"):
        bucket = RedisTokenBucket(client, capacity=5, rate=10, fallback=fallback)
        with pytest.raises(ConfigError) as excinfo:
            bucket.try_acquire(KEY)
        assert not is_transient(excinfo.value)
    client.close()


def test_redis_unreachable_falls_back_to_a_local_share() -> None:
    clock = FakeClock()
    bucket = RedisTokenBucket(
        dead_client(),
        capacity=5,
        rate=20,
        fallback="local",
        fallback_share=0.25,
        clock=clock,
        sleep=clock.sleep,
    )
    # 20/s shared by 4 workers: 5/s each, and the local bucket starts empty (no switch-over burst).
    assert [bucket.acquire(KEY) for _ in range(3)] == pytest.approx([0.2, 0.2, 0.2])
    bucket.drain(KEY, 1.0)
    assert bucket.try_acquire(KEY) == pytest.approx(1.2)


def test_fallback_goes_back_to_redis_after_the_recheck_interval(
    r: redis.Redis, prefix: str
) -> None:
    clock = FakeClock()
    bucket = RedisTokenBucket(
        r, capacity=5, rate=10, prefix=prefix, fallback="local", clock=clock, sleep=clock.sleep
    )
    real_script = bucket.script
    calls: list[str] = []

    def flaky(*, keys: list[str], args: list[object]) -> object:
        calls.append("redis")
        if len(calls) == 1:
            raise redis.exceptions.ConnectionError("connection reset")
        return real_script(keys=keys, args=args)

    bucket.script = flaky
    assert bucket.try_acquire(KEY) > 0  # Redis failed: the empty local bucket answers
    assert bucket.try_acquire(KEY) > 0  # still local: Redis is not asked again yet
    assert calls == ["redis"]
    clock.now += bucket.fallback_recheck
    assert bucket.try_acquire(KEY) == 0.0  # Redis again, whose bucket is full
    assert calls == ["redis", "redis"]
    assert r.exists(bucket.redis_key(KEY))


# -- AsyncRedisTokenBucket -----------------------------------------------------------------------


def test_async_bucket_waits_drains_and_reloads(redis_url: str, prefix: str) -> None:
    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        slept: list[float] = []

        async def time_travel(seconds: float) -> None:
            slept.append(seconds)
            for field in ("updated", "blocked_until"):
                await client.hincrbyfloat(f"{prefix}{KEY}", field, -seconds)

        bucket = AsyncRedisTokenBucket(
            client, capacity=2, rate=10, prefix=prefix, sleep=time_travel
        )
        bucket.script.sha = hashlib.sha1(uuid.uuid4().bytes).hexdigest()  # forces NOSCRIPT
        assert [await bucket.acquire(KEY) for _ in range(2)] == [0.0, 0.0]
        assert 0.05 < await bucket.try_acquire(KEY) <= 0.1
        await bucket.drain(KEY, 3.0)
        assert await bucket.level(KEY) == 0.0
        waited = await bucket.acquire(KEY)
        assert slept == [waited]
        assert 3.0 < waited <= 3.1 + 1e-6
        assert 0 < await client.pttl(bucket.redis_key(KEY)) <= 1200
        with pytest.raises(ValueError):
            await bucket.acquire(KEY, 3)
        await client.aclose()

    asyncio.run(scenario())


def test_async_bucket_fails_closed_or_falls_back() -> None:
    async def scenario() -> None:
        port = free_port()
        client = aioredis.Redis(port=port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
        closed = AsyncRedisTokenBucket(client, capacity=5, rate=10)
        with pytest.raises(ConnectError):
            await closed.acquire(KEY)
        clock = FakeClock()
        slept: list[float] = []

        async def fake_sleep(seconds: float) -> None:
            slept.append(seconds)
            clock.now += seconds

        local = AsyncRedisTokenBucket(
            client,
            capacity=5,
            rate=10,
            fallback="local",
            fallback_share=0.5,
            clock=clock,
            sleep=fake_sleep,
        )
        assert await local.acquire(KEY) == pytest.approx(0.2)
        await local.drain(KEY, 1.0)
        assert await local.level(KEY) == 0.0
        await client.aclose()

    asyncio.run(scenario())


# -- RateLimitTransport --------------------------------------------------------------------------


class RecordingBucket:
    """A sync bucket that only records what the transport asks of it."""

    def __init__(self, events: list[tuple[object, ...]]) -> None:
        self.events = events

    def acquire(self, key: str, n: int = 1) -> float:
        self.events.append(("acquire", key, n))
        return 0.0

    def drain(self, key: str, seconds: float) -> None:
        self.events.append(("drain", key, seconds))


class AsyncRecordingBucket:
    def __init__(self, events: list[tuple[object, ...]]) -> None:
        self.events = events

    async def acquire(self, key: str, n: int = 1) -> float:
        self.events.append(("acquire", key, n))
        return 0.0

    async def drain(self, key: str, seconds: float) -> None:
        self.events.append(("drain", key, seconds))


def recording_upstream(
    events: list[tuple[object, ...]], responses: list[httpx.Response]
) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        events.append(("send", request.url.path))
        return responses.pop(0) if responses else httpx.Response(200)

    return httpx.MockTransport(handler)


def test_transport_takes_tokens_before_every_attempt() -> None:
    events: list[tuple[object, ...]] = []
    transport = RateLimitTransport(recording_upstream(events, []), RecordingBucket(events))
    request = httpx.Request("GET", "https://api.example.com/a")
    for _ in range(3):  # what a retry layer outside does: the same request, attempt after attempt
        assert transport.handle_request(request).status_code == 200
    assert events == [("acquire", "api.example.com", 1), ("send", "/a")] * 3


def test_transport_key_and_cost_come_from_the_request() -> None:
    events: list[tuple[object, ...]] = []
    transport = RateLimitTransport(
        recording_upstream(events, []),
        RecordingBucket(events),
        key_for=lambda req: req.headers["X-Account"],
        cost=lambda req: int(req.url.params["per_page"]) // 50,
    )
    with httpx.Client(transport=transport) as client:
        client.get(
            "https://api.example.com/p", params={"per_page": 100}, headers={"X-Account": "a1"}
        )
    assert events[0] == ("acquire", "a1", 2)


def test_transport_drains_on_429_for_the_retry_after_seconds() -> None:
    events: list[tuple[object, ...]] = []
    upstream = recording_upstream(events, [httpx.Response(429, headers={"Retry-After": "7"})])
    with httpx.Client(transport=RateLimitTransport(upstream, RecordingBucket(events))) as client:
        response = client.get("https://api.example.com/x")
    assert response.status_code == 429  # passed on: retrying is the retry layer's decision
    assert events[-1] == ("drain", "api.example.com", 7.0)


def test_transport_reads_an_http_date_against_the_servers_date() -> None:
    events: list[tuple[object, ...]] = []
    server_now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    headers = {
        "Date": format_datetime(server_now, usegmt=True),
        "Retry-After": format_datetime(server_now + timedelta(seconds=30), usegmt=True),
    }
    # The client's own clock is a day off: the server's Date header must win.
    transport = RateLimitTransport(
        recording_upstream(events, [httpx.Response(429, headers=headers)]),
        RecordingBucket(events),
        now=lambda: server_now + timedelta(days=1),
    )
    transport.handle_request(httpx.Request("GET", "https://api.example.com/x"))
    assert events[-1] == ("drain", "api.example.com", 30.0)


def test_transport_http_date_without_a_date_header_uses_its_clock() -> None:
    events: list[tuple[object, ...]] = []
    when = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    headers = {"Retry-After": format_datetime(when, usegmt=True)}
    transport = RateLimitTransport(
        recording_upstream(events, [httpx.Response(429, headers=headers)]),
        RecordingBucket(events),
        now=lambda: when - timedelta(seconds=12),
    )
    transport.handle_request(httpx.Request("GET", "https://api.example.com/x"))
    assert events[-1] == ("drain", "api.example.com", 12.0)


@pytest.mark.parametrize(
    ("retry_after", "drained"),
    [(None, 1.5), ("soon", 1.5), ("86400", 60.0), ("0", 0.0)],
)
def test_transport_drain_without_or_with_an_odd_hint(
    retry_after: str | None, drained: float
) -> None:
    events: list[tuple[object, ...]] = []
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    transport = RateLimitTransport(
        recording_upstream(events, [httpx.Response(429, headers=headers)]),
        RecordingBucket(events),
        drain_without_hint=1.5,
        max_drain=60.0,
    )
    transport.handle_request(httpx.Request("GET", "https://api.example.com/x"))
    assert events[-1] == ("drain", "api.example.com", drained)


def test_transport_does_not_drain_on_other_errors() -> None:
    events: list[tuple[object, ...]] = []
    upstream = recording_upstream(events, [httpx.Response(503, headers={"Retry-After": "5"})])
    transport = RateLimitTransport(upstream, RecordingBucket(events))
    transport.handle_request(httpx.Request("GET", "https://api.example.com/x"))
    assert [e[0] for e in events] == ["acquire", "send"]


def test_transport_429_holds_every_worker_sharing_the_redis_bucket(
    prefix: str, redis_url: str
) -> None:
    def worker_bucket() -> RedisTokenBucket:
        return RedisTokenBucket(redis.Redis.from_url(redis_url), capacity=5, rate=10, prefix=prefix)

    mine, theirs = worker_bucket(), worker_bucket()
    upstream = httpx.MockTransport(lambda _: httpx.Response(429, headers={"Retry-After": "20"}))
    with httpx.Client(transport=RateLimitTransport(upstream, mine)) as client:
        client.get("https://api.example.com/x")
    assert 19.5 < theirs.try_acquire("api.example.com") <= 20.1
    mine.client.close()
    theirs.client.close()


def test_transport_fails_closed_without_sending(prefix: str) -> None:
    events: list[tuple[object, ...]] = []
    bucket = RedisTokenBucket(dead_client(), capacity=5, rate=10, prefix=prefix)
    with (
        httpx.Client(
            transport=RateLimitTransport(recording_upstream(events, []), bucket)
        ) as client,
        pytest.raises(ConnectError),
    ):
        client.get("https://api.example.com/x")
    assert events == []


def test_async_transport_acquires_and_drains() -> None:
    events: list[tuple[object, ...]] = []
    responses = [httpx.Response(200), httpx.Response(429, headers={"Retry-After": "3"})]

    async def scenario() -> None:
        transport = RateLimitTransport(
            recording_upstream(events, responses), AsyncRecordingBucket(events)
        )
        async with httpx.AsyncClient(transport=transport) as client:
            assert (await client.get("https://api.example.com/a")).status_code == 200
            assert (await client.get("https://api.example.com/b")).status_code == 429

    asyncio.run(scenario())
    assert events == [
        ("acquire", "api.example.com", 1),
        ("send", "/a"),
        ("acquire", "api.example.com", 1),
        ("send", "/b"),
        ("drain", "api.example.com", 3.0),
    ]


def test_async_transport_with_the_redis_bucket(redis_url: str, prefix: str) -> None:
    async def scenario() -> float:
        client = aioredis.Redis.from_url(redis_url)
        bucket = AsyncRedisTokenBucket(client, capacity=2, rate=10, prefix=prefix)
        upstream = httpx.MockTransport(lambda _: httpx.Response(429, headers={"Retry-After": "9"}))
        async with httpx.AsyncClient(transport=RateLimitTransport(upstream, bucket)) as http:
            await http.get("https://api.example.com/x")
        wait = await bucket.try_acquire("api.example.com")
        await client.aclose()
        return wait

    assert 8.5 < asyncio.run(scenario()) <= 9.1


def test_transport_refuses_the_wrong_kind_of_client() -> None:
    events: list[tuple[object, ...]] = []
    sync_transport = RateLimitTransport(
        recording_upstream(events, []), AsyncRecordingBucket(events)
    )
    with httpx.Client(transport=sync_transport) as client, pytest.raises(TypeError):
        client.get("https://api.example.com/x")

    async def scenario() -> None:
        transport = RateLimitTransport(recording_upstream(events, []), RecordingBucket(events))
        async with httpx.AsyncClient(transport=transport) as client:
            await client.get("https://api.example.com/x")

    with pytest.raises(TypeError):
        asyncio.run(scenario())
    assert events == []


def test_transport_is_a_wrapping_transport_that_closes_its_inner() -> None:
    closed: list[str] = []

    class Inner(httpx.BaseTransport, httpx.AsyncBaseTransport):
        def close(self) -> None:
            closed.append("close")

        async def aclose(self) -> None:
            closed.append("aclose")

    transport = RateLimitTransport(Inner(), RecordingBucket([]))
    assert isinstance(transport, WrappingTransport)
    transport.close()
    asyncio.run(transport.aclose())
    assert closed == ["close", "aclose"]
