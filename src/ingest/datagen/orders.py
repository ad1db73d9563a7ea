"""Deterministic "orders" records for the S3 drops, generated in column chunks.

Order ``n`` (1-based, numbered across all drops) is created ten seconds after order ``n - 1`` plus
jitter, so a drop's orders fall before the drop itself. Chunks are columnar because Parquet wants
columns and CSV/JSON writers can walk them row by row without building a dict per row first.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ingest.datagen import _common
from ingest.datagen._common import iso_s
from ingest.mockapi.fixtures import BASE_TIME

__all__ = [
    "CSV_HEADER",
    "ORDER_SCHEMA",
    "OrderChunk",
    "iter_orders",
    "order_created_epoch",
]

BASE_EPOCH = int(BASE_TIME.timestamp())
SECONDS_PER_ORDER = 10

CSV_HEADER = [
    "order_id",
    "customer_id",
    "amount",
    "currency",
    "status",
    "items",
    "note",
    "created_at",
]

# The flat columns as Parquet stores them. JSON files add a nested ``shipping`` object on top.
ORDER_SCHEMA = pa.schema(
    [
        ("order_id", pa.string()),
        ("customer_id", pa.int64()),
        ("amount", pa.float64()),
        ("currency", pa.string()),
        ("status", pa.string()),
        ("items", pa.int64()),
        ("note", pa.string()),
        ("created_at", pa.timestamp("s", tz="UTC")),
    ]
)

_STATUS = ["paid", "paid", "paid", "shipped", "delivered", "pending", "refunded", "canceled"]
_CURRENCY = ["usd", "usd", "eur", "gbp"]
_SHIPPING = [
    ("DE", "Berlin", "10115"),
    ("FR", "Paris", "75001"),
    ("GB", "London", "EC1A 1BB"),
    ("US", "New York", "10001"),
    ("NL", "Amsterdam", "1012 JS"),
    ("JP", "Tokyo", "100-0001"),
]
# Free text is where CSV goes wrong: commas, quotes, semicolons, newlines and non-ASCII.
TRICKY_NOTES = [
    "Leave at the door, ring twice",
    "Gift wrap\nNo invoice in the box",
    'Customer wrote "URGENT", call before 9',
    "Deliver after 5pm; side entrance",
    "Zweite Etage, links — Hinterhaus",
    "naïve café order\nsecond line, with a comma",
]


def order_created_epoch(n: int, jitter: int) -> int:
    """Creation time of order ``n`` in Unix seconds."""
    return BASE_EPOCH + n * SECONDS_PER_ORDER + jitter


@dataclass
class OrderChunk:
    """Up to ``CHUNK_ROWS`` consecutive orders, column by column."""

    order_id: list[str] = field(default_factory=list)
    customer_id: list[int] = field(default_factory=list)
    amount_cents: list[int] = field(default_factory=list)
    currency: list[str] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    items: list[int] = field(default_factory=list)
    note: list[str | None] = field(default_factory=list)
    created: list[int] = field(default_factory=list)
    shipping: list[tuple[str, str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.order_id)

    def csv_row(self, i: int, *, decimal_point: str = ".") -> list[str]:
        """Row ``i`` as CSV fields; amounts are exact decimal strings, not float reprs."""
        cents = self.amount_cents[i]
        return [
            self.order_id[i],
            str(self.customer_id[i]),
            f"{cents // 100}{decimal_point}{cents % 100:02d}",
            self.currency[i],
            self.status[i],
            str(self.items[i]),
            self.note[i] or "",
            iso_s(self.created[i]),
        ]

    def json_object(self, i: int) -> dict[str, Any]:
        """Row ``i`` as a JSON object, with the nested ``shipping`` address."""
        country, city, postcode = self.shipping[i]
        return {
            "order_id": self.order_id[i],
            "customer_id": self.customer_id[i],
            "amount": self.amount_cents[i] / 100,
            "currency": self.currency[i],
            "status": self.status[i],
            "items": self.items[i],
            "note": self.note[i],
            "created_at": iso_s(self.created[i]),
            "shipping": {"country": country, "city": city, "postcode": postcode},
        }

    def arrow_table(self) -> pa.Table:
        """The chunk as an Arrow table with ``ORDER_SCHEMA``."""
        return pa.table(
            [
                pa.array(self.order_id, pa.string()),
                pa.array(self.customer_id, pa.int64()),
                pa.array([c / 100 for c in self.amount_cents], pa.float64()),
                pa.array(self.currency, pa.string()),
                pa.array(self.status, pa.string()),
                pa.array(self.items, pa.int64()),
                pa.array(self.note, pa.string()),
                pa.array(self.created, pa.timestamp("s", tz="UTC")),
            ],
            schema=ORDER_SCHEMA,
        )


def iter_orders(
    rng: random.Random,
    *,
    first: int,
    count: int,
    customers: int,
    tricky_first: bool = False,
    chunk_rows: int | None = None,
) -> Iterator[OrderChunk]:
    """Orders ``first .. first + count - 1`` in chunks of at most ``chunk_rows`` (``CHUNK_ROWS``).

    ``customers`` bounds ``customer_id`` so every order points at a REST customer.
    ``tricky_first`` puts a comma-and-newline note in the first rows, so a small file is still
    guaranteed to exercise CSV quoting.
    """
    limit = chunk_rows or _common.CHUNK_ROWS
    chunk = OrderChunk()
    for k in range(count):
        n = first + k
        chunk.order_id.append(f"ord_{n:09d}")
        chunk.customer_id.append(rng.randint(1, max(customers, 1)))
        chunk.amount_cents.append(rng.randrange(100, 250_000))
        chunk.currency.append(rng.choice(_CURRENCY))
        chunk.status.append(rng.choice(_STATUS))
        chunk.items.append(rng.randint(1, 9))
        if tricky_first and k < 2:
            chunk.note.append(TRICKY_NOTES[1] if k == 0 else TRICKY_NOTES[5])
        elif rng.random() < 0.2:
            chunk.note.append(rng.choice(TRICKY_NOTES))
        else:
            chunk.note.append(None)
        chunk.created.append(order_created_epoch(n, rng.randrange(SECONDS_PER_ORDER)))
        chunk.shipping.append(rng.choice(_SHIPPING))
        if len(chunk) == limit:
            yield chunk
            chunk = OrderChunk()
    if len(chunk):
        yield chunk
