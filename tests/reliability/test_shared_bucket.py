"""DESIGN invariant 4, limits hold across workers: four processes, one Redis bucket, one limit.

Four separate Python processes send requests to the real mock API through ``RateLimitTransport``
as fast as one shared ``RedisTokenBucket`` lets them, for ten seconds. What counts is what the
*server* saw: its request log (arrival times on its own clock) for this test's client id.

A token bucket of rate R and capacity C lets at most ``C + R·T`` requests through in any window of
T seconds; so the first ten seconds hold at most ``10·R + C`` requests and no one-second window more
than ``R + C``. Greedy workers should also *use* the limit: at least 90 % of ``10·R``.
"""

from __future__ import annotations

import bisect
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

RATE = 20.0
CAPACITY = 5
SECONDS = 10.0
WORKERS = 4

# Each worker says "ready" once imported and connected, and starts on "go", so interpreter
# start-up does not eat into the window; then it sends until its ten seconds are over.
WORKER = """
import json, sys, time
import httpx, redis
from ingest.http.ratelimit import RateLimitTransport, RedisTokenBucket

redis_url, api_url, prefix, client_id, rate, capacity, seconds = sys.argv[1:8]
bucket = RedisTokenBucket(
    redis.Redis.from_url(redis_url), capacity=int(capacity), rate=float(rate), prefix=prefix
)
transport = RateLimitTransport(httpx.HTTPTransport(), bucket)
headers = {"X-Client-Id": client_id}
with httpx.Client(transport=transport, base_url=api_url, headers=headers, timeout=10) as client:
    client.get("/healthz").raise_for_status()  # exempt from the server's counters
    print("ready", flush=True)
    sys.stdin.readline()
    deadline, sent = time.monotonic() + float(seconds), 0
    while time.monotonic() < deadline:
        client.get("/rest/page/customers", params={"page": 1, "per_page": 1}).raise_for_status()
        sent += 1
print(json.dumps({"sent": sent}), flush=True)
"""


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    value = f"test:shared-bucket:{uuid.uuid4().hex}:"
    yield value
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=value + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def run_workers(argv: list[str]) -> list[int]:
    """Start the workers, release them together, and return how many requests each sent."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(WORKERS)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", "a worker failed to start"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=60)[0] for proc in procs]
        assert all(proc.returncode == 0 for proc in procs)
        return [json.loads(out)["sent"] for out in outputs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_four_processes_share_one_limit(redis_url: str, mock_api_url: str, prefix: str) -> None:
    client_id = f"shared-bucket-{uuid.uuid4().hex[:12]}"
    with httpx.Client(base_url=mock_api_url, timeout=10) as admin:
        # Fault-free and no server-side limit: whatever holds the rate here is our bucket.
        admin.put("/_admin/config", json={}).raise_for_status()
        argv = [redis_url, mock_api_url, prefix, client_id, str(RATE), str(CAPACITY), str(SECONDS)]
        sent_by = run_workers(argv)
        log = admin.get("/_admin/requests", params={"client": client_id}).json()

    entries = log["requests"]
    assert log["evicted"] == 0
    assert all(e["status"] == 200 for e in entries)
    assert len(entries) == sum(sent_by)
    assert all(n > 0 for n in sent_by), f"a worker was starved: {sent_by}"

    arrivals = sorted(e["t_monotonic"] for e in entries)
    first = arrivals[0]
    in_window = [t for t in arrivals if t < first + SECONDS]
    assert len(in_window) <= RATE * SECONDS + CAPACITY
    assert len(in_window) >= 0.9 * RATE * SECONDS

    # Every one-second window that starts at an arrival (the busiest windows all do).
    busiest = max(bisect.bisect_left(arrivals, t + 1.0) - i for i, t in enumerate(arrivals))
    assert busiest <= RATE + CAPACITY, f"{busiest} requests arrived within one second"
