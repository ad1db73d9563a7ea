"""Server-side rate limit: token buckets, one per client id or one for everybody.

Headers follow the GitHub convention (external-apis.md §5.2) on every limited-route answer:
``X-RateLimit-Limit`` is the bucket size, ``X-RateLimit-Remaining`` the whole tokens left after
this request, ``X-RateLimit-Reset`` the UTC epoch second by which the bucket is full again. A
rejected request gets 429 and ``Retry-After`` in delta-seconds: when the next token is there,
rounded up, at least 1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ingest.mockapi.config import RateLimitConfig

__all__ = ["Decision", "RateLimiter", "TokenBucket"]

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Decision:
    """Outcome of one rate-limit check."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: float  # seconds until the bucket is full again
    retry_after: int  # whole seconds until a request would be allowed; 0 when allowed

    def headers(self, *, wall_now: float) -> dict[str, str]:
        """The ``X-RateLimit-*`` (and, when rejected, ``Retry-After``) headers."""
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(wall_now + self.reset_after)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class TokenBucket:
    """``burst`` tokens, refilled continuously at ``rate`` per second; a request takes one."""

    def __init__(self, rate: float, burst: int, *, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def take(self) -> Decision:
        """Spend one token if there is one."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        allowed = self._tokens >= 1.0
        if allowed:
            self._tokens -= 1.0
            retry_after = 0
        else:
            # Never 0: a client told "retry after 0 s" would hammer the server in a tight loop.
            retry_after = max(1, math.ceil((1.0 - self._tokens) / self.rate))
        return Decision(
            allowed=allowed,
            limit=self.burst,
            remaining=math.floor(self._tokens),
            reset_after=(self.burst - self._tokens) / self.rate,
            retry_after=retry_after,
        )


class RateLimiter:
    """The buckets of one run, keyed by client id (or a single shared key)."""

    _GLOBAL = "*"

    def __init__(self, config: RateLimitConfig, *, clock: Clock = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, client: str) -> Decision:
        """Take a token from ``client``'s bucket."""
        key = client if self.config.scope == "client" else self._GLOBAL
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.config.rate, self.config.burst, clock=self._clock)
            self._buckets[key] = bucket
        return bucket.take()
