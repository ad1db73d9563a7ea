"""The webhook receiver's acceptance criteria, under load, over real sockets, on real PostgreSQL.

1. 10,000 deliveries from 50 concurrent senders, 30 % of them duplicates — some days later, signed
   again so they are within the tolerance: one row per distinct event, every answer 2xx. Runs in
   process with a fake clock, so "days later" passes through the bloom filter's generations.
2. The receiver (``ingest serve receiver``, a real process) is killed with SIGKILL twice during
   that load and restarted: every acknowledged event is in the table at the moment of each kill,
   and the senders' retries of the rest land once.
3. PostgreSQL (a private embedded server; the machine's own is never touched) is stopped for a few
   seconds during the load: 503 with ``Retry-After`` meanwhile, no 2xx without its row, and every
   event stored once after the senders retry.

And one delivery no retry can ever store (an event id too long for PostgreSQL's index) is bad
input, answered 400, not a 503 that its sender would retry for days.

The senders (``tests.webhooks.senders``) sign each attempt afresh, partly with the vendors' own
libraries, and record every answer, so what was acknowledged is compared with what is stored.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingest.netutil import free_port
from ingest.settings import Settings
from ingest.stack import _pg_bin_dir, _pg_system_user, _run_pg
from ingest.state.db import connect
from ingest.state.migrate import migrate
from ingest.webhooks.app import ReceiverConfig, create_app
from tests.support.servers import serve_in_thread
from tests.webhooks.senders import (
    SCHEMES,
    Delivery,
    Load,
    RetryPolicy,
    SenderSource,
    make_deliveries,
    write_sources,
)

DAY = 86_400
SENDERS = 50
T0 = 1_893_456_000  # 2030-01-01T00:00:00Z: the fake clock's start, a day boundary


class FakeClock:
    """The receiver's clock in test 1: it stands still within a wave and jumps between waves."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def _settings(**overrides: str) -> Settings:
    env = {k: v for k, v in os.environ.items() if k.startswith("INGEST_")}
    env.update({f"INGEST_{k.upper()}": v for k, v in overrides.items()})
    return Settings.from_environ(env)


def _sources() -> list[SenderSource]:
    return [SenderSource.new(scheme) for scheme in SCHEMES]


def _with_duplicates(originals: list[Delivery], duplicates: int, seed: int) -> list[Delivery]:
    """``originals`` plus ``duplicates`` re-deliveries of some of them, shuffled together."""
    rng = random.Random(seed)
    mixed = originals + rng.choices(originals, k=duplicates)
    rng.shuffle(mixed)
    return mixed


async def _wait_until(
    condition: Callable[[], bool], what: str, load: Load, timeout: float = 60.0
) -> None:
    """Poll ``condition`` on the event loop (the load keeps running meanwhile)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {load.summary()}")
        await asyncio.sleep(0.01)


def _finished(load: Load, share: float) -> Callable[[], bool]:
    """A condition: ``share`` of the load's deliveries are finished."""
    return lambda: load.progress >= share * len(load.deliveries)


def _stored(database_url: str, schema: str) -> Counter[tuple[str, str]]:
    """How many rows ``webhook_events`` holds per ``(source, event_id)``."""
    with connect(database_url, schema=schema) as conn:
        rows = conn.execute("SELECT source, event_id FROM webhook_events").fetchall()
    return Counter((str(source), str(event_id)) for source, event_id in rows)


def _scalar(database_url: str, schema: str, query: str) -> int:
    with connect(database_url, schema=schema) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(base_url: str) -> Samples:
    """Every sample of ``/metrics``, keyed by name and sorted labels."""
    text = httpx.get(f"{base_url}/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# -- 1. load with duplicates days later -----------------------------------------------------


def _waves(sources: list[SenderSource]) -> list[tuple[int, list[Delivery]]]:
    """(day, deliveries) of four waves: 7,000 distinct events and 3,000 duplicates in all.

    The bloom filter keeps 4 one-day generations, so events are remembered for at least 3 days:
    the duplicates on days 1 and 3 are inside that window, the ones of day 0 sent on day 6 are
    not, and only the unique key catches those.
    """
    e0 = make_deliveries(sources, 2500, start=0)
    e1 = make_deliveries(sources, 2500, start=2500)
    e2 = make_deliveries(sources, 2000, start=5000)
    rng = random.Random(20300101)

    def mix(*parts: list[Delivery]) -> list[Delivery]:
        deliveries = [d for part in parts for d in part]
        rng.shuffle(deliveries)
        return deliveries

    return [
        (0, _with_duplicates(e0, 250, seed=1)),  # concurrent duplicates: races on the same key
        (1, mix(e1, rng.sample(e0, 750))),
        (3, mix(e2, rng.sample(e0, 500), rng.sample(e1, 500))),
        (6, mix(rng.sample(e0, 500), rng.sample(e2, 500))),
    ]


def test_ten_thousand_deliveries_with_duplicates_days_later_store_each_event_once(
    database_url: str, fresh_schema: str
) -> None:
    sources = _sources()
    clock = FakeClock(T0)
    app = create_app(
        _settings(db_schema=fresh_schema),
        sources={s.name: s.receiver_source() for s in sources},
        config=ReceiverConfig(clock=clock),
    )
    waves = _waves(sources)
    assert sum(len(deliveries) for _, deliveries in waves) == 10_000
    first_seen: dict[tuple[str, str], float] = {}
    loads: list[Load] = []
    with serve_in_thread(app) as url:
        before = _scrape(url)
        assert _value(before, "ingest_webhook_bloom_bytes") == 0  # nothing stored yet
        scrapes = []
        for day, deliveries in waves:
            clock.now = T0 + day * DAY
            for delivery in deliveries:
                first_seen.setdefault(delivery.key, clock.now)
            # One attempt each: every answer must be a 2xx the first time.
            load = Load(
                url, deliveries, senders=SENDERS, clock=clock, policy=RetryPolicy(retry=False)
            )
            loads.append(asyncio.run(load.run()))
            scrapes.append(_scrape(url))

    # Every answer of every delivery is a 2xx, at the first attempt.
    for load in loads:
        assert load.statuses() == Counter({200: len(load.deliveries)}), load.summary()
        assert load.transport_errors() == 0
    answers = sum((load.answers() for load in loads), Counter[str]())
    assert answers == Counter({"accepted": 7000, "duplicate": 3000})

    # One row per distinct event (and its outbox row), stamped with its first delivery's time:
    # a duplicate days later neither adds a row nor rewrites the first.
    stored = _stored(database_url, fresh_schema)
    assert set(stored) == set(first_seen)
    assert set(stored.values()) == {1}
    assert _scalar(database_url, fresh_schema, "SELECT count(*) FROM outbox") == 7000
    with connect(database_url, schema=fresh_schema) as conn:
        received = {
            (str(s), str(e)): at.timestamp()
            for s, e, at in conn.execute("SELECT source, event_id, received_at FROM webhook_events")
        }
    assert received == first_seen

    # The per-source counters add up to the same story.
    final = scrapes[-1]
    for source in sources:
        sent = Counter(d.key for _, deliveries in waves for d in deliveries if d.source == source)
        accepted = _value(
            final, "ingest_webhook_events_total", source=source.name, result="accepted"
        )
        duplicate = _value(
            final, "ingest_webhook_events_total", source=source.name, result="duplicate"
        )
        assert (accepted, duplicate) == (len(sent), sum(sent.values()) - len(sent))
    assert _value(final, "ingest_webhook_bloom_checks_total") == 10_000
    assert _value(final, "ingest_webhook_duplicates_confirmed_total") == 3000

    # The filter: duplicates inside its window are "maybe seen" (then confirmed by PostgreSQL);
    # the day-0 events re-sent on day 6 have left it, and the unique key answered for them.
    def per_wave(name: str) -> list[float]:
        values = [_value(before, name)] + [_value(s, name) for s in scrapes]
        return [b - a for a, b in itertools.pairwise(values)]

    hits = per_wave("ingest_webhook_bloom_hits_total")
    false_positives = per_wave("ingest_webhook_bloom_false_positives_total")
    confirmed_by_filter = [h - f for h, f in zip(hits, false_positives, strict=True)]
    assert confirmed_by_filter[1] == 750
    assert confirmed_by_filter[2] == 1000
    # 500 from day 3 are inside the window; of the 500 from day 0, only a false positive
    # (0.1 % per lookup at most) could still be "maybe seen".
    assert 500 <= confirmed_by_filter[3] <= 525, confirmed_by_filter
    assert per_wave("ingest_webhook_duplicates_confirmed_total") == [250, 750, 1000, 1000]

    # A generation per day that stored new events (days 0, 1, 3); on day 6 the ones older than
    # the window are dropped, and day 6 stored nothing new: only day 3's is left.
    sizes = [_value(s, "ingest_webhook_bloom_bytes") for s in scrapes]
    generation = sizes[0]
    assert generation > 0
    assert sizes == [generation, 2 * generation, 3 * generation, generation]


# -- 2. SIGKILL twice during the load --------------------------------------------------------


class ReceiverProcess:
    """``python -m ingest serve receiver`` on a fixed port, as an operator runs it."""

    def __init__(self, port: int, env: dict[str, str], log: Path) -> None:
        self.port, self.env, self.log = port, env, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        argv = [sys.executable, "-m", "ingest", "serve", "receiver", "--port", str(self.port)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.starts += 1

    async def ready(self, timeout: float = 60.0) -> None:
        """Wait until ``/readyz`` answers 200 (the bloom filter is rebuilt by then)."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as client:
            while True:
                assert self.proc is not None and self.proc.poll() is None, self.tail()
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"receiver not ready in {timeout} s:\n{self.tail()}")
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook, no flush, in-flight requests cut off."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: this process group only
        assert self.proc.wait(timeout=30) == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])


@pytest.fixture
def receiver_process(
    tmp_path: Path, database_url: str, fresh_schema: str
) -> Iterator[tuple[ReceiverProcess, list[SenderSource]]]:
    sources = _sources()
    env = dict(os.environ)
    env.update(
        INGEST_DATABASE_URL=database_url,
        INGEST_DB_SCHEMA=fresh_schema,
        INGEST_SOURCES_DIR=str(write_sources(sources, tmp_path / "sources")),
        INGEST_HOME=str(tmp_path / "home"),
    )
    for source in sources:
        env.update(source.environ())
    receiver = ReceiverProcess(free_port(), env, tmp_path / "receiver.log")
    try:
        yield receiver, sources
    finally:
        receiver.stop()


def test_sigkill_twice_during_load_loses_no_acknowledged_event(
    database_url: str,
    fresh_schema: str,
    receiver_process: tuple[ReceiverProcess, list[SenderSource]],
) -> None:
    receiver, sources = receiver_process
    deliveries = _with_duplicates(make_deliveries(sources, 7000), 3000, seed=2)
    distinct = {d.key for d in deliveries}
    load = Load(receiver.url, deliveries, senders=SENDERS)
    durable_at_kill: list[int] = []

    async def scenario() -> None:
        receiver.start()
        await receiver.ready()
        task = asyncio.create_task(load.run())
        for share in (0.25, 0.6):
            await _wait_until(_finished(load, share), f"{share:.0%} of the load", load)
            receiver.kill()
            # Nothing can write now: every acknowledgement so far must already be durable.
            acked = set(load.acked)
            stored = await asyncio.to_thread(_stored, database_url, fresh_schema)
            missing = acked - set(stored)
            assert not missing, f"acknowledged but not stored: {sorted(missing)[:5]}"
            durable_at_kill.append(len(acked))
            receiver.start()
        await asyncio.wait_for(task, timeout=240)

    asyncio.run(scenario())

    assert receiver.starts == 3
    assert len(durable_at_kill) == 2 and 0 < durable_at_kill[0] < durable_at_kill[1]
    # The kills cut requests off: senders saw connection errors and delivered those again.
    assert load.transport_errors() > 0, load.summary()
    # Every sender eventually got its 2xx; the database never failed, so every answer was a 200.
    assert not load.unacked(), load.summary()
    assert set(load.statuses()) == {200}, load.summary()
    assert load.acked == distinct
    # Each event landed once: one row per distinct id sent, no key twice, one outbox row each.
    stored = _stored(database_url, fresh_schema)
    assert set(stored) == distinct
    assert set(stored.values()) == {1}
    assert _scalar(database_url, fresh_schema, "SELECT count(*) FROM outbox") == len(distinct)
    # At most one "accepted" per event: a retry of a delivery whose answer the kill cut off is
    # told "duplicate" (its first attempt had been committed) or stores it now.
    assert load.answers()["accepted"] <= len(distinct)


# -- 3. PostgreSQL stopped during the load ---------------------------------------------------


class PrivatePostgres:
    """An embedded PostgreSQL of this test's own, on a free TCP port, started and stopped at will.

    Started with pg_ctl the way ``ingest stack up`` starts its embedded server (as the system user
    ``embedded_postgres`` when running as root); everything lives under ``root``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data, self.run = root / "data", root / "run"
        self.run.mkdir(parents=True, exist_ok=True)
        self.user = _pg_system_user(self.data, self.run)
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.bin = _pg_bin_dir()
        _run_pg(
            [str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres"],
            self.user,
        )

    def start(self) -> None:
        options = f"-p {self.port} -h 127.0.0.1 -k {self.run}"
        log = self.run / "postgres.log"
        self._pg_ctl("-l", str(log), "-w", "-t", "60", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def _pg_ctl(self, *args: str) -> None:
        _run_pg([str(self.bin / "pg_ctl"), "-D", str(self.data), *args], self.user)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    # Not under tmp_path: another pytest session starting meanwhile resets the permissions of
    # pytest's shared base directory, and the server's system user could no longer reach its data.
    root = Path(tempfile.mkdtemp(prefix="ingest-test-pg-"))
    try:
        server = PrivatePostgres(root)
        server.start()
        try:
            yield server
        finally:
            if server.running():
                server.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_postgres_outage_answers_503_and_acknowledges_only_stored_events(
    private_postgres: PrivatePostgres,
) -> None:
    pg = private_postgres
    schema = "t_outage"  # the server is this test's alone
    migrate(pg.url, schema=schema)
    sources = _sources()
    app = create_app(
        _settings(database_url=pg.url, db_schema=schema),
        sources={s.name: s.receiver_source() for s in sources},
        # A request waits at most this long for a connection: shorter than the outage, so the
        # read path (confirming a "maybe seen") also answers 503 rather than waiting it out.
        config=ReceiverConfig(committer_options={"connect_timeout": 1.0}),
    )
    # Distinct events only: each id is sent by one sender, which stops at its first 2xx, so a row
    # for an acknowledged id can only come from that delivery's own attempts.
    deliveries = make_deliveries(sources, 4000)
    by_key = {d.key: d for d in deliveries}
    outage: dict[str, Any] = {}

    async def scenario(url: str) -> tuple[Load, Load]:
        load = Load(url, deliveries, senders=SENDERS)
        task = asyncio.create_task(load.run())
        await _wait_until(_finished(load, 0.25), "a quarter of the load", load)
        stopped = time.monotonic()
        await asyncio.to_thread(pg.stop, "fast")
        # Re-deliveries of events acknowledged before the stop: the bloom filter says "maybe
        # seen" and the confirmation needs PostgreSQL too.
        acked_before = sorted(load.acked)
        again = Load(url, [by_key[k] for k in acked_before[:100]], senders=10)
        redelivered = asyncio.create_task(again.run())
        await _wait_until(lambda: load.answered[503] > 0, "a 503 during the outage", load)
        async with httpx.AsyncClient(base_url=url) as client:
            outage["readyz"] = (await client.get("/readyz")).status_code
        # Keep it down for a few seconds: senders come back after Retry-After and meet it again.
        await asyncio.sleep(max(0.0, 3.0 - (time.monotonic() - stopped)))
        outage["restarting"] = time.monotonic()
        outage["seconds"] = outage["restarting"] - stopped
        await asyncio.to_thread(pg.start)
        await asyncio.wait_for(asyncio.gather(task, redelivered), timeout=180)
        outage["acked_before"] = len(acked_before)
        return load, again

    with serve_in_thread(app) as url:
        load, again = asyncio.run(scenario(url))

    statuses = load.statuses()
    assert outage["seconds"] >= 3.0
    assert outage["readyz"] == 503
    assert 100 <= outage["acked_before"] < len(deliveries)
    # During the outage the receiver said 503 with Retry-After, nothing else.
    assert statuses[503] > 0 and set(statuses) == {200, 503}, load.summary()
    retry_after = [value for o in load.outcomes + again.outcomes for value in o.retry_after]
    assert len(retry_after) == statuses[503] + again.statuses()[503]
    assert all(value is not None and value.isdigit() and int(value) >= 1 for value in retry_after)
    # No 2xx without its row, and after the retries every event is stored exactly once.
    assert not load.unacked(), load.summary()
    stored = _stored(pg.url, schema)
    assert load.acked <= set(stored)
    assert set(stored) == set(by_key)
    assert set(stored.values()) == {1}
    # A COMMIT that succeeded just as the server went away reads to the receiver as a failure
    # (503); the sender's retry is then, correctly, answered "duplicate".
    answers = load.answers()
    assert set(answers) <= {"accepted", "duplicate"}
    assert sum(answers.values()) == len(deliveries)
    # The re-deliveries, sent only once PostgreSQL was down, got 503 until it was back, then
    # 200 "duplicate": a duplicate is never confirmed without PostgreSQL, nor stored twice.
    assert again.statuses()[503] > 0 and set(again.statuses()) == {200, 503}, again.summary()
    assert not again.unacked()
    assert all(
        o.answered_at is not None and o.answered_at > outage["restarting"] for o in again.outcomes
    )
    assert again.answers() == Counter({"duplicate": 100})


# -- an event no retry can store -------------------------------------------------------------


def test_event_id_too_long_to_index_is_bad_input_and_spares_its_batch(
    database_url: str, fresh_schema: str
) -> None:
    """An authentic event whose id is longer than PostgreSQL can index (a B-tree entry holds at
    most 2704 bytes) can never be stored: it is bad input (400, kept as a dead letter), not an
    outage (503, retried by the sender for days), and the events committed in the same group
    commit as it must not fail with it."""
    source = SenderSource.new("stripe")
    app = create_app(
        _settings(db_schema=fresh_schema), sources={source.name: source.receiver_source()}
    )
    # 6,404 bytes of random hex: PostgreSQL compresses index entries, and this does not compress.
    long_id = "evt_" + random.Random(54000).randbytes(3200).hex()
    poison = Delivery(source, long_id, source.body(long_id, 0))
    others = make_deliveries([source], 1000, start=1)
    # In the middle of a load, so that it shares a batch with other events.
    deliveries = [*others[:500], poison, *others[500:]]
    with serve_in_thread(app) as url:
        load = asyncio.run(
            Load(url, deliveries, senders=SENDERS, policy=RetryPolicy(retry=False)).run()
        )

    answers = {o.delivery.event_id: o.statuses for o in load.outcomes}
    assert answers.pop(long_id) == [400]
    assert all(statuses == [200] for statuses in answers.values()), load.summary()
    assert set(_stored(database_url, fresh_schema)) == {d.key for d in others}
    assert (
        _scalar(
            database_url,
            fresh_schema,
            f"SELECT count(*) FROM dead_letters WHERE source = '{source.name}'",
        )
        == 1
    )
