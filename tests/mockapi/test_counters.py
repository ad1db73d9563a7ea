"""Server-side rate limit, per-client counters and the request log say exactly what was sent."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from .conftest import Configure

DATA = "/rest/cursor/customers?limit=2"


def stats(client: httpx.Client) -> dict[str, Any]:
    body: dict[str, Any] = client.get("/_admin/stats").json()
    return body


def log(client: httpx.Client, who: str | None = None) -> list[dict[str, Any]]:
    params = {"client": who} if who else {}
    entries: list[dict[str, Any]] = client.get("/_admin/requests", params=params).json()["requests"]
    return entries


def test_rate_limit_rejects_above_the_rate_and_says_when_to_come_back(
    client: httpx.Client, configure: Configure
) -> None:
    configure(rate_limit={"rate": 2.0, "burst": 5})
    started = time.monotonic()
    responses = [client.get(DATA, headers={"X-Client-Id": "rl"}) for _ in range(20)]
    elapsed = time.monotonic() - started
    statuses = [r.status_code for r in responses]

    assert statuses[:5] == [200] * 5  # the burst
    allowed = statuses.count(200)
    assert allowed <= 5 + int(elapsed * 2.0) + 1  # then no more than the refill rate
    assert statuses.count(429) == 20 - allowed >= 10
    for r in responses:
        assert r.headers["x-ratelimit-limit"] == "5"
        assert int(r.headers["x-ratelimit-reset"]) >= int(time.time()) - 1  # epoch seconds
    rejected = [r for r in responses if r.status_code == 429]
    assert all(r.headers["x-ratelimit-remaining"] == "0" for r in rejected)
    assert all(r.json()["error"]["type"] == "rate_limited" for r in rejected)
    waits = {int(r.headers["retry-after"]) for r in rejected}
    assert waits == {1}  # 1 token at 2/s: half a second, rounded up to the minimum of 1

    counters = stats(client)["clients"]["rl"]
    assert counters == {
        "requests": 20,
        "by_status": {str(s): n for s, n in sorted(Counter(statuses).items())},
        "by_fault": {},  # rate limiting is not a fault
        "rate_limited": len(rejected),
    }
    entries = log(client, "rl")
    assert [e["status"] for e in entries] == statuses
    assert [e["rate_limited"] for e in entries] == [s == 429 for s in statuses]
    assert all(e["fault"] is None for e in entries)

    time.sleep(1.0)  # as Retry-After said
    assert client.get(DATA, headers={"X-Client-Id": "rl"}).status_code == 200


@pytest.mark.parametrize(("scope", "b_status"), [("client", 200), ("global", 429)])
def test_rate_limit_scope(
    client: httpx.Client, configure: Configure, scope: str, b_status: int
) -> None:
    configure(rate_limit={"rate": 0.1, "burst": 3, "scope": scope})
    a = [client.get(DATA, headers={"X-Client-Id": "a"}).status_code for _ in range(4)]
    assert a == [200, 200, 200, 429]
    assert client.get(DATA, headers={"X-Client-Id": "b"}).status_code == b_status


def _observe(client: httpx.Client, url: str, headers: dict[str, str]) -> tuple[int | None, bool]:
    """(status the client got or None for a dropped connection, whether the body decoded)."""
    try:
        response = client.get(url, headers=headers)
    except httpx.RemoteProtocolError:
        return None, False
    try:
        response.json()
    except json.JSONDecodeError:
        return response.status_code, False
    return response.status_code, True


def test_counters_and_log_match_what_the_client_saw(
    client: httpx.Client, configure: Configure
) -> None:
    configure(
        seed=5,
        faults={"rate": 0.4, "weights": {"429": 1, "503": 1, "drop": 1, "truncated": 1}},
    )
    sent = []
    for i in range(50):
        url = f"/rest/offset/customers?offset={i % 7}&limit=3"  # repeats: retries of one URL
        key = f"key-{i}"
        sent.append((url, key, _observe(client, url, {"X-Client-Id": "c", "Idempotency-Key": key})))

    entries = log(client, "c")
    assert len(entries) == 50
    assert [(e["path"], e["idempotency_key"], e["status"]) for e in entries] == [
        (url, key, seen[0]) for url, key, seen in sent
    ]
    assert [e["seq"] for e in entries] == list(range(1, 51))
    faults = Counter(e["fault"] for e in entries if e["fault"])
    assert faults["drop"] == sum(seen[0] is None for _, _, seen in sent) > 0
    assert faults["truncated"] == sum(seen == (200, False) for _, _, seen in sent) > 0

    counters = stats(client)
    assert counters["clients"]["c"] == {
        "requests": 50,
        "by_status": {
            str(s): n for s, n in sorted(Counter(seen[0] for *_, seen in sent if seen[0]).items())
        },
        "by_fault": dict(sorted(faults.items())),
        "rate_limited": 0,
    }
    assert counters["total"] == counters["clients"]["c"]  # nobody else was counted


def test_clients_are_counted_separately(client: httpx.Client, configure: Configure) -> None:
    configure(faults={"rate": 1.0, "weights": {"500": 1}, "max_consecutive_faults": None})
    for _ in range(3):
        client.get(DATA, headers={"X-Client-Id": "alpha"})
    client.get(DATA, headers={"X-Client-Id": "beta"})
    client.get(DATA)  # no header: known by its address

    clients = stats(client)["clients"]
    assert set(clients) == {"alpha", "beta", "127.0.0.1"}
    assert clients["alpha"]["requests"] == 3 and clients["alpha"]["by_fault"] == {"500": 3}
    assert clients["beta"]["requests"] == 1 and clients["beta"]["by_status"] == {"500": 1}
    assert [e["client"] for e in log(client, "alpha")] == ["alpha"] * 3
    assert [e["client"] for e in log(client)] == ["alpha"] * 3 + ["beta", "127.0.0.1"]


def test_the_log_measures_spacing_on_the_server_clock(client: httpx.Client) -> None:
    for _ in range(3):
        client.get(DATA)
        time.sleep(0.2)
    times = [e["t_monotonic"] for e in log(client)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 2 and all(0.19 <= g < 1.0 for g in gaps)
    walls = [e["t_wall"] for e in log(client)]
    assert abs(walls[0] - time.time()) < 5


def test_reset_and_reconfigure_zero_the_counters(
    client: httpx.Client, configure: Configure
) -> None:
    configure(records=20, max_log_entries=5)
    for _ in range(8):
        client.get(DATA)
    body = client.get("/_admin/requests").json()
    assert [e["seq"] for e in body["requests"]] == [4, 5, 6, 7, 8] and body["evicted"] == 3
    assert stats(client)["total"]["requests"] == 8  # the cap bounds the log, not the counters

    client.post("/_admin/reset").raise_for_status()
    assert stats(client)["total"]["requests"] == 0 and log(client) == []
    assert client.get("/_admin/config").json()["records"] == 20  # reset keeps the config
    client.get(DATA)
    configure()
    assert stats(client) == {
        "clients": {},
        "total": {"requests": 0, "by_status": {}, "by_fault": {}, "rate_limited": 0},
    }
    assert client.get("/_admin/config").json()["records"] == 1000


@pytest.mark.parametrize(
    "body",
    [
        {"faults": {"rate": 1.5}},
        {"faults": {"weights": {"teapot": 1}}},
        {"faults": {"weights": {"500": 0}}},
        {"rate_limit": {"rate": 0}},
        {"records": -1},
        {"unknown": True},
    ],
)
def test_bad_config_is_400_and_keeps_the_old_one(
    client: httpx.Client, configure: Configure, body: dict[str, Any]
) -> None:
    configure(records=30)
    response = client.put("/_admin/config", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request"
    assert client.get("/_admin/config").json()["records"] == 30
