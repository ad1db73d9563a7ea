"""Deterministic fault decisions and the canned answers of the status-code faults.

A request's fate is a pure function of ``(seed, client id, method, path+query, n)`` where ``n``
counts earlier sightings of that same request in this run. So:

* concurrency cannot change which requests fault (no shared random stream is consumed), and
* a retried request gets a fresh draw (``n`` has moved on).

``max_consecutive_faults`` then caps a streak: after that many faults in a row for one request,
its next sighting is served normally, so a client that retries enough always gets through.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime

from ingest.mockapi.config import FaultConfig, FaultKind

__all__ = ["CannedFault", "FaultPlanner", "RequestKey", "draw", "http_date", "status_fault"]

RequestKey = tuple[str, str, str]  # (client id, method, path+query)

_SCALE = float(1 << 64)


def draw(seed: int, key: RequestKey, n: int) -> tuple[float, float]:
    """Two independent uniforms in ``[0, 1)`` for the ``n``-th sighting of ``key``."""
    # A cryptographic hash rather than random.Random: stable across Python versions and processes
    # (str hashing is salted per process), and cheap enough at mock-server request rates.
    text = "\x1f".join((str(seed), *key, str(n))).encode()
    digest = hashlib.blake2b(text, digest_size=16).digest()
    return (
        int.from_bytes(digest[:8], "big") / _SCALE,
        int.from_bytes(digest[8:], "big") / _SCALE,
    )


def _pick(weights: dict[FaultKind, float], u: float) -> FaultKind:
    # Enum order, not dict order, so {"a":1,"b":1} and {"b":1,"a":1} pick the same kinds.
    kinds = [k for k in FaultKind if weights.get(k, 0.0) > 0]
    total = sum(weights[k] for k in kinds)
    point = u * total
    for kind in kinds:
        point -= weights[kind]
        if point < 0:
            return kind
    return kinds[-1]  # float rounding at u close to 1


@dataclass
class FaultPlanner:
    """Per-run memory of how often each request was seen and how long its fault streak is."""

    config: FaultConfig
    seed: int
    _seen: dict[RequestKey, int] = field(default_factory=dict)
    _streak: dict[RequestKey, int] = field(default_factory=dict)

    def decide(self, key: RequestKey) -> FaultKind | None:
        """The fault for this sighting of ``key`` (None = serve normally), recording it."""
        n = self._seen.get(key, 0)
        self._seen[key] = n + 1
        if self.config.rate <= 0.0:
            return None
        streak = self._streak.get(key, 0)
        cap = self.config.max_consecutive_faults
        u_fault, u_kind = draw(self.seed, key, n)
        kind = None
        if (cap is None or streak < cap) and u_fault < self.config.rate:
            kind = _pick(self.config.weights, u_kind)
        self._streak[key] = streak + 1 if kind is not None else 0
        return kind


@dataclass(frozen=True, slots=True)
class CannedFault:
    """A complete error answer: status, extra headers, JSON body."""

    status: int
    headers: dict[str, str]
    message: str


def http_date(moment: float) -> str:
    """IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``) for a UTC epoch time."""
    return format_datetime(datetime.fromtimestamp(moment, UTC), usegmt=True)


def status_fault(kind: FaultKind, *, retry_after: int, wall_now: float) -> CannedFault | None:
    """The answer of a status-code fault; None for the kinds that alter a real answer."""
    match kind:
        case FaultKind.RATE_LIMITED:
            return CannedFault(429, {"Retry-After": str(retry_after)}, "injected: rate limited")
        case FaultKind.RATE_LIMITED_DATE:
            # HTTP-dates have whole seconds; round up so the wait is never shorter than promised.
            when = http_date(math.ceil(wall_now + retry_after))
            return CannedFault(429, {"Retry-After": when}, "injected: rate limited")
        case FaultKind.INTERNAL_ERROR:
            return CannedFault(500, {}, "injected: internal server error")
        case FaultKind.BAD_GATEWAY:
            return CannedFault(502, {}, "injected: bad gateway")
        case FaultKind.UNAVAILABLE:
            return CannedFault(503, {"Retry-After": str(retry_after)}, "injected: unavailable")
        case _:
            return None
