"""Control routes under ``/_admin``: configure a run, reset it, read its counters and log.

These are never faulted, rate-limited or counted (see ``middleware.EXEMPT_PREFIXES``).

* ``GET  /_admin/config`` — the current :class:`MockConfig` as JSON.
* ``PUT  /_admin/config`` — replace it (body: a ``MockConfig``; ``{}`` = defaults) and start a new
  run: counters, log, fault draws and rate-limit buckets start from zero.
* ``POST /_admin/reset`` — start a new run with the same config.
* ``GET  /_admin/stats`` — ``{"clients": {id: counters}, "total": counters}`` where counters are
  ``{"requests", "by_status": {"200": n}, "by_fault": {"503": n}, "rate_limited"}``.
* ``GET  /_admin/requests?client=ID`` — ``{"requests": [entry, ...], "evicted": n}`` in arrival
  order; an entry is ``{"seq", "client", "t_monotonic", "t_wall", "method", "path", "status",
  "fault", "rate_limited", "idempotency_key"}``. Without ``client``, every client's requests.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ingest.mockapi.config import MockConfig
from ingest.mockapi.deps import StateDep

__all__ = ["router"]

router = APIRouter(prefix="/_admin", tags=["admin"])


@router.get("/config")
async def get_config(state: StateDep) -> dict[str, Any]:
    """The configuration of the current run."""
    return state.config.model_dump(mode="json")


@router.put("/config")
async def put_config(state: StateDep, config: MockConfig) -> dict[str, Any]:
    """Replace the configuration and start a fresh run."""
    state.configure(config)
    return state.config.model_dump(mode="json")


@router.post("/reset")
async def reset(state: StateDep) -> dict[str, str]:
    """Start a fresh run with the same configuration."""
    state.reset()
    return {"status": "reset"}


@router.get("/stats")
async def stats(state: StateDep) -> dict[str, Any]:
    """Per-client counters of the current run."""
    return state.stats()


@router.get("/requests")
async def requests(state: StateDep, client: str | None = None) -> dict[str, Any]:
    """The request log of the current run, oldest first."""
    return state.requests(client)
