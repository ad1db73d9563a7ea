"""Per-run state: the dataset, fault planner, rate limiter, per-client counters and request log.

Everything here is touched only from the event loop (all routes and the middleware are ``async``),
and never across an ``await`` between read and write, so no lock is needed.

A log entry is appended when the request *arrives* (so the log is in arrival order, which is what
retry-spacing measurements need) and its status is filled in when the answer starts. Entries and
counters of a run that was reset keep pointing at that old run's objects, so a slow request that
finishes after a reset cannot leak into the new run's numbers.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any

from ingest.mockapi.config import FaultKind, MockConfig
from ingest.mockapi.faults import FaultPlanner
from ingest.mockapi.pagination import Dataset
from ingest.mockapi.ratelimit import RateLimiter

__all__ = ["ClientStats", "MockState", "RequestLogEntry", "RequestRecord"]


@dataclass(slots=True)
class ClientStats:
    """What one client sent and got."""

    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_fault: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0

    def as_json(self) -> dict[str, Any]:
        """JSON form; status codes become string keys."""
        return {
            "requests": self.requests,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "by_fault": dict(sorted(self.by_fault.items())),
            "rate_limited": self.rate_limited,
        }


@dataclass(slots=True)
class RequestLogEntry:
    """One request as the server saw it."""

    seq: int
    client: str
    t_monotonic: float  # server's time.monotonic() at arrival, for measuring spacing
    t_wall: float  # UTC epoch seconds at arrival
    method: str
    path: str  # path and query string, as sent
    idempotency_key: str | None
    status: int | None = None  # None until answered, and for `drop` (no complete answer)
    fault: str | None = None
    rate_limited: bool = False


@dataclass(slots=True)
class _Run:
    config: MockConfig
    dataset: Dataset
    planner: FaultPlanner
    limiter: RateLimiter | None
    log: deque[RequestLogEntry]
    clients: dict[str, ClientStats] = field(default_factory=dict)
    seq: int = 0


@dataclass(slots=True)
class RequestRecord:
    """Handle the middleware uses to finish the accounting of one request."""

    entry: RequestLogEntry
    stats: ClientStats

    def set_fault(self, kind: FaultKind) -> None:
        """Record the injected fault."""
        self.entry.fault = kind.value
        self.stats.by_fault[kind.value] += 1

    def set_rate_limited(self) -> None:
        """Record a rejection by the server-side rate limit (not a fault)."""
        self.entry.rate_limited = True
        self.stats.rate_limited += 1

    def set_status(self, status: int) -> None:
        """Record the status the client was answered with."""
        self.entry.status = status
        self.stats.by_status[status] += 1


class MockState:
    """The mutable state of the mock API; :meth:`configure` starts a new run."""

    def __init__(self, config: MockConfig) -> None:
        self._run = self._new_run(config)

    @staticmethod
    def _new_run(config: MockConfig, dataset: Dataset | None = None) -> _Run:
        return _Run(
            config=config,
            dataset=dataset or Dataset.generate(config.records, seed=config.seed),
            planner=FaultPlanner(config.faults, config.fault_seed),
            limiter=RateLimiter(config.rate_limit) if config.rate_limit is not None else None,
            log=deque(maxlen=config.max_log_entries),
        )

    @property
    def config(self) -> MockConfig:
        """The current run's configuration."""
        return self._run.config

    @property
    def dataset(self) -> Dataset:
        """The records served in this run."""
        return self._run.dataset

    @property
    def planner(self) -> FaultPlanner:
        """Fault decisions of this run."""
        return self._run.planner

    @property
    def limiter(self) -> RateLimiter | None:
        """The server-side rate limit, if on."""
        return self._run.limiter

    def configure(self, config: MockConfig) -> None:
        """Replace the configuration and start a fresh run."""
        old = self._run
        # Regenerating 1M records takes seconds; reuse them when the dataset did not change.
        same_data = (old.config.records, old.config.seed) == (config.records, config.seed)
        self._run = self._new_run(config, old.dataset if same_data else None)

    def reset(self) -> None:
        """Start a fresh run with the same configuration."""
        self.configure(self._run.config)

    def begin(
        self, *, client: str, method: str, path: str, idempotency_key: str | None
    ) -> RequestRecord:
        """Count an arriving request and append it to the log."""
        run = self._run
        run.seq += 1
        stats = run.clients.setdefault(client, ClientStats())
        stats.requests += 1
        entry = RequestLogEntry(
            seq=run.seq,
            client=client,
            t_monotonic=time.monotonic(),
            t_wall=time.time(),
            method=method,
            path=path,
            idempotency_key=idempotency_key,
        )
        run.log.append(entry)
        return RequestRecord(entry, stats)

    def stats(self) -> dict[str, Any]:
        """Per-client counters and their sum."""
        total = ClientStats()
        for s in self._run.clients.values():
            total.requests += s.requests
            total.by_status.update(s.by_status)
            total.by_fault.update(s.by_fault)
            total.rate_limited += s.rate_limited
        return {
            "clients": {c: s.as_json() for c, s in sorted(self._run.clients.items())},
            "total": total.as_json(),
        }

    def requests(self, client: str | None) -> dict[str, Any]:
        """The request log in arrival order, of one client or of all."""
        run = self._run
        entries = [asdict(e) for e in run.log if client is None or e.client == client]
        return {"requests": entries, "evicted": run.seq - len(run.log)}
