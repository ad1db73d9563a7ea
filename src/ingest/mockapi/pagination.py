"""The fixture dataset and the slicing behind every pagination style, free of HTTP.

All styles serve the same records, ordered by id (which is also ``updated_at`` order), and all
take ``updated_since``: only records whose ``updated_at`` is **strictly greater** than it are
served, so a client that passes the last ``updated_at`` it stored gets no record twice.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ingest.mockapi.errors import BadRequest
from ingest.mockapi.fixtures import rest_records

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "Dataset",
    "Page",
    "decode_cursor",
    "encode_cursor",
    "parse_timestamp",
    "total_pages",
]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

_CURSOR_PREFIX = "v1:"


def parse_timestamp(value: str) -> datetime:
    """An ISO 8601 timestamp; ``Z`` and offsets are honoured, a naive time is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"updated_since is not an ISO 8601 timestamp: {value!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def encode_cursor(last_id: int) -> str:
    """An opaque cursor meaning "after record ``last_id``"."""
    # Versioned so the format can change without old cursors being misread.
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id a cursor from :func:`encode_cursor` points after; :class:`BadRequest` otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest("invalid cursor") from None
    number = raw.removeprefix(_CURSOR_PREFIX)
    if number == raw or not number.isdigit():
        raise BadRequest("invalid cursor")
    return int(number)


@dataclass(frozen=True, slots=True)
class Page:
    """One page: its records and whether more follow."""

    records: list[dict[str, Any]]
    total: int
    has_more: bool

    @property
    def last_id(self) -> int | None:
        """Id of the last record on the page, for keyset cursors."""
        return int(self.records[-1]["id"]) if self.records else None


class Dataset:
    """The records of one run, with indexes for filtering by ``updated_at`` and seeking by id."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self._ids = [int(r["id"]) for r in records]
        self._updated = [parse_timestamp(str(r["updated_at"])) for r in records]
        self._by_id = {rid: i for i, rid in enumerate(self._ids)}

    @classmethod
    def generate(cls, n: int, *, seed: int) -> Dataset:
        """The fixture records ``1..n`` for ``seed``."""
        return cls(rest_records(n, seed=seed))

    def __len__(self) -> int:
        return len(self.records)

    def get(self, record_id: int) -> dict[str, Any] | None:
        """One record by id."""
        index = self._by_id.get(record_id)
        return None if index is None else self.records[index]

    def _start(self, updated_since: datetime | None) -> int:
        # updated_at increases with id, so the filtered records are a suffix of the list.
        return 0 if updated_since is None else bisect.bisect_right(self._updated, updated_since)

    def count(self, updated_since: datetime | None) -> int:
        """How many records pass the filter."""
        return len(self.records) - self._start(updated_since)

    def slice(self, *, offset: int, limit: int, updated_since: datetime | None) -> Page:
        """Records ``offset .. offset+limit`` of the filtered sequence."""
        start = self._start(updated_since)
        begin = start + offset
        end = begin + limit
        return Page(self.records[begin:end], len(self.records) - start, end < len(self.records))

    def after(self, *, after_id: int | None, limit: int, updated_since: datetime | None) -> Page:
        """Up to ``limit`` filtered records with id greater than ``after_id`` (keyset paging)."""
        start = self._start(updated_since)
        begin = start if after_id is None else max(start, bisect.bisect_right(self._ids, after_id))
        end = begin + limit
        return Page(self.records[begin:end], len(self.records) - start, end < len(self.records))


def total_pages(total: int, per_page: int) -> int:
    """Number of pages for ``total`` records; 0 for an empty result."""
    return math.ceil(total / per_page)
