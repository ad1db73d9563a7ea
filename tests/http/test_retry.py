"""`ingest.http.retry` (exported from notebooks/01-retry-client/02-backoff.ipynb).

Unit tests run on a fake clock with ``httpx.MockTransport``; every transport test runs through
both ``httpx.Client`` and ``httpx.AsyncClient`` (the ``mode`` fixture). Property tests cover
``parse_retry_after``. Integration tests walk the real mock API with its faults on.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import tenacity
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import errors
from ingest.http import retry
from ingest.http.retry import (
    ATTEMPTS_EXTENSION,
    RETRIES_EXTENSION,
    AttemptInfo,
    RetryPolicy,
    RetryTransport,
    parse_retry_after,
    server_wait_hint,
    wait_full_jitter,
)
from ingest.http.transport import WrappingTransport, raise_for_status

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
URL = "https://api.example.com/v1/customers?api_key=sk_live_secret"
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
DAY_NAMES = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
# Backoff in these tests never exceeds INITIAL, so any wait above it came from a server hint.
INITIAL = 0.5


class FakeTime:
    """A monotonic clock and a wall clock that move only when someone sleeps (or ``advance``s)."""

    def __init__(self) -> None:
        self.monotonic = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(float(seconds))
        self.monotonic += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def advance(self, seconds: float) -> None:
        self.monotonic += seconds

    def clock(self) -> float:
        return self.monotonic

    def now(self) -> datetime:
        return NOW + timedelta(seconds=self.monotonic)

    def policy(self, **knobs: Any) -> RetryPolicy:
        knobs.setdefault("initial_wait", INITIAL)
        knobs.setdefault("max_wait", INITIAL)
        return RetryPolicy(
            sleep=self.sleep,
            async_sleep=self.async_sleep,
            clock=self.clock,
            now=self.now,
            rng=random.Random(0),
            **knobs,
        )


Step = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Script(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """An inner transport answering each attempt with the next step; it records what it got.

    Like a real connection (and unlike ``httpx.MockTransport``) it consumes the request body
    stream as it sends it, so a body that cannot be replayed shows on the next attempt.
    """

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        return self._answer(request, b"".join(request.stream))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        return self._answer(request, b"".join([chunk async for chunk in request.stream]))

    def _answer(self, request: httpx.Request, body: bytes) -> httpx.Response:
        self.requests.append(request)
        self.bodies.append(body)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        if isinstance(step, httpx.Response):
            # A fresh copy each time, as a server would send.
            return httpx.Response(step.status_code, headers=step.headers, content=step.content)
        return step(request)

    def transport(self) -> Script:
        return self


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


def send(
    transport: httpx.BaseTransport | httpx.AsyncBaseTransport,
    mode: str,
    method: str = "GET",
    url: str = URL,
    **kwargs: Any,
) -> httpx.Response:
    """One request through ``transport`` with a sync or an async client."""
    if mode == "sync":
        assert isinstance(transport, httpx.BaseTransport)
        with httpx.Client(transport=transport) as client:
            return client.request(method, url, **kwargs)

    async def main() -> httpx.Response:
        assert isinstance(transport, httpx.AsyncBaseTransport)
        async with httpx.AsyncClient(transport=transport) as client:
            return await client.request(method, url, **kwargs)

    return asyncio.run(main())


def run(
    mode: str,
    *steps: Step,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    **knobs: Any,
) -> tuple[httpx.Response, FakeTime, Script]:
    fake, script = FakeTime(), Script(*steps)
    transport = RetryTransport(script.transport(), fake.policy(**knobs))
    return send(transport, mode, method, headers=headers), fake, script


def ok(body: object = None) -> httpx.Response:
    return httpx.Response(200, json={"ok": True} if body is None else body)


def test_public_api() -> None:
    assert set(retry.__all__) >= {
        "AttemptInfo",
        "RetryPolicy",
        "RetryTransport",
        "is_replayable",
        "parse_retry_after",
        "retry_if_status",
        "server_wait_hint",
        "wait_full_jitter",
        "wait_retry_after",
    }


# -- parse_retry_after --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("  7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-5", 0.0),
        ("Sun, 01 Mar 2026 12:00:30 GMT", 30.0),  # IMF-fixdate
        ("sun, 01 mar 2026 12:00:30 gmt", 30.0),
        ("Sunday, 01-Mar-26 12:01:00 GMT", 60.0),  # RFC 850
        ("Sun Mar  1 12:00:05 2026", 5.0),  # asctime, day padded with a space
        ("Sun Mar 1 12:00:05 2026", 5.0),
        ("Fri, 31 Dec 1999 23:59:59 GMT", 0.0),  # the past means now
        ("Sun, 01 Mar 2026 12:00:60 GMT", 59.0),  # a leap second reads as :59
        ("", None),
        ("soon", None),
        ("1e3", None),
        ("5 seconds", None),
        ("Sun, 30 Feb 2026 12:00:00 GMT", None),  # no such day
        ("Sun, 01 Foo 2026 12:00:00 GMT", None),
        ("Sun, 01 Mar 2026 25:00:00 GMT", None),
        ("Sun, 01 Mar 2026 12:00:00 +0100", None),  # HTTP-dates are always GMT
        ("٣", None),  # a non-ASCII digit
    ],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_rfc850_two_digit_years_follow_rfc_9110() -> None:
    # More than 50 years ahead is read as the past century; otherwise the nearest future year.
    now = datetime(2026, 1, 1, tzinfo=UTC)
    in_2070 = parse_retry_after("Tuesday, 01-Jan-70 00:00:00 GMT", now=now)
    assert in_2070 == (datetime(2070, 1, 1, tzinfo=UTC) - now).total_seconds()
    assert parse_retry_after("Saturday, 01-Jan-77 00:00:00 GMT", now=now) == 0.0  # 1977
    assert parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now=now) == 0.0  # 1994


def test_naive_now_is_taken_as_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    assert parse_retry_after("Sun, 01 Mar 2026 12:00:30 GMT", now=naive) == 30.0


@settings(database=None, max_examples=300, deadline=None)
@given(st.text())
def test_parse_retry_after_never_raises_on_any_text(value: str) -> None:
    result = parse_retry_after(value, now=NOW)
    assert result is None or result >= 0.0


@settings(database=None, max_examples=300, deadline=None)
@given(
    st.sampled_from(DAYS + DAY_NAMES),
    st.integers(0, 99),
    st.sampled_from([*MONTHS, "Foo", "mar"]),
    st.integers(0, 9999),
    st.integers(0, 99),
    st.integers(0, 99),
    st.integers(0, 99),
    st.sampled_from(["imf", "rfc850", "asctime"]),
)
def test_parse_retry_after_never_raises_on_date_shaped_text(
    day_name: str, day: int, month: str, year: int, hour: int, minute: int, second: int, form: str
) -> None:
    hms = f"{hour:02d}:{minute:02d}:{second:02d}"
    value = {
        "imf": f"{day_name}, {day:02d} {month} {year:04d} {hms} GMT",
        "rfc850": f"{day_name}, {day:02d}-{month}-{year % 100:02d} {hms} GMT",
        "asctime": f"{day_name} {month} {day:>2} {hms} {year:04d}",
    }[form]
    result = parse_retry_after(value, now=NOW)
    assert result is None or result >= 0.0


def _expected_wait(moment: datetime) -> float:
    return max(0.0, (moment - NOW).total_seconds())


@settings(database=None, max_examples=200, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 12, 31),
        timezones=st.just(UTC),
    )
)
def test_imf_fixdate_round_trips(moment: datetime) -> None:
    moment = moment.replace(microsecond=0)
    assert parse_retry_after(format_datetime(moment, usegmt=True), now=NOW) == _expected_wait(
        moment
    )


@settings(database=None, max_examples=200, deadline=None)
@given(
    st.datetimes(
        # RFC 850 years have two digits: round trips hold within the 100-year window around now.
        min_value=datetime(NOW.year - 49, 1, 1),
        max_value=datetime(NOW.year + 49, 12, 31),
        timezones=st.just(UTC),
    )
)
def test_obsolete_date_forms_round_trip(moment: datetime) -> None:
    moment = moment.replace(microsecond=0)
    hms = moment.strftime("%H:%M:%S")
    month = MONTHS[moment.month - 1]
    rfc850 = (
        f"{DAY_NAMES[moment.weekday()]}, {moment.day:02d}-{month}-{moment.year % 100:02d} {hms} GMT"
    )
    asctime = f"{DAYS[moment.weekday()]} {month} {moment.day:>2} {hms} {moment.year}"
    assert parse_retry_after(rfc850, now=NOW) == _expected_wait(moment)
    assert parse_retry_after(asctime, now=NOW) == _expected_wait(moment)


@settings(database=None, max_examples=100, deadline=None)
@given(st.integers(0, 10**12))
def test_delay_seconds_round_trip(seconds: int) -> None:
    assert parse_retry_after(str(seconds), now=NOW) == float(seconds)


# -- server_wait_hint ---------------------------------------------------------------------------

EPOCH = int(NOW.timestamp())


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "Sun, 01 Mar 2026 12:00:12 GMT"}, 12.0),
        ({"Retry-After": "garbage"}, None),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(EPOCH + 20)}, 20.0),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(EPOCH - 20)}, 0.0),
        ({"X-RateLimit-Remaining": "4", "X-RateLimit-Reset": str(EPOCH + 20)}, None),
        ({"X-RateLimit-Remaining": "0"}, None),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "tomorrow"}, None),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "nan"}, None),
        ({"RateLimit": '"default";r=0;t=12'}, 12.0),
        ({"RateLimit": "default;r=0;t=12"}, 12.0),
        ({"RateLimit": '"burst";r=0;t=4, "daily";r=0;t=30'}, 30.0),
        ({"RateLimit": '"burst";r=0;t=4, "daily";r=80;t=3600'}, 4.0),
        ({"RateLimit": '"default";r=5;t=12'}, None),  # quota left: no reason to wait
        ({"RateLimit": '"default";r=0'}, None),
        ({"RateLimit": '"default";t=12'}, None),  # r is required: malformed
        ({"RateLimit": '"default";r=0;t=soon'}, None),
        ({"RateLimit": '"default";r=0;t=12, ;r=0;t=99'}, None),  # one bad item spoils the field
        ({"RateLimit": "nonsense"}, None),
        # Retry-After wins over the rate-limit headers ...
        ({"Retry-After": "2", "RateLimit": '"d";r=0;t=12'}, 2.0),
        (
            {
                "Retry-After": "3",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(EPOCH + 20),
            },
            3.0,
        ),
        # ... unless it does not parse.
        ({"Retry-After": "soon", "RateLimit": '"d";r=0;t=12'}, 12.0),
        (
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(EPOCH + 20), "RateLimit": "x"},
            20.0,
        ),
    ],
)
def test_server_wait_hint(headers: dict[str, str], expected: float | None) -> None:
    assert server_wait_hint(httpx.Response(429, headers=headers), now=NOW) == expected


def test_server_wait_hint_cap() -> None:
    response = httpx.Response(503, headers={"Retry-After": "86400"})
    assert server_wait_hint(response, now=NOW, cap=60.0) == 60.0
    assert server_wait_hint(response, now=NOW) == 86400.0
    small = httpx.Response(503, headers={"Retry-After": "5"})
    assert server_wait_hint(small, now=NOW, cap=60.0) == 5.0


# -- backoff ------------------------------------------------------------------------------------


def _state(attempt: int) -> tenacity.RetryCallState:
    state = tenacity.RetryCallState(tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    return state


def test_full_jitter_is_uniform_under_an_exponential_capped_ceiling() -> None:
    wait = wait_full_jitter(0.25, 3.0, rng=random.Random(1))
    assert [wait.ceiling(n) for n in range(1, 7)] == [0.25, 0.5, 1.0, 2.0, 3.0, 3.0]
    assert wait.ceiling(10_000) == 3.0
    for attempt in range(1, 7):
        draws = [wait(_state(attempt)) for _ in range(300)]
        assert all(0.0 <= d <= wait.ceiling(attempt) for d in draws)
        # Full jitter: the draws cover the whole range, not just its upper half.
        assert min(draws) < 0.1 * wait.ceiling(attempt) < 0.9 * wait.ceiling(attempt) < max(draws)


def test_full_jitter_is_reproducible_with_a_seed() -> None:
    one = wait_full_jitter(1.0, 30.0, rng=random.Random(42))
    two = wait_full_jitter(1.0, 30.0, rng=random.Random(42))
    assert [one(_state(n)) for n in range(1, 9)] == [two(_state(n)) for n in range(1, 9)]


@pytest.mark.parametrize(
    "knobs",
    [
        {"max_attempts": 0},
        {"budget_seconds": 0},
        {"initial_wait": -1},
        {"initial_wait": 5, "max_wait": 1},
        {"retry_after_cap": -1},
        {"statuses": frozenset({200})},
    ],
)
def test_policy_validation(knobs: dict[str, Any]) -> None:
    with pytest.raises(errors.ConfigError, match=next(iter(knobs))):
        RetryPolicy(**knobs)


# -- RetryTransport: statuses -------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_each_retry_status_is_retried(mode: str, status: int) -> None:
    response, fake, script = run(mode, httpx.Response(status), ok())
    assert response.status_code == 200
    assert response.extensions[ATTEMPTS_EXTENSION] == 2
    assert len(script.requests) == 2 and len(fake.slept) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 501, 505])
def test_other_statuses_are_not_retried(mode: str, status: int) -> None:
    response, fake, script = run(mode, httpx.Response(status), ok())
    assert response.status_code == status
    assert response.extensions[ATTEMPTS_EXTENSION] == 1
    assert len(script.requests) == 1 and fake.slept == []


@pytest.mark.parametrize(
    ("status", "verdict", "retried"),
    [
        (409, "true", True),  # e.g. a lock conflict Stripe wants retried
        (400, "True", True),
        (500, "false", False),  # Stripe: do not replay this 500
        (503, "false", False),
        (503, "maybe", True),  # not a verdict: the status rule applies
        (404, "maybe", False),
        (200, "true", False),  # a success is never retried
    ],
)
def test_stripe_should_retry_overrides_the_status_rule(
    mode: str, status: int, verdict: str, retried: bool
) -> None:
    first = httpx.Response(status, headers={"Stripe-Should-Retry": verdict})
    response, _, script = run(mode, first, ok({"second": True}))
    assert len(script.requests) == (2 if retried else 1)
    assert response.status_code == (200 if retried else status)


def test_exhausted_on_a_status_returns_the_last_response(mode: str) -> None:
    failing = httpx.Response(503, json={"error": "still down"})
    response, fake, script = run(mode, failing, max_attempts=4)
    assert response.status_code == 503
    assert response.json() == {"error": "still down"}  # the body is still readable
    assert response.extensions[ATTEMPTS_EXTENSION] == 4
    assert len(script.requests) == 4 and len(fake.slept) == 3
    # And the client's raise_for_status turns it into the ingest error.
    with pytest.raises(errors.ServerError):
        raise_for_status(response)


# -- RetryTransport: methods --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_unsafe_methods_without_a_key_are_not_retried(mode: str, method: str) -> None:
    response, fake, script = run(mode, httpx.Response(503), ok(), method=method)
    assert response.status_code == 503 and len(script.requests) == 1 and fake.slept == []

    fake, script = FakeTime(), Script(httpx.ConnectError("reset"), ok())
    transport = RetryTransport(script.transport(), fake.policy())
    with pytest.raises(errors.ConnectError) as caught:
        send(transport, mode, method)
    assert getattr(caught.value, "attempts", None) == 1 and len(script.requests) == 1


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_unsafe_methods_with_a_key_are_retried(mode: str, method: str) -> None:
    headers = {"Idempotency-Key": "k-123"}
    response, _, script = run(
        mode, httpx.Response(503), httpx.ReadTimeout("slow"), ok(), method=method, headers=headers
    )
    assert response.status_code == 200 and len(script.requests) == 3
    assert {r.headers["Idempotency-Key"] for r in script.requests} == {"k-123"}


def test_a_blank_key_does_not_count(mode: str) -> None:
    headers = {"Idempotency-Key": "  "}
    response, _, script = run(mode, httpx.Response(503), ok(), method="POST", headers=headers)
    assert response.status_code == 503 and len(script.requests) == 1


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"])
def test_idempotent_methods_are_retried_without_a_key(mode: str, method: str) -> None:
    response, _, script = run(mode, httpx.Response(502), ok(), method=method)
    assert response.status_code == 200 and len(script.requests) == 2


class KeyOnFirstAttempt(WrappingTransport):
    """An idempotency layer in the documented shape: sets a key on the request, keeps it after."""

    def _key(self, request: httpx.Request) -> None:
        request.headers.setdefault("Idempotency-Key", f"auto-{uuid.uuid4().hex}")

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._key(request)
        return self.forward(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._key(request)
        return await self.aforward(request)


def test_a_key_added_by_an_inner_layer_makes_a_post_retryable(mode: str) -> None:
    fake, script = FakeTime(), Script(httpx.Response(503), ok())
    transport = RetryTransport(KeyOnFirstAttempt(script.transport()), fake.policy())
    response = send(transport, mode, "POST", content=b'{"amount": 100}')
    assert response.status_code == 200 and len(script.requests) == 2
    keys = {r.headers["Idempotency-Key"] for r in script.requests}
    assert len(keys) == 1  # the same key on the retry
    assert script.bodies == [b'{"amount": 100}'] * 2


def test_a_streamed_request_body_is_sent_whole_on_every_attempt(mode: str) -> None:
    fake, script = FakeTime(), Script(httpx.Response(500), httpx.Response(500), ok())
    transport = RetryTransport(script.transport(), fake.policy())
    chunks = [b"part one, ", b"part two"]
    if mode == "sync":
        content: Any = iter(chunks)
    else:

        async def agen() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        content = agen()
    response = send(transport, mode, "PUT", content=content)
    assert response.status_code == 200
    assert script.bodies == [b"part one, part two"] * 3


# -- RetryTransport: exceptions -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raised", "mapped"),
    [
        (httpx.ConnectError("refused"), errors.ConnectError),
        (httpx.RemoteProtocolError("peer closed"), errors.ConnectError),
        (httpx.ReadError("reset"), errors.ConnectError),
        (httpx.PoolTimeout("pool"), errors.ConnectError),
        (httpx.ReadTimeout("slow"), errors.ReadTimeout),
        (httpx.ConnectTimeout("slow"), errors.ReadTimeout),
    ],
)
def test_transient_transport_errors_are_retried(
    mode: str, raised: httpx.HTTPError, mapped: type[errors.IngestError]
) -> None:
    response, _, script = run(mode, raised, ok())
    assert response.status_code == 200 and len(script.requests) == 2

    fake, script = FakeTime(), Script(raised)
    transport = RetryTransport(script.transport(), fake.policy(max_attempts=3))
    with pytest.raises(mapped) as caught:
        send(transport, mode)
    assert type(caught.value) is mapped
    assert getattr(caught.value, "attempts", None) == 3
    assert caught.value.__cause__ is raised
    assert "GET https://api.example.com/v1/customers?api_key=REDACTED" in str(caught.value)
    assert len(script.requests) == 3 and len(fake.slept) == 2


class BreaksMidBody(httpx.SyncByteStream, httpx.AsyncByteStream):
    """Half a body, then the connection dies, as with the mock API's ``drop`` fault."""

    def __init__(self) -> None:
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield b'{"data": [{"id'
        raise httpx.ReadError("connection reset by peer")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"data": [{"id'
        raise httpx.ReadError("connection reset by peer")

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


def test_a_read_error_mid_body_is_retried(mode: str) -> None:
    broken = BreaksMidBody()
    headers = {"Content-Type": "application/json"}
    response, _, script = run(
        mode, lambda request: httpx.Response(200, headers=headers, stream=broken), ok({"n": 2})
    )
    assert response.json() == {"n": 2}
    assert len(script.requests) == 2
    assert broken.closed  # the broken attempt's connection was released
    [info] = response.extensions[RETRIES_EXTENSION]
    assert info.reason == "ConnectError"


def test_terminal_errors_and_bugs_are_not_retried(mode: str) -> None:
    fake, script = FakeTime(), Script(errors.ClientError("bad", status_code=400), ok())
    transport = RetryTransport(script.transport(), fake.policy())
    with pytest.raises(errors.ClientError) as caught:
        send(transport, mode)
    assert getattr(caught.value, "attempts", None) == 1 and len(script.requests) == 1

    fake, script = FakeTime(), Script(RuntimeError("a bug"), ok())
    transport = RetryTransport(script.transport(), fake.policy())
    with pytest.raises(RuntimeError, match="a bug"):
        send(transport, mode)
    assert len(script.requests) == 1 and fake.slept == []


def test_transient_errors_from_inner_layers_are_retried_with_their_hint(mode: str) -> None:
    refused = errors.RateLimited("local bucket empty", status_code=429, retry_after=4.0)
    response, fake, script = run(mode, refused, errors.CircuitOpen("open"), ok())
    assert response.status_code == 200 and len(script.requests) == 3
    assert fake.slept[0] == 4.0 and fake.slept[1] <= INITIAL


def test_hints_carried_by_errors_are_capped_too(mode: str) -> None:
    refused = errors.ServerError("maintenance", status_code=503, retry_after=86400.0)
    response, fake, _ = run(mode, refused, ok(), retry_after_cap=60.0)
    assert response.status_code == 200 and fake.slept == [60.0]


# -- RetryTransport: waits ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected_wait"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "Sun, 01 Mar 2026 12:00:12 GMT"}, 12.0),
        ({"Retry-After": "3600"}, 60.0),  # capped at retry_after_cap
        ({"Retry-After": "Sun, 01 Mar 2026 13:00:00 GMT"}, 60.0),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(EPOCH + 9)}, 9.0),
        ({"RateLimit": '"default";r=0;t=11'}, 11.0),
        ({"RateLimit": '"default";r=0;t=11', "Retry-After": "6"}, 6.0),
    ],
)
def test_server_hints_set_the_wait(
    mode: str, headers: dict[str, str], expected_wait: float
) -> None:
    response, fake, _ = run(mode, httpx.Response(429, headers=headers), ok())
    assert response.status_code == 200
    assert fake.slept == [expected_wait]
    [info] = response.extensions[RETRIES_EXTENSION]
    assert info.server_hint == expected_wait and info.wait == expected_wait


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Retry-After": "soon"},
        {"Retry-After": ""},
        {"X-RateLimit-Remaining": "3", "X-RateLimit-Reset": str(EPOCH + 9)},
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "later"},
        {"RateLimit": "garbage;;"},
        {"RateLimit": '"default";r=7;t=11'},
    ],
)
def test_without_a_usable_hint_the_wait_is_backoff(mode: str, headers: dict[str, str]) -> None:
    response, fake, _ = run(mode, httpx.Response(503, headers=headers), ok())
    assert response.status_code == 200
    [wait] = fake.slept
    assert 0.0 <= wait <= INITIAL
    [info] = response.extensions[RETRIES_EXTENSION]
    assert info.server_hint is None


def test_backoff_grows_then_caps(mode: str) -> None:
    fake, script = FakeTime(), Script(httpx.Response(500))
    policy = RetryPolicy(
        sleep=fake.sleep,
        async_sleep=fake.async_sleep,
        clock=fake.clock,
        now=fake.now,
        rng=random.Random(3),
        initial_wait=1.0,
        max_wait=4.0,
        max_attempts=8,
        budget_seconds=1000,
    )
    send(RetryTransport(script.transport(), policy), mode)
    reference = wait_full_jitter(1.0, 4.0, rng=random.Random(3))
    assert fake.slept == [reference(_state(n)) for n in range(1, 8)]


# -- RetryTransport: budget ---------------------------------------------------------------------


def test_budget_stops_before_a_wait_would_cross_it(mode: str) -> None:
    response, fake, script = run(
        mode,
        httpx.Response(503),
        max_attempts=1000,
        budget_seconds=3.0,
        initial_wait=0.4,
        max_wait=0.4,
    )
    assert response.status_code == 503
    attempts = response.extensions[ATTEMPTS_EXTENSION]
    assert 1 < attempts < 1000 and len(script.requests) == attempts
    assert sum(fake.slept) < 3.0
    assert len(fake.slept) == attempts - 1


def test_slow_attempts_use_up_the_budget(mode: str) -> None:
    fake = FakeTime()

    def slow_failure(request: httpx.Request) -> httpx.Response:
        fake.advance(0.6)  # each attempt takes 0.6 s on the fake clock
        return httpx.Response(504)

    script = Script(slow_failure)
    policy = fake.policy(budget_seconds=1.0, initial_wait=0.01, max_wait=0.01, max_attempts=10)
    response = send(RetryTransport(script.transport(), policy), mode)
    assert response.status_code == 504
    assert len(script.requests) == 2  # the second ends past the budget: no third


def test_a_retry_after_longer_than_the_budget_left_stops_at_once(mode: str) -> None:
    first = httpx.Response(503, headers={"Retry-After": "30"})
    response, fake, script = run(mode, first, ok(), budget_seconds=20.0)
    assert response.status_code == 503
    assert fake.slept == [] and len(script.requests) == 1

    # With budget left for a short hint but not for the long one that follows:
    short = httpx.Response(429, headers={"Retry-After": "5"})
    response, fake, script = run(mode, short, first, ok(), budget_seconds=20.0)
    assert response.status_code == 503 and fake.slept == [5.0] and len(script.requests) == 2


# -- RetryTransport: reporting ------------------------------------------------------------------


def test_on_retry_reports_every_retry(mode: str) -> None:
    fake = FakeTime()
    script = Script(
        httpx.Response(503, headers={"Retry-After": "2"}),
        httpx.ConnectError("refused"),
        httpx.Response(500, headers={"Stripe-Should-Retry": "true"}),
        ok(),
    )
    seen: list[AttemptInfo] = []
    transport = RetryTransport(script.transport(), fake.policy(), on_retry=seen.append)
    response = send(transport, mode)
    assert response.status_code == 200
    assert response.extensions[ATTEMPTS_EXTENSION] == 4
    assert tuple(seen) == response.extensions[RETRIES_EXTENSION]
    assert [i.attempt for i in seen] == [1, 2, 3]
    assert [i.reason for i in seen] == [
        "status 503",
        "ConnectError",
        "status 500 (Stripe-Should-Retry: true)",
    ]
    assert [i.status_code for i in seen] == [503, None, 500]
    assert [i.wait for i in seen] == fake.slept
    assert seen[0].server_hint == 2.0 and seen[1].server_hint is None
    assert [i.elapsed for i in seen] == [0.0, 2.0, 2.0 + fake.slept[1]]
    assert {i.method for i in seen} == {"GET"}
    assert {i.url for i in seen} == {"https://api.example.com/v1/customers?api_key=REDACTED"}


def test_every_attempt_passes_through_the_inner_stack(mode: str) -> None:
    class Counting(WrappingTransport):
        count = 0

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            Counting.count += 1
            return self.forward(request)

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            Counting.count += 1
            return await self.aforward(request)

    fake, script = FakeTime(), Script(httpx.Response(429), httpx.Response(502), ok())
    send(RetryTransport(Counting(script.transport()), fake.policy()), mode)
    assert Counting.count == 3


# -- the policy outside transports --------------------------------------------------------------


def test_policy_retrying_reuses_the_policy_for_other_loops() -> None:
    fake = FakeTime()
    outcomes: list[Exception | str] = [errors.DecodeError("truncated"), "page"]
    seen: list[AttemptInfo] = []

    def fetch() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    page = None
    for attempt in fake.policy().retrying(on_retry=seen.append):
        with attempt:
            page = fetch()
    assert page == "page" and len(fake.slept) == 1
    assert seen[0].reason == "DecodeError" and seen[0].url is None


def test_policy_retrying_reraises_the_last_error_not_retry_error() -> None:
    fake = FakeTime()
    calls = 0

    def always_truncated() -> None:
        nonlocal calls
        calls += 1
        raise errors.DecodeError(f"truncated #{calls}")

    with pytest.raises(errors.DecodeError, match="truncated #3"):
        fake.policy(max_attempts=3).retrying()(always_truncated)

    def a_bug() -> None:
        raise ValueError("not transient")

    with pytest.raises(ValueError):
        fake.policy().retrying()(a_bug)
    assert len(fake.slept) == 2


def test_policy_budget_runs_on_the_injected_clock() -> None:
    fake = FakeTime()

    def slow_and_failing() -> None:
        fake.advance(10.0)
        raise errors.ReadTimeout("no answer")

    with pytest.raises(errors.ReadTimeout):
        fake.policy(budget_seconds=25.0, max_attempts=100).retrying()(slow_and_failing)
    # Attempts end at 10, 20 (+ waits ≤ 0.5), 30 > 25: three attempts, two sleeps.
    assert len(fake.slept) == 2


def test_policy_async_retrying() -> None:
    fake = FakeTime()
    outcomes: list[Exception | str] = [errors.ConnectError("reset"), "done"]

    async def fetch() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def main() -> str:
        result: str = await fake.policy().async_retrying()(fetch)
        return result

    assert asyncio.run(main()) == "done" and len(fake.slept) == 1


# -- against the real mock API ------------------------------------------------------------------

CAP = 0.05


@pytest.fixture
def mock_api(mock_api_url: str) -> Iterator[httpx.Client]:
    """The session's mock API, put back to fault-free afterwards for whoever comes next."""
    with httpx.Client(base_url=mock_api_url, timeout=10.0) as admin:
        yield admin
        admin.put("/_admin/config", json={}).raise_for_status()


class Recorder(WrappingTransport):
    """Innermost layer: notes every request that goes out on the wire, in order."""

    def __init__(self, inner: httpx.BaseTransport, events: list[tuple[str, Any]]) -> None:
        super().__init__(inner)
        self.events = events

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.events.append(("send", request.url.raw_path.decode()))
        return self.forward(request)


class Walk:
    """A cursor-paginated walk through a RetryTransport client, recording sends, waits, sleeps."""

    def __init__(self, admin: httpx.Client, **knobs: Any) -> None:
        self.admin = admin
        self.client_id = f"t-retry-{uuid.uuid4().hex}"
        self.events: list[tuple[str, Any]] = []  # ("send", path) | ("wait", AttemptInfo)
        self.slept: list[float] = []
        self.policy = RetryPolicy(sleep=self._sleep, rng=random.Random(0), **knobs)

    def _sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        time.sleep(seconds)

    def _waited(self, info: AttemptInfo) -> None:
        self.events.append(("wait", info))

    def run(self, limit: int, *, timeout: float = 5.0) -> list[int]:
        transport = RetryTransport(
            Recorder(httpx.HTTPTransport(), self.events), self.policy, on_retry=self._waited
        )
        ids: list[int] = []
        params: dict[str, Any] = {"limit": limit}
        with httpx.Client(
            base_url=str(self.admin.base_url),
            transport=transport,
            headers={"X-Client-Id": self.client_id},
            timeout=timeout,
        ) as client:
            while True:
                page: dict[str, Any] = {}
                # Truncated JSON comes back as a 200; the page loop re-fetches it, same policy.
                for attempt in self.policy.retrying(on_retry=self._waited):
                    with attempt:
                        response = raise_for_status(
                            client.get("/rest/cursor/customers", params=params)
                        )
                        try:
                            page = json.loads(response.content)
                        except ValueError as exc:
                            raise errors.DecodeError("truncated page") from exc
                ids += [customer["id"] for customer in page["data"]]
                if page["next_cursor"] is None:
                    return ids
                params = {"limit": limit, "cursor": page["next_cursor"]}

    def server_log(self) -> list[dict[str, Any]]:
        answer = self.admin.get("/_admin/requests", params={"client": self.client_id})
        entries: list[dict[str, Any]] = answer.json()["requests"]
        return entries

    def retries(self) -> list[tuple[int, AttemptInfo]]:
        """Each wait with the index (in the server log) of the attempt it followed."""
        found, index = [], -1
        for kind, payload in self.events:
            if kind == "send":
                index += 1
            else:
                found.append((index, payload))
        return found

    def assert_spacing(self) -> list[tuple[int, AttemptInfo]]:
        """The server saw every retry at least the policy's wait after the attempt before it."""
        log = self.server_log()
        sent = [path for kind, path in self.events if kind == "send"]
        # One client, one request at a time: the server's log is our send order.
        assert [entry["path"] for entry in log] == sent
        retries = self.retries()
        for index, info in retries:
            gap = log[index + 1]["t_monotonic"] - log[index]["t_monotonic"]
            assert gap >= info.wait, (index, info, gap)
        return retries


def test_a_walk_with_every_kind_of_fault_gets_every_page(mock_api: httpx.Client) -> None:
    faults = {"rate": 0.3, "slow_seconds": 0.5, "retry_after_seconds": 1}
    mock_api.put("/_admin/config", json={"records": 300, "faults": faults}).raise_for_status()
    walk = Walk(
        mock_api,
        initial_wait=0.01,
        max_wait=0.05,
        retry_after_cap=CAP,
        budget_seconds=30.0,
    )
    ids = walk.run(limit=10, timeout=0.25)
    assert ids == list(range(1, 301))

    stats = mock_api.get("/_admin/stats").json()["clients"][walk.client_id]
    assert sum(stats["by_fault"].values()) > 0
    retries = walk.assert_spacing()
    assert len(retries) > 0
    hinted = [info for _, info in retries if info.server_hint is not None]
    # The mock's hints are >= 1 s; the policy never waited longer than its cap.
    assert all(info.wait == CAP for info in hinted)
    assert max(walk.slept) <= CAP


def test_retry_after_cap_is_honoured(mock_api: httpx.Client) -> None:
    faults = {
        "rate": 1.0,
        "weights": {"429": 1, "429-date": 1, "503": 1},
        "max_consecutive_faults": 2,
        "retry_after_seconds": 1,
    }
    mock_api.put("/_admin/config", json={"records": 30, "faults": faults}).raise_for_status()
    walk = Walk(mock_api, initial_wait=0.01, max_wait=0.02, retry_after_cap=CAP)
    assert walk.run(limit=10) == list(range(1, 31))

    retries = walk.assert_spacing()
    # Every request faulted twice (each with a hint of >= 1 s) and then succeeded.
    assert len(walk.server_log()) == 3 * len({path for k, path in walk.events if k == "send"})
    assert len(retries) == 2 * 3
    assert all(info.server_hint == CAP and info.wait == CAP for _, info in retries)
    assert walk.slept == [CAP] * 6


def test_async_client_walks_the_faulty_api(mock_api: httpx.Client) -> None:
    faults = {"rate": 0.5, "weights": {"500": 1, "503": 1, "drop": 1}, "retry_after_seconds": 1}
    # 20 pages at a fault rate of 0.5: some retries are all but certain (1 - 2**-20).
    mock_api.put("/_admin/config", json={"records": 100, "faults": faults}).raise_for_status()
    slept: list[float] = []

    async def nap(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(seconds)

    policy = RetryPolicy(async_sleep=nap, initial_wait=0.01, max_wait=0.02, retry_after_cap=CAP)

    async def main() -> list[int]:
        ids: list[int] = []
        params: dict[str, Any] = {"limit": 5}
        async with httpx.AsyncClient(
            base_url=str(mock_api.base_url),
            transport=RetryTransport(httpx.AsyncHTTPTransport(), policy),
            headers={"X-Client-Id": f"t-retry-{uuid.uuid4().hex}"},
        ) as client:
            while True:
                response = await client.get("/rest/cursor/customers", params=params)
                page = raise_for_status(response).json()
                ids += [customer["id"] for customer in page["data"]]
                if page["next_cursor"] is None:
                    return ids
                params = {"limit": 5, "cursor": page["next_cursor"]}

    assert asyncio.run(main()) == list(range(1, 101))
    assert slept and max(slept) <= CAP
