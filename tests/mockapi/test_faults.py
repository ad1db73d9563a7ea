"""Injected faults happen, look to httpx as documented, and are deterministic per request."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from .conftest import Configure

DATA = "/rest/next-url/customers?limit=5"


def only(kind: str, **faults: Any) -> dict[str, Any]:
    """A fault config where every data request gets ``kind``."""
    return {"rate": 1.0, "weights": {kind: 1}, **faults}


def server_log(client: httpx.Client, who: str | None = None) -> list[dict[str, Any]]:
    params = {"client": who} if who else {}
    entries: list[dict[str, Any]] = client.get("/_admin/requests", params=params).json()["requests"]
    return entries


@pytest.mark.parametrize(
    ("kind", "status"), [("429", 429), ("500", 500), ("502", 502), ("503", 503)]
)
def test_status_faults(client: httpx.Client, configure: Configure, kind: str, status: int) -> None:
    configure(faults=only(kind, retry_after_seconds=7))
    response = client.get(DATA)
    assert response.status_code == status
    assert response.json()["error"]["details"] == {"fault": kind}
    if kind in ("429", "503"):
        assert response.headers["retry-after"] == "7"  # delta-seconds
    else:
        assert "retry-after" not in response.headers
    [entry] = server_log(client)
    assert (entry["path"], entry["status"], entry["fault"]) == (DATA, status, kind)
    assert not entry["rate_limited"]


def test_429_with_an_http_date(client: httpx.Client, configure: Configure) -> None:
    configure(faults=only("429-date", retry_after_seconds=3))
    before = datetime.now(UTC)
    response = client.get(DATA)
    assert response.status_code == 429
    value = response.headers["retry-after"]
    assert not value.isdigit() and value.endswith(" GMT")  # IMF-fixdate
    when = parsedate_to_datetime(value)
    # Rounded up to the whole second: never sooner than promised, at most a second later.
    assert before.timestamp() + 3 <= when.timestamp() + 1
    assert when.timestamp() <= datetime.now(UTC).timestamp() + 4


def test_slow_times_out_a_short_timeout_and_does_not_block_the_server(
    client: httpx.Client, configure: Configure, mockapi_url: str
) -> None:
    configure(faults=only("slow", slow_seconds=1.0))
    with pytest.raises(httpx.ReadTimeout):
        client.get(DATA, timeout=0.2)

    answered: dict[str, Any] = {}

    def patient() -> None:
        started = time.monotonic()
        with httpx.Client(base_url=mockapi_url, timeout=5.0) as other:
            answered["response"] = other.get("/rest/offset/customers?limit=2")
        answered["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=patient)
    thread.start()
    time.sleep(0.1)
    started = time.monotonic()
    assert client.get("/healthz").status_code == 200
    assert time.monotonic() - started < 0.5  # the sleeping request does not hold the loop
    assert thread.is_alive()
    thread.join()
    assert answered["seconds"] >= 1.0
    response = answered["response"]
    assert response.status_code == 200 and len(response.json()["items"]) == 2


def test_drop_is_a_remote_protocol_error(client: httpx.Client, configure: Configure) -> None:
    configure(faults=only("drop"))
    with pytest.raises(httpx.RemoteProtocolError, match="without sending complete message body"):
        client.get(DATA)
    # Seen as a stream: the status line and headers arrive, the body stops half-way.
    with client.stream("GET", "/rest/cursor/customers?limit=5") as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            response.read()
    assert [(e["status"], e["fault"]) for e in server_log(client)] == [(None, "drop")] * 2


def test_truncated_is_a_200_whose_json_does_not_decode(
    client: httpx.Client, configure: Configure
) -> None:
    whole = client.get(DATA).content
    configure(faults=only("truncated"))
    response = client.get(DATA)
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    assert 0 < len(response.content) < len(whole) and whole.startswith(response.content)
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_control_routes_are_never_faulted(client: httpx.Client, configure: Configure) -> None:
    configure(faults=only("500"))
    assert client.get("/healthz").status_code == 200
    assert client.get("/_admin/stats").json()["total"]["requests"] == 0
    assert client.post("/_admin/reset").status_code == 200
    assert client.get(DATA).status_code == 500  # while data routes are


def _outcome(client: httpx.Client, url: str) -> str:
    try:
        response = client.get(url)
        response.json()
    except httpx.RemoteProtocolError:
        return "drop"
    except json.JSONDecodeError:
        return "truncated"
    return str(response.status_code)


URLS = [f"/rest/offset/customers?offset={i}&limit=3" for i in range(80)]
SEEDED = {"seed": 11, "faults": {"rate": 0.3, "slow_seconds": 0.05, "retry_after_seconds": 0}}


def _faulted(client: httpx.Client) -> dict[str, str]:
    return {e["path"]: e["fault"] for e in server_log(client) if e["fault"] is not None}


def test_the_same_seed_faults_the_same_requests_at_any_concurrency(
    client: httpx.Client, configure: Configure, mockapi_url: str
) -> None:
    configure(**SEEDED)
    sequential = {url: _outcome(client, url) for url in URLS}
    first = _faulted(client)

    configure(**SEEDED)
    limits = httpx.Limits(max_connections=16)
    with (
        httpx.Client(base_url=mockapi_url, timeout=10.0, limits=limits) as pooled,
        ThreadPoolExecutor(16) as pool,
    ):
        # Reversed as well as concurrent: a shared random stream would now hand out other draws.
        backwards = URLS[::-1]
        outcomes = pool.map(lambda u: _outcome(pooled, u), backwards)
        concurrent = dict(zip(backwards, outcomes, strict=True))
    second = _faulted(client)

    assert 10 <= len(first) <= 40  # about 30% of 80, so the comparison is not vacuous
    assert second == first
    assert concurrent == sequential
    # What the client saw is what the server says it did.
    slow_or_ok = {u for u, kind in first.items() if kind == "slow"} | (set(URLS) - set(first))
    assert {u for u, seen in sequential.items() if seen == "200"} == slow_or_ok

    configure(**(SEEDED | {"seed": 12}))
    for url in URLS:
        _outcome(client, url)
    assert _faulted(client) != first  # the seed matters


def _statuses(client: httpx.Client, n: int, url: str = DATA) -> list[int]:
    return [client.get(url).status_code for _ in range(n)]


def test_max_consecutive_faults_bounds_a_streak(client: httpx.Client, configure: Configure) -> None:
    configure(faults=only("500", max_consecutive_faults=2))
    assert _statuses(client, 9) == [500, 500, 200] * 3
    configure(faults=only("500", max_consecutive_faults=None))
    assert _statuses(client, 6) == [500] * 6
    configure(faults=only("500", max_consecutive_faults=0))
    assert _statuses(client, 3) == [200] * 3


def test_a_retried_request_gets_a_fresh_deterministic_draw(
    client: httpx.Client, configure: Configure
) -> None:
    configure(faults={"rate": 0.5, "weights": {"503": 1}, "max_consecutive_faults": None})
    first = _statuses(client, 30)
    assert {200, 503} <= set(first)  # retries of one URL are drawn independently
    client.post("/_admin/reset").raise_for_status()
    assert _statuses(client, 30) == first  # and a new run replays the same draws
    # Another client id draws its own sequence for the same URL.
    client.post("/_admin/reset").raise_for_status()
    as_b = [client.get(DATA, headers={"X-Client-Id": "b"}).status_code for _ in range(30)]
    assert as_b != first
