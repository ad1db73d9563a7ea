"""The circuit breaker: every transition on a fake clock, metrics, and the transport (mock + real)."""

from __future__ import annotations

import importlib.util
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from ingest.errors import CircuitOpen, ConnectError, RateLimited, is_transient
from ingest.http.breaker import (
    BreakerConfig,
    BreakerMetrics,
    BreakerOpen,
    BreakerRegistry,
    CircuitBreaker,
    CircuitBreakerTransport,
    CircuitState,
    is_failure_status,
)
from ingest.mockapi.app import create_app
from ingest.mockapi.config import MockConfig
from tests.support.servers import serve_in_thread

CLOSED, HALF_OPEN, OPEN = CircuitState.CLOSED, CircuitState.HALF_OPEN, CircuitState.OPEN


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _breaker(clock: FakeClock, **config: Any) -> CircuitBreaker:
    defaults: dict[str, Any] = {"failure_threshold": 3, "cooldown": 10.0, "minimum_calls": 100}
    return CircuitBreaker("h", BreakerConfig(**{**defaults, **config}), clock=clock)


def _fail(breaker: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        breaker.before_call()
        breaker.record_failure()


def _succeed(breaker: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        breaker.before_call()
        breaker.record_success()


# -- the state machine --------------------------------------------------------------------------


def test_consecutive_failures_open_the_breaker(clock: FakeClock) -> None:
    breaker = _breaker(clock)
    _fail(breaker, 2)
    _succeed(breaker)  # a success resets the streak
    _fail(breaker, 2)
    assert breaker.state is CLOSED
    _fail(breaker)
    assert breaker.state is OPEN


def test_failure_rate_over_the_window_opens_the_breaker(clock: FakeClock) -> None:
    breaker = _breaker(clock, failure_threshold=100, failure_rate=0.5, minimum_calls=6)
    for n in range(5):  # alternating: never two failures in a row
        clock.now += 1
        _fail(breaker) if n % 2 else _succeed(breaker)
    assert breaker.state is CLOSED  # 2 of 5 failed, and below the minimum number of calls
    clock.now += 1
    _fail(breaker)  # 3 of 6
    assert breaker.state is OPEN


def test_old_outcomes_leave_the_window(clock: FakeClock) -> None:
    breaker = _breaker(clock, failure_threshold=100, failure_rate=0.5, minimum_calls=4, window=10.0)
    _fail(breaker, 3)
    clock.now += 11  # those three failures are now outside the window
    _succeed(breaker, 3)
    _fail(breaker)  # 1 of 4 in the window
    assert breaker.state is CLOSED


def test_open_fails_fast_with_the_remaining_cooldown(clock: FakeClock) -> None:
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.now += 4
    with pytest.raises(CircuitOpen) as caught:
        breaker.before_call()
    assert isinstance(caught.value, BreakerOpen)
    assert caught.value.retry_after == pytest.approx(6.0)
    assert caught.value.host == "h"
    assert is_transient(caught.value)


def test_half_open_after_the_cooldown_then_closed_on_probe_success(clock: FakeClock) -> None:
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.now += 9.9
    assert breaker.state is OPEN
    clock.now += 0.1
    assert breaker.state is HALF_OPEN
    breaker.before_call()  # the probe
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # everybody else still fails fast
    breaker.record_success()
    assert breaker.state is CLOSED
    _succeed(breaker, 5)


def test_probe_failure_opens_again_for_a_full_cooldown(clock: FakeClock) -> None:
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.now += 10
    breaker.before_call()
    breaker.record_failure()
    assert breaker.state is OPEN
    with pytest.raises(CircuitOpen) as caught:
        breaker.before_call()
    assert caught.value.retry_after == pytest.approx(10.0)


def test_after_closing_the_streak_starts_from_zero(clock: FakeClock) -> None:
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.now += 10
    _succeed(breaker)
    _fail(breaker, 2)
    assert breaker.state is CLOSED


def test_late_answers_while_open_change_nothing(clock: FakeClock) -> None:
    breaker = _breaker(clock)
    breaker.before_call()  # a call leaves before the breaker opens …
    _fail(breaker, 3)
    breaker.record_success()  # … and its answer arrives while open
    assert breaker.state is OPEN
    clock.now += 10
    assert breaker.state is HALF_OPEN
    breaker.record_success()  # no probe is out: not the probe's verdict
    assert breaker.state is HALF_OPEN


def test_a_silent_probe_is_replaced_after_the_probe_timeout(clock: FakeClock) -> None:
    breaker = _breaker(clock, probe_timeout=5.0)
    _fail(breaker, 3)
    clock.now += 10
    breaker.before_call()  # the probe's caller never reports back
    clock.now += 4
    with pytest.raises(CircuitOpen) as caught:
        breaker.before_call()
    assert caught.value.retry_after == pytest.approx(1.0)
    clock.now += 1
    breaker.before_call()  # a new probe


def test_release_frees_the_probe_slot(clock: FakeClock) -> None:
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.now += 10
    breaker.before_call()
    breaker.release()
    breaker.before_call()
    assert breaker.state is HALF_OPEN


def test_one_probe_under_concurrency(clock: FakeClock) -> None:
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.now += 10
    barrier = threading.Barrier(16)

    def attempt(_: int) -> bool:
        barrier.wait()
        try:
            breaker.before_call()
        except CircuitOpen:
            return False
        return True

    with ThreadPoolExecutor(max_workers=16) as pool:
        allowed = list(pool.map(attempt, range(16)))
    assert allowed.count(True) == 1


@pytest.mark.parametrize(
    "config",
    [
        {"failure_threshold": 0},
        {"minimum_calls": 0},
        {"failure_rate": 0.0},
        {"failure_rate": 1.5},
        {"window": 0},
        {"cooldown": -1},
    ],
)
def test_bad_configs_are_refused(config: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BreakerConfig(**config)


def test_listeners_hear_every_transition(clock: FakeClock) -> None:
    heard: list[tuple[str, str]] = []
    breaker = _breaker(clock)
    breaker.listeners.append(lambda b, old, new: heard.append((old.name, new.name)))
    _fail(breaker, 3)
    clock.now += 10
    _fail(breaker)
    clock.now += 10
    _succeed(breaker)
    assert heard == [
        ("CLOSED", "OPEN"),
        ("OPEN", "HALF_OPEN"),
        ("HALF_OPEN", "OPEN"),
        ("OPEN", "HALF_OPEN"),
        ("HALF_OPEN", "CLOSED"),
    ]


# -- registry and metrics ------------------------------------------------------------------------


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_one_breaker_per_host_and_metrics(clock: FakeClock) -> None:
    registry = CollectorRegistry()
    breakers = BreakerRegistry(
        BreakerConfig(failure_threshold=2, cooldown=5), clock=clock, registry=registry
    )
    assert breakers.get("API.example.com") is breakers.get("api.example.com")
    _fail(breakers.get("api.example.com"), 2)
    breakers.get("other.example.com")
    assert breakers.states() == {"api.example.com": OPEN, "other.example.com": CLOSED}
    assert _sample(registry, "ingest_circuit_state", host="api.example.com") == 2
    assert _sample(registry, "ingest_circuit_state", host="other.example.com") == 0
    clock.now += 5
    assert breakers.get("api.example.com").state is HALF_OPEN
    assert _sample(registry, "ingest_circuit_state", host="api.example.com") == 1
    _succeed(breakers.get("api.example.com"))
    assert _sample(registry, "ingest_circuit_state", host="api.example.com") == 0
    for to in ("open", "half_open", "closed"):
        value = _sample(registry, "ingest_circuit_transitions_total", host="api.example.com", to=to)
        assert value == 1, to


def test_metrics_registered_twice_are_shared(clock: FakeClock) -> None:
    registry = CollectorRegistry()
    first = BreakerRegistry(BreakerConfig(failure_threshold=1), clock=clock, registry=registry)
    second = BreakerRegistry(BreakerConfig(failure_threshold=1), clock=clock, registry=registry)
    assert first.metrics.state is second.metrics.state
    _fail(first.get("a"))
    _fail(second.get("b"))
    assert _sample(registry, "ingest_circuit_state", host="a") == 2
    assert _sample(registry, "ingest_circuit_state", host="b") == 2
    # Separate registries keep separate series.
    other = CollectorRegistry()
    BreakerRegistry(registry=other).get("a")
    assert _sample(other, "ingest_circuit_state", host="a") == 0


def test_module_imported_twice_shares_the_collectors() -> None:
    """A second copy of the module (as a notebook that defines the classes makes) registers fine."""
    import ingest.http.breaker as original

    registry = CollectorRegistry()
    BreakerMetrics(registry)
    spec = importlib.util.spec_from_file_location("ingest.http.breaker_copy", original.__file__)
    assert spec is not None and spec.loader is not None
    copy = importlib.util.module_from_spec(spec)
    sys.modules["ingest.http.breaker_copy"] = copy
    try:
        spec.loader.exec_module(copy)
        again = copy.BreakerMetrics(registry)
        assert again.state is BreakerMetrics(registry).state
    finally:
        del sys.modules["ingest.http.breaker_copy"]


def test_a_foreign_metric_with_the_same_name_is_not_taken_over() -> None:
    from prometheus_client import Counter

    registry = CollectorRegistry()
    Counter("ingest_circuit_state", "not ours", registry=registry)
    with pytest.raises(ValueError):
        BreakerMetrics(registry)


def test_the_default_registry_is_the_global_one() -> None:
    from prometheus_client import REGISTRY

    host = f"h-{uuid.uuid4().hex}"
    BreakerRegistry().get(host)
    BreakerRegistry().get(host)  # a second registry on the global one does not raise
    assert REGISTRY.get_sample_value("ingest_circuit_state", {"host": host}) == 0


# -- the transport --------------------------------------------------------------------------------


class Upstream:
    """Answers with a queue of statuses (then 200), or raises; counts calls."""

    def __init__(self, *outcomes: int | Exception) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else 200
        if isinstance(outcome, Exception):
            raise outcome
        return httpx.Response(outcome)


def _client(upstream: Upstream, breakers: BreakerRegistry) -> httpx.Client:
    transport = CircuitBreakerTransport(httpx.MockTransport(upstream), breakers)
    return httpx.Client(transport=transport, base_url="https://api.example.com")


def test_failure_statuses() -> None:
    assert [s for s in (200, 301, 400, 404, 408, 429, 500, 502, 503) if is_failure_status(s)] == [
        408,
        500,
        502,
        503,
    ]


def test_open_breaker_does_not_call_the_inner_transport(clock: FakeClock) -> None:
    upstream = Upstream(503, 500, 502)
    breakers = BreakerRegistry(
        BreakerConfig(failure_threshold=3), clock=clock, registry=CollectorRegistry()
    )
    with _client(upstream, breakers) as client:
        assert [client.get("/x").status_code for _ in range(3)] == [503, 500, 502]
        for _ in range(5):
            with pytest.raises(CircuitOpen):
                client.get("/x")
    assert upstream.calls == 3


def test_429_and_other_4xx_count_as_successes(clock: FakeClock) -> None:
    upstream = Upstream(503, 503, 429, 503, 503, 404, 503, 503, 400)
    breakers = BreakerRegistry(
        BreakerConfig(failure_threshold=3), clock=clock, registry=CollectorRegistry()
    )
    with _client(upstream, breakers) as client:
        for _ in range(9):
            client.get("/x")
    assert breakers.get("api.example.com").state is CLOSED
    assert upstream.calls == 9


def test_408_and_transport_errors_count_as_failures(clock: FakeClock) -> None:
    upstream = Upstream(408, httpx.ConnectError("refused"), ConnectError("mapped already"))
    breakers = BreakerRegistry(
        BreakerConfig(failure_threshold=3), clock=clock, registry=CollectorRegistry()
    )
    with _client(upstream, breakers) as client:
        client.get("/x")
        with pytest.raises(httpx.ConnectError):
            client.get("/x")
        with pytest.raises(ConnectError):
            client.get("/x")
    assert breakers.get("api.example.com").state is OPEN


def test_an_error_without_a_verdict_releases_the_probe(clock: FakeClock) -> None:
    upstream = Upstream(503, RateLimited("local bucket empty", status_code=429))
    breakers = BreakerRegistry(
        BreakerConfig(failure_threshold=1, cooldown=5), clock=clock, registry=CollectorRegistry()
    )
    with _client(upstream, breakers) as client:
        client.get("/x")
        clock.now += 5
        with pytest.raises(RateLimited):
            client.get("/x")  # the probe ends without a verdict …
        assert client.get("/x").status_code == 200  # … so the next call may probe
    assert breakers.get("api.example.com").state is CLOSED


def test_hosts_are_independent(clock: FakeClock) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503 if request.url.host == "down.example.com" else 200)

    breakers = BreakerRegistry(
        BreakerConfig(failure_threshold=1), clock=clock, registry=CollectorRegistry()
    )
    transport = CircuitBreakerTransport(httpx.MockTransport(handler), breakers)
    with httpx.Client(transport=transport) as client:
        client.get("https://down.example.com/")
        with pytest.raises(CircuitOpen):
            client.get("https://down.example.com/")
        assert client.get("https://up.example.com/").status_code == 200


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_async_transport_fails_fast(clock: FakeClock) -> None:
    upstream = Upstream(503, 503)
    breakers = BreakerRegistry(
        BreakerConfig(failure_threshold=2, cooldown=5), clock=clock, registry=CollectorRegistry()
    )
    transport = CircuitBreakerTransport(httpx.MockTransport(upstream), breakers)
    async with httpx.AsyncClient(transport=transport, base_url="https://api.example.com") as client:
        await client.get("/x")
        await client.get("/x")
        with pytest.raises(CircuitOpen):
            await client.get("/x")
        clock.now += 5
        assert (await client.get("/x")).status_code == 200
    assert upstream.calls == 3
    assert breakers.get("api.example.com").state is CLOSED


# -- against a real mock API ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def mock_api() -> Iterator[str]:
    """A mock API of this module's own: these tests reconfigure it, which would disturb others."""
    with serve_in_thread(create_app(MockConfig(records=50))) as url:
        yield url


def test_real_outage_opens_fails_fast_and_recovers(mock_api: str, clock: FakeClock) -> None:
    client_id = f"breaker-{uuid.uuid4().hex}"
    admin = httpx.Client(base_url=f"{mock_api}/_admin")
    outage = {
        "records": 50,
        "faults": {"rate": 1.0, "weights": {"503": 1}, "max_consecutive_faults": None},
    }
    admin.put("/config", json=outage).raise_for_status()

    def seen() -> int:
        return int(admin.get("/stats").json()["clients"].get(client_id, {}).get("requests", 0))

    registry = CollectorRegistry()
    breakers = BreakerRegistry(
        BreakerConfig(failure_threshold=4, cooldown=30), clock=clock, registry=registry
    )
    transport = CircuitBreakerTransport(httpx.HTTPTransport(), breakers)
    with httpx.Client(
        base_url=mock_api, transport=transport, headers={"X-Client-Id": client_id}
    ) as client:
        breaker = breakers.get(client.base_url.host)

        def get() -> int:
            return client.get("/rest/cursor/customers", params={"limit": 1}).status_code

        assert [get() for _ in range(4)] == [503] * 4
        assert breaker.state is OPEN
        for _ in range(10):
            with pytest.raises(CircuitOpen):
                get()
        assert seen() == 4  # the server count is frozen while open

        clock.now += 30
        assert breaker.state is HALF_OPEN
        assert get() == 503  # the one probe, still down
        assert breaker.state is OPEN and seen() == 5

        admin.put("/config", json={"records": 50}).raise_for_status()  # recovered; counters zeroed
        with pytest.raises(CircuitOpen):
            get()
        assert seen() == 0
        clock.now += 30
        assert get() == 200  # the probe succeeds
        assert breaker.state is CLOSED
        assert [get() for _ in range(3)] == [200] * 3
        assert seen() == 4
    admin.close()
    assert registry.get_sample_value("ingest_circuit_state", {"host": "127.0.0.1"}) == 0
