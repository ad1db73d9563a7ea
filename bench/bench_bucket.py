"""How many token-bucket script calls per second one Redis serves, next to a PING baseline.

    python bench/bench_bucket.py [--redis-url URL] [--seconds 2] [--processes 1 4]

Each measurement runs N processes, released together, each making calls back to back on its own
connection for ``--seconds``: ``PING`` (the round trip alone) and ``RedisTokenBucket.try_acquire``
(one EVALSHA of the Lua script) on one shared bucket, as many workers of one limit would. The ratio
script/PING is what the script itself costs on top of a round trip; it is comparable across
machines, the absolute numbers are not. Not part of the test suite.

The bucket is large (it never runs dry), so every call does the full read-refill-take-write path.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
import uuid
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

import redis

from ingest.http.ratelimit import RedisTokenBucket


def _worker(
    kind: str, url: str, prefix: str, seconds: float, start: Barrier, results: Queue[int]
) -> None:
    client = redis.Redis.from_url(url)
    bucket = RedisTokenBucket(client, capacity=1_000_000, rate=1_000_000.0, prefix=prefix)
    call = client.ping if kind == "ping" else lambda: bucket.try_acquire("bench")
    call()  # connect, and load the script, before the clock starts
    start.wait()
    calls, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        call()
        calls += 1
    client.close()
    results.put(calls)


def measure(kind: str, url: str, prefix: str, processes: int, seconds: float) -> float:
    """Calls per second, summed over ``processes`` processes calling back to back."""
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(processes)
    results: Queue[int] = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(kind, url, prefix, seconds, start, results))
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    total = sum(results.get(timeout=seconds + 60) for _ in procs)
    for proc in procs:
        proc.join()
    return total / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=os.environ.get("INGEST_REDIS_URL"))
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    if not args.redis_url:
        parser.error("give --redis-url or set INGEST_REDIS_URL (`ingest stack up` prints one)")

    client = redis.Redis.from_url(args.redis_url)
    version = client.info("server")["redis_version"]
    prefix = f"bench:bucket:{uuid.uuid4().hex}:"
    print(f"Redis {version}, {args.seconds:g} s per measurement, one shared bucket")
    print(f"{'processes':>9}  {'PING/s':>9}  {'script/s':>9}  {'script/PING':>11}")
    try:
        for n in args.processes:
            ping = measure("ping", args.redis_url, prefix, n, args.seconds)
            script = measure("script", args.redis_url, prefix, n, args.seconds)
            print(f"{n:>9}  {ping:>9.0f}  {script:>9.0f}  {script / ping:>11.2f}")
    finally:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
