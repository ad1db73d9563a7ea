"""Deterministic REST fixtures: the same seed and count give the same records, byte for byte.

The mock API serves these, ``data/rest/`` holds a small committed sample of them, and tests compute
what should land from the same function, so "what the generator says" is never hard-coded.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["BASE_TIME", "rest_record", "rest_records"]

# Fixed epoch for fixtures: records are one minute apart (plus jitter) from here.
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)

_FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim"]
_LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson"]
_STATUS = ["active", "active", "active", "trialing", "past_due", "canceled"]
_CURRENCY = ["usd", "eur", "gbp"]
_TAGS = ["vip", "beta", "churn-risk", "partner", "internal"]


def rest_record(i: int, *, seed: int = 0) -> dict[str, Any]:
    """Record number ``i`` (1-based) of the fixture set for ``seed``."""
    rng = random.Random(f"rest:{seed}:{i}")
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    created = BASE_TIME + timedelta(minutes=i, seconds=rng.randrange(60))
    # Updated strictly after creation and strictly increasing with i: the incremental cursor
    # (updated_at, id) then orders records the same way as their ids.
    updated = BASE_TIME + timedelta(minutes=i + 1, seconds=rng.randrange(60))
    return {
        "id": i,
        "name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower()}{i}@example.com",
        "status": rng.choice(_STATUS),
        "amount_cents": rng.randrange(0, 500_000),
        "currency": rng.choice(_CURRENCY),
        "tags": sorted(rng.sample(_TAGS, rng.randrange(0, 3))),
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "updated_at": updated.isoformat().replace("+00:00", "Z"),
    }


def rest_records(n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """The first ``n`` records for ``seed``, ordered by ``updated_at`` (and id)."""
    return [rest_record(i, seed=seed) for i in range(1, n + 1)]
