"""`ingest.http.client`: the one policy stack, in the documented order, doing its job end to end."""

from __future__ import annotations

import uuid

import httpx
import pytest

from ingest.errors import CircuitOpen
from ingest.http.breaker import BreakerConfig, BreakerRegistry, CircuitBreakerTransport
from ingest.http.client import build_client, build_transport
from ingest.http.ratelimit import LocalTokenBucket, RateLimitTransport
from ingest.http.retry import RetryPolicy, RetryTransport
from ingest.state.idempotency import IdempotencyStore, IdempotencyTransport

NO_WAIT = RetryPolicy(initial_wait=0, max_wait=0, retry_after_cap=0, sleep=lambda _s: None)


def _chain(transport: httpx.BaseTransport) -> list[type]:
    kinds = []
    while transport is not None:
        kinds.append(type(transport))
        transport = getattr(transport, "inner", None)
    return kinds


def test_stack_order(database_url: str, fresh_schema: str) -> None:
    store = IdempotencyStore(database_url, schema=fresh_schema)
    inner = httpx.MockTransport(lambda r: httpx.Response(200))
    transport = build_transport(
        policy=NO_WAIT,
        bucket=LocalTokenBucket(capacity=5, rate=5),
        idempotency=store,
        transport=inner,
    )
    assert _chain(transport) == [
        IdempotencyTransport,
        RetryTransport,
        CircuitBreakerTransport,
        RateLimitTransport,
        httpx.MockTransport,
    ]


def test_every_attempt_takes_a_token() -> None:
    calls: list[int] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503 if len(calls) < 3 else 200)

    bucket = LocalTokenBucket(capacity=10, rate=0.001)
    with build_client(
        base_url="http://api.test",
        policy=NO_WAIT,
        bucket=bucket,
        bucket_key="api",
        transport=httpx.MockTransport(flaky),
    ) as client:
        assert client.get("/x").status_code == 200
    assert len(calls) == 3
    assert bucket.level("api") == pytest.approx(7, abs=0.01)


def test_post_gets_a_stable_key_and_is_retried(database_url: str, fresh_schema: str) -> None:
    keys: list[str | None] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers.get("Idempotency-Key"))
        return httpx.Response(503 if len(keys) < 2 else 201, json={"ok": True})

    store = IdempotencyStore(database_url, schema=fresh_schema)
    with build_client(
        base_url="http://api.test",
        policy=NO_WAIT,
        idempotency=store,
        transport=httpx.MockTransport(flaky),
    ) as client:
        assert client.post("/charges", json={"amount": 100}).status_code == 201
        # The same request again is not sent: it already completed.
        again = client.post("/charges", json={"amount": 100})
    assert len(keys) == 2 and keys[0] is not None and keys[0] == keys[1]
    assert again.headers.get("Ingest-Idempotent-Replay") == "true"


def test_post_without_idempotency_is_not_retried() -> None:
    calls: list[int] = []

    def failing(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503)

    with build_client(
        base_url="http://api.test", policy=NO_WAIT, transport=httpx.MockTransport(failing)
    ) as client:
        assert client.post("/charges", json={}).status_code == 503
    assert len(calls) == 1


def test_open_breaker_fails_fast_without_calling_the_network() -> None:
    calls: list[int] = []

    def down(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503)

    breakers = BreakerRegistry(BreakerConfig(failure_threshold=3, cooldown=60.0))
    policy = RetryPolicy(
        max_attempts=10, initial_wait=0, max_wait=0, retry_after_cap=0, sleep=lambda _s: None
    )
    with (
        build_client(
            base_url="http://api.test",
            policy=policy,
            breakers=breakers,
            transport=httpx.MockTransport(down),
        ) as client,
        pytest.raises(CircuitOpen),
    ):
        client.get("/x")
    assert len(calls) == 3


def test_faulty_mock_api_answers_every_request(mock_api_url: str) -> None:
    client_id = f"client-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=mock_api_url) as admin:
        # Every fault but `truncated`: a cut body is a complete HTTP exchange, so the transports
        # pass it on and the paginate loop re-fetches it (tests/http/test_paginate.py).
        weights = {k: 1 for k in ("429", "429-date", "500", "502", "503", "slow", "drop")}
        faults = {"rate": 0.3, "slow_seconds": 1.0, "weights": weights}
        admin.put("/_admin/config", json={"seed": 5, "faults": faults}).raise_for_status()
        try:
            policy = RetryPolicy(initial_wait=0.01, max_wait=0.05, retry_after_cap=0.05)
            with build_client(
                base_url=mock_api_url,
                headers={"X-Client-Id": client_id},
                timeout=0.5,
                policy=policy,
            ) as client:
                bodies = [client.get(f"/rest/customers/{i}").json() for i in range(1, 61)]
            stats = admin.get("/_admin/stats").json()["clients"][client_id]
        finally:
            admin.put("/_admin/config", json={}).raise_for_status()
    assert [b["id"] for b in bodies] == list(range(1, 61))
    assert stats["requests"] > 60 and sum(stats["by_fault"].values()) == stats["requests"] - 60
