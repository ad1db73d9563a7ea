"""Webhook receiver speed: verified + deduplicated + committed events/s, next to a no-op endpoint.

    bash scripts/setup-bench.sh      # wrk, from Debian's packages
    python bench/bench_receiver.py [--duration 12] [--connections 64] [--threads 1] [--repeat 3]

Two servers, served the same way in the same run (uvicorn, one worker, the same request stream):

1. a no-op FastAPI endpoint, ``POST /webhooks/{source}``, that reads the body and answers a small
   JSON — what uvicorn + FastAPI cost on this machine, the ceiling;
2. the real receiver, started as ``ingest serve receiver --workers 1`` with one Stripe-scheme
   source: signature check, bloom filter, group commit into ``webhook_events`` + outbox, then 2xx.

wrk drives both with ``--connections`` keep-alive connections for ``--duration`` seconds. wrk's Lua
cannot compute an HMAC, so the requests are signed beforehand (one unique event id each, more than
a run can send) and the Lua script cycles through them. The script also reads every answer, so it
can name the events the receiver acknowledged; after each run those are looked up in PostgreSQL:
every 2xx must be a stored row. Rows beyond the 2xx count are requests committed while wrk was
stopping (at most one per connection).

The load generator is shown not to be the limit twice: wrk drives the no-op endpoint, with the same
script and connections, far faster than the receiver runs; and wrk's own CPU time is printed next
to the server's and PostgreSQL's. Medians of ``--repeat`` rounds; the ratio receiver/no-op is the
figure comparable across machines. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the sender library lives with the tests it was written for

from tests.webhooks.senders import (  # noqa: E402
    Load,
    SenderSource,
    make_deliveries,
    signed_requests,
    write_sources,
)

from ingest.netutil import free_port, wait_for_port  # noqa: E402
from ingest.state.migrate import migrate  # noqa: E402

# Requests are read from BENCH_WRK_REQUESTS ("<Stripe-Signature>\t<body>" per line); thread k of n
# takes lines k, k+n, ... . done() writes the run's figures and acknowledged ids as JSON.
WRK_SCRIPT = r"""
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local nthreads = tonumber(os.getenv("BENCH_WRK_THREADS"))
  local path = os.getenv("BENCH_WRK_PATH")
  reqs, n = {}, 0
  for line in io.lines(os.getenv("BENCH_WRK_REQUESTS")) do
    if n % nthreads == tid then
      local signature, body = line:match("^([^\t]*)\t(.*)$")
      reqs[#reqs + 1] = wrk.format("POST", path,
        {["Content-Type"] = "application/json", ["Stripe-Signature"] = signature}, body)
    end
    n = n + 1
  end
  nxt, wrapped = 0, 0
  accepted, duplicate, refused = 0, 0, 0
  acked = {}
end

function request()
  nxt = nxt + 1
  if nxt > #reqs then nxt, wrapped = 1, 1 end
  return reqs[nxt]
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    local outcome = body:match('"status":"(%a+)"')
    if outcome == "duplicate" then
      duplicate = duplicate + 1
    else
      accepted = accepted + 1
      acked[#acked + 1] = body:match('"id":"([^"]+)"')
    end
  else
    refused = refused + 1
  end
end

function done(summary, latency, requests)
  local accepted, duplicate, refused, wrapped, ids = 0, 0, 0, 0, {}
  for _, thread in ipairs(threads) do
    accepted = accepted + thread:get("accepted")
    duplicate = duplicate + thread:get("duplicate")
    refused = refused + thread:get("refused")
    wrapped = wrapped + thread:get("wrapped")
    for _, id in ipairs(thread:get("acked")) do ids[#ids + 1] = '"' .. id .. '"' end
  end
  local e = summary.errors
  local out = io.open(os.getenv("BENCH_WRK_RESULTS"), "w")
  out:write(string.format(
    '{"requests":%d,"duration_us":%d,"accepted":%d,"duplicate":%d,"refused":%d,"wrapped":%d,',
    summary.requests, summary.duration, accepted, duplicate, refused, wrapped))
  out:write(string.format(
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},',
    e.connect, e.read, e.write, e.status, e.timeout))
  out:write(string.format(
    '"latency_us":{"p50":%d,"p75":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},',
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
  out:write('"acked":[' .. table.concat(ids, ",") .. ']}')
  out:close()
end
"""


def noop_app() -> FastAPI:
    """The baseline: FastAPI, a path parameter, the body read, a small JSON answer."""
    app = FastAPI()

    @app.post("/webhooks/{source}")
    async def receive(source: str, request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"status": "accepted", "id": "noop"})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve_noop(port: int) -> None:
    """``--serve-noop``: the no-op app under uvicorn, configured as ``ingest serve receiver`` is."""
    import uvicorn

    uvicorn.run(noop_app(), host="127.0.0.1", port=port, workers=1, log_level="warning")


# -- processes and CPU time ------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _postgres_cpu() -> dict[int, float]:
    """CPU seconds of every process named ``postgres`` on the machine, by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        if text.split("(", 1)[1].rsplit(")", 1)[0] == "postgres":
            fields = text.rsplit(")", 1)[1].split()
            found[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _TICK
    return found


def _cpu_since(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used between two snapshots by the processes alive at the second (a backend that
    exited meanwhile is missed: an undercount, never a negative)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / _TICK, sum(values) / _TICK


@contextmanager
def server(
    kind: str, port: int, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start the no-op or the receiver on ``port``; stop it (SIGTERM) afterwards."""
    if kind == "noop":
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve-noop", "--port", str(port)]
    else:
        argv = [sys.executable, "-m", "ingest", "serve", "receiver", "--port", str(port)]
        argv += ["--workers", "1"]
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_for_port("127.0.0.1", port, timeout=60)
        ready = "/healthz" if kind == "noop" else "/readyz"
        httpx.get(f"http://127.0.0.1:{port}{ready}", timeout=10).raise_for_status()
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- one run ---------------------------------------------------------------------------------


@dataclass
class Run:
    """One wrk run against one server."""

    kind: str
    requests: int
    seconds: float
    accepted: int
    duplicate: int
    refused: int
    errors: dict[str, int]
    latency_ms: dict[str, float]
    acked: list[str]
    wrapped: bool
    server_cpu: float  # share of one core, over the run
    wrk_cpu: float
    postgres_cpu: float
    machine_busy: float  # share of all cores

    @property
    def rate(self) -> float:
        """2xx answers per second (for the receiver: events verified, deduplicated, committed)."""
        return (self.accepted + self.duplicate) / self.seconds

    @property
    def per_cpu_second(self) -> float:
        """2xx answers per CPU-second of the server process: less sensitive to a busy machine."""
        return self.rate / self.server_cpu if self.server_cpu > 0 else float("nan")


def run_wrk(
    kind: str,
    url: str,
    path: str,
    requests_file: Path,
    workdir: Path,
    pid: int,
    args: argparse.Namespace,
) -> Run:
    script, results = workdir / "bench.lua", workdir / f"{kind}-results.json"
    script.write_text(WRK_SCRIPT)
    env = {
        **os.environ,
        "BENCH_WRK_REQUESTS": str(requests_file),
        "BENCH_WRK_RESULTS": str(results),
        "BENCH_WRK_THREADS": str(args.threads),
        "BENCH_WRK_PATH": path,
    }
    argv = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration}s"]
    argv += ["--timeout", "10s", "--latency", "-s", str(script), url]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server0, pg0, (busy0, total0) = _proc_cpu(pid), _postgres_cpu(), _machine_busy()
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    server1, pg1, (busy1, total1) = _proc_cpu(pid), _postgres_cpu(), _machine_busy()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0 or not results.exists():
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    if args.verbose:
        print(done.stdout)
    data = json.loads(results.read_text())
    wrk_cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    return Run(
        kind=kind,
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        accepted=data["accepted"],
        duplicate=data["duplicate"],
        refused=data["refused"],
        errors=data["errors"],
        latency_ms={k: v / 1000 for k, v in data["latency_us"].items()},
        acked=data["acked"],
        wrapped=bool(data["wrapped"]),
        server_cpu=(server1 - server0) / wall,
        wrk_cpu=wrk_cpu / wall,
        postgres_cpu=_cpu_since(pg0, pg1) / wall,
        machine_busy=(busy1 - busy0) / (total1 - total0),
    )


def warm_up(url: str, source: SenderSource, count: int) -> None:
    """A few hundred signed deliveries (ids of their own) before measuring."""
    deliveries = make_deliveries([source], count, start=10**9)
    load = asyncio.run(Load(url, deliveries, senders=16).run())
    if load.unacked():
        raise SystemExit(f"warm-up failed: {load.summary()}")


def write_requests(source: SenderSource, count: int, start: int, path: Path) -> None:
    """``count`` unique events, signed now, one ``signature<TAB>body`` line each."""
    with path.open("w") as out:
        for delivery, headers in signed_requests(
            make_deliveries([source], count, start=start), int(time.time())
        ):
            out.write(f"{headers['Stripe-Signature']}\t{delivery.body.decode()}\n")


def durable(database_url: str, schema: str, source: str, acked: list[str]) -> tuple[int, int]:
    """(rows stored for ``source``, acknowledged ids missing from them)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            sql.SQL("SELECT event_id FROM {}.webhook_events WHERE source = %s").format(
                sql.Identifier(schema)
            ),
            (source,),
        ).fetchall()
    stored = {row[0] for row in rows}
    return len(stored), len(set(acked) - stored)


# -- main ------------------------------------------------------------------------------------


def _median(runs: list[Run], key: str) -> float:
    return statistics.median(float(getattr(run, key)) for run in runs)


def _median_latency(runs: list[Run], percentile: str) -> float:
    return statistics.median(run.latency_ms[percentile] for run in runs)


def report(noop: list[Run], receiver: list[Run], args: argparse.Namespace) -> None:
    print(
        f"\nwrk: {args.threads} thread(s), {args.connections} connections, {args.duration} s per run,"
        f" uvicorn with 1 worker; medians of {len(noop)} round(s)"
    )
    header = (
        f"  {'':26s} {'2xx/s':>7s} {'p50 ms':>7s} {'p90 ms':>7s} {'p99 ms':>7s}"
        f" {'2xx/cpu-s':>9s} {'server':>7s} {'wrk':>5s} {'postgres':>8s} {'machine':>8s}"
    )
    print(header)
    for name, runs in (("no-op FastAPI endpoint", noop), ("receiver (stripe + commit)", receiver)):
        print(
            f"  {name:26s} {_median(runs, 'rate'):>7,.0f}"
            f" {_median_latency(runs, 'p50'):>7.1f} {_median_latency(runs, 'p90'):>7.1f}"
            f" {_median_latency(runs, 'p99'):>7.1f} {_median(runs, 'per_cpu_second'):>9,.0f}"
            f" {_median(runs, 'server_cpu'):>7.0%} {_median(runs, 'wrk_cpu'):>5.0%}"
            f" {_median(runs, 'postgres_cpu'):>8.0%} {_median(runs, 'machine_busy'):>8.0%}"
        )
    # Each round's receiver run is compared with the no-op run just before it, then the median.
    ratios = [r.rate / n.rate for n, r in zip(noop, receiver, strict=True)]
    per_cpu = [r.per_cpu_second / n.per_cpu_second for n, r in zip(noop, receiver, strict=True)]
    print("  (server, wrk, postgres: share of one core over the run; machine: of all cores)")
    print(
        f"\nratio receiver / no-op (median of the rounds' ratios): {statistics.median(ratios):.2f}"
        f" in 2xx/s, {statistics.median(per_cpu):.2f} per server CPU-second;"
        f" rounds: {', '.join(f'{x:.2f}' for x in ratios)}"
    )
    if max(_median(runs, "machine_busy") for runs in (noop, receiver)) > 0.95:
        print("note: the machine was saturated; run it when nothing else is running")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("INGEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--duration", type=int, default=12, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1 leaves a core)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (no-op, then receiver)")
    parser.add_argument(
        "--events", type=int, default=150_000, help="signed unique events per round (> a run's)"
    )
    parser.add_argument("--verbose", action="store_true", help="print wrk's own output too")
    parser.add_argument("--serve-noop", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_noop:
        serve_noop(args.port)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: bash scripts/setup-bench.sh")

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    migrate(args.database_url, schema=schema)
    workdir = Path(tempfile.mkdtemp(prefix="bench-receiver-"))
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; schema {schema}")
    noop_runs: list[Run] = []
    receiver_runs: list[Run] = []
    try:
        for round_no in range(args.repeat):
            # A source per round, with a tolerance that outlasts generating and sending its events.
            source = SenderSource.new("stripe", tolerance_seconds=3600)
            write_sources([source], workdir / f"sources-{round_no}")
            requests_file = workdir / f"requests-{round_no}.tsv"
            write_requests(source, args.events, round_no * args.events, requests_file)
            env = {
                **os.environ,
                **source.environ(),
                "INGEST_DATABASE_URL": args.database_url,
                "INGEST_DB_SCHEMA": schema,
                "INGEST_SOURCES_DIR": str(workdir / f"sources-{round_no}"),
                "INGEST_HOME": str(workdir / "home"),
            }
            path = f"/webhooks/{source.name}"
            for kind in ("noop", "receiver"):
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                with server(kind, port, env, workdir / f"{kind}.log") as proc:
                    warm_up(url, source, 500)
                    run = run_wrk(kind, url, path, requests_file, workdir, proc.pid, args)
                (noop_runs if kind == "noop" else receiver_runs).append(run)
                problems = {k: v for k, v in run.errors.items() if v}
                print(
                    f"round {round_no + 1} {kind:8s}: {run.requests:,} requests,"
                    f" {run.rate:,.0f} 2xx/s, p99 {run.latency_ms['p99']:.1f} ms,"
                    f" refused {run.refused}, socket errors {problems or 'none'}"
                )
            run = receiver_runs[-1]
            rows, missing = durable(args.database_url, schema, source.name, run.acked)
            rows -= 500  # the warm-up's
            print(
                f"  durability: {run.accepted:,} acknowledged new events, {missing} of them"
                f" missing from webhook_events; {rows:,} rows ({rows - run.accepted} committed"
                f" while wrk stopped); duplicates answered {run.duplicate}"
            )
            if missing:
                raise SystemExit("an acknowledged event is not stored: durability broken")
            if run.wrapped or run.duplicate:
                print("  note: the pre-signed events ran out and repeated; raise --events")
        report(noop_runs, receiver_runs, args)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


if __name__ == "__main__":
    main()
