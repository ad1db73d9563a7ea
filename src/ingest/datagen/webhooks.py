"""Webhook deliveries, unsigned: what a receiver would be sent, in delivery order.

Two sources: ``stripe`` sends Stripe-shaped events (``evt_…`` ids inside the payload) and ``acme``
sends Standard-Webhooks-shaped ones (``{"type", "timestamp", "data"}``, the id travels separately
as the ``webhook-id`` header, here ``event_id``). Signing happens at send time, elsewhere.

Each line of ``webhooks/deliveries.ndjson`` is one delivery attempt. About a quarter are retries:
the same event id and byte-identical payload, delivered again between one hour and three days after
the first attempt. First attempts lag their event by up to five minutes, so events also arrive out
of creation order. The file is written in delivery order with a heap that only ever holds the
deliveries still pending inside the retry window, which keeps memory bounded for any size.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from pathlib import Path
from typing import Any

from ingest.datagen._common import (
    ProgressFn,
    alnum,
    dumps_compact,
    iso_ms,
    open_sink,
    rng_for,
    select_exact,
    write_json,
)
from ingest.datagen.saas import stripe_customer, stripe_customer_id
from ingest.mockapi.fixtures import BASE_TIME

__all__ = ["SOURCES", "n_deliveries", "n_events", "write_webhooks"]

SOURCES = ("stripe", "acme")
STRIPE_API_VERSION = "2024-06-20"
RETRY_SHARE = 0.3  # events delivered at least twice ...
SECOND_RETRY_SHARE = 0.2  # ... and of those, the share delivered three times
RETRY_WINDOW_MS = 3 * 24 * 3600 * 1000
MEAN_GAP_S = 60.0
MAX_FIRST_LAG_MS = 300_000
_FLUSH_LINES = 1000

_STRIPE_TYPES = [
    "customer.created",
    "customer.updated",
    "invoice.paid",
    "invoice.payment_failed",
    "charge.succeeded",
    "charge.refunded",
]
_STRIPE_WEIGHTS = [2, 2, 3, 1, 3, 1]
_ACME_TYPES = ["order.created", "order.paid", "order.shipped", "order.refunded"]
_ACME_WEIGHTS = [3, 3, 2, 1]
_CURRENCY = ["usd", "usd", "eur", "gbp"]
_BASE_S = int(BASE_TIME.timestamp())


def n_events(rows: int) -> int:
    """Distinct events for a data set of ``rows`` (a fifth: webhooks are the chatty small source)."""
    return max(rows // 5, 10)


def _retry_counts(events: int) -> tuple[int, int]:
    once = round(events * RETRY_SHARE)
    return once, round(once * SECOND_RETRY_SHARE)


def n_deliveries(rows: int) -> int:
    """Lines in ``deliveries.ndjson``: every event once, plus the exact number of retries."""
    events = n_events(rows)
    once, twice = _retry_counts(events)
    return events + once + twice


def _stripe_event(rng: random.Random, t_ms: int, customers: int, seed: int) -> dict[str, Any]:
    kind = rng.choices(_STRIPE_TYPES, _STRIPE_WEIGHTS)[0]
    created = t_ms // 1000
    # Only customers that exist by now: REST customer i is created i minutes after BASE_TIME.
    cid = rng.randint(1, max(1, min(customers, (created - _BASE_S) // 60)))
    data: dict[str, Any]
    if kind.startswith("customer."):
        customer = stripe_customer(cid, seed=seed)
        data = {"object": customer}
        if kind == "customer.updated":
            data["previous_attributes"] = {"delinquent": not customer["delinquent"]}
    elif kind.startswith("invoice."):
        cents = rng.randrange(500, 200_000)
        paid = kind == "invoice.paid"
        data = {
            "object": {
                "id": "in_" + alnum(rng, 24),
                "object": "invoice",
                "amount_due": cents,
                "amount_paid": cents if paid else 0,
                "amount_remaining": 0 if paid else cents,
                "attempt_count": 1 if paid else rng.randint(1, 4),
                "created": created - rng.randrange(3600),
                "currency": rng.choice(_CURRENCY),
                "customer": stripe_customer_id(cid, seed=seed),
                "status": "paid" if paid else "open",
            }
        }
    else:
        cents = rng.randrange(500, 200_000)
        refunded = kind == "charge.refunded"
        data = {
            "object": {
                "id": "ch_" + alnum(rng, 24),
                "object": "charge",
                "amount": cents,
                "amount_refunded": cents if refunded else 0,
                "created": created - rng.randrange(60),
                "currency": rng.choice(_CURRENCY),
                "customer": stripe_customer_id(cid, seed=seed),
                "paid": True,
                "refunded": refunded,
                "status": "succeeded",
            }
        }
    return {
        "id": "evt_" + alnum(rng, 24),
        "object": "event",
        "api_version": STRIPE_API_VERSION,
        "created": created,
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": "req_" + alnum(rng, 14), "idempotency_key": None},
        "type": kind,
    }


def _acme_event(rng: random.Random, t_ms: int, customers: int, orders: int) -> dict[str, Any]:
    kind = rng.choices(_ACME_TYPES, _ACME_WEIGHTS)[0]
    return {
        "type": kind,
        "timestamp": iso_ms(t_ms),
        "data": {
            "order_id": f"ord_{rng.randint(1, orders):09d}",
            "customer_id": rng.randint(1, customers),
            "amount": rng.randrange(100, 250_000) / 100,
            "currency": rng.choice(_CURRENCY),
            "status": kind.split(".", 1)[1],
        },
    }


def write_webhooks(
    hooks_dir: Path, *, rows: int, seed: int, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Write ``deliveries.ndjson`` and return (and write) ``webhooks/expected.json``."""
    events = n_events(rows)
    once, twice = _retry_counts(events)
    rng = rng_for(seed, "webhooks")
    # Separate streams decide the retries, so the exact counts cannot disturb the event contents.
    retried = select_exact(rng_for(seed, "webhooks-retry"), once, events)
    retried_again = select_exact(rng_for(seed, "webhooks-retry-2"), twice, once)

    distinct: Counter[str] = Counter()
    duplicates: Counter[str] = Counter()
    types: dict[str, Counter[str]] = {source: Counter() for source in SOURCES}
    pending: list[tuple[int, int, str]] = []  # (delivery ms, sequence, line)
    seq = 0
    written = 0
    first_at: int | None = None
    last_at = 0
    t_ms = int(BASE_TIME.timestamp()) * 1000

    with open_sink(hooks_dir / "deliveries.ndjson", gzipped=False) as sink:
        batch: list[str] = []

        def emit_until(limit_ms: float) -> None:
            nonlocal written, first_at, last_at
            while pending and pending[0][0] <= limit_ms:
                at, _, line = heapq.heappop(pending)
                first_at = at if first_at is None else first_at
                last_at = at
                batch.append(line)
            if len(batch) >= _FLUSH_LINES or (limit_ms == float("inf") and batch):
                sink.write("".join(batch).encode("utf-8"))
                written += len(batch)
                if progress is not None:
                    progress(len(batch))
                batch.clear()

        for _ in range(events):
            t_ms += max(1000, round(rng.expovariate(1 / MEAN_GAP_S) * 1000))
            # Every later delivery is after a later event plus a lag of at least a second, so
            # whatever is due by now is final and can go out in order.
            emit_until(t_ms)
            source = "stripe" if rng.random() < 0.6 else "acme"
            if source == "stripe":
                payload = _stripe_event(rng, t_ms, rows, seed)
                event_id = str(payload["id"])
            else:
                payload = _acme_event(rng, t_ms, rows, rows)
                event_id = "msg_" + alnum(rng, 27)
            distinct[source] += 1
            types[source][str(payload["type"])] += 1

            first = t_ms + rng.randint(1000, MAX_FIRST_LAG_MS)
            attempts = [first]
            if next(retried):
                attempts.append(first + rng.randint(3600_000, RETRY_WINDOW_MS - 2))
                if next(retried_again):
                    attempts.append(rng.randint(attempts[1] + 1, first + RETRY_WINDOW_MS - 1))
            duplicates[source] += len(attempts) - 1
            for at in attempts:
                line = dumps_compact(
                    {
                        "source": source,
                        "delivery_at": iso_ms(at),
                        "event_id": event_id,
                        "payload": payload,
                    }
                )
                heapq.heappush(pending, (at, seq, line + "\n"))
                seq += 1
        emit_until(float("inf"))

    expected = {
        "path": "webhooks/deliveries.ndjson",
        "deliveries": written,
        "distinct_events": {source: distinct[source] for source in SOURCES},
        "duplicates": sum(duplicates.values()),
        "duplicates_by_source": {source: duplicates[source] for source in SOURCES},
        "event_types": {source: dict(sorted(types[source].items())) for source in SOURCES},
        "retry_window_seconds": RETRY_WINDOW_MS // 1000,
        "first_delivery_at": iso_ms(first_at) if first_at is not None else None,
        "last_delivery_at": iso_ms(last_at) if first_at is not None else None,
    }
    write_json(hooks_dir / "expected.json", expected)
    return expected
