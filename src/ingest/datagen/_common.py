"""Helpers shared by the data-set writers: seeded RNG streams and byte-stable file writing.

Every writer draws from its own named RNG stream, so adding a data set (or rows to one) never shifts
the random numbers of another, and every byte that lands on disk is a pure function of the inputs:
gzip headers carry no timestamp or file name, JSON keeps insertion order, line endings are ``\\n``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import string
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, cast

__all__ = [
    "CHUNK_ROWS",
    "ProgressFn",
    "alnum",
    "dumps_compact",
    "dumps_pretty",
    "file_md5",
    "iso_ms",
    "iso_s",
    "open_sink",
    "rng_for",
    "select_exact",
    "write_json",
]

ProgressFn = Callable[[int], None]
"""Called with the number of rows just written (a delta, ready for ``Progress.advance``)."""

# Rows held in memory at once by any writer; bounds memory whatever ``rows`` is. Writers read it
# at call time (``_common.CHUNK_ROWS``), so a test can shrink it to show that memory stays flat.
CHUNK_ROWS = 10_000

_ALNUM = string.ascii_letters + string.digits


def rng_for(seed: int, *parts: object) -> random.Random:
    """An independent RNG stream named by ``seed`` and ``parts`` (string seeding is stable)."""
    return random.Random(":".join(["datagen", str(seed), *map(str, parts)]))


def alnum(rng: random.Random, n: int) -> str:
    """``n`` random ASCII letters and digits: the tail of Stripe-like ids."""
    return "".join(rng.choices(_ALNUM, k=n))


def iso_s(epoch: int) -> str:
    """``2026-01-01T00:00:00Z`` for a Unix time in seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def iso_ms(epoch_ms: int) -> str:
    """``2026-01-01T00:00:00.000Z`` for a Unix time in milliseconds."""
    seconds, millis = divmod(epoch_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def dumps_compact(obj: Any) -> str:
    """One-line JSON (NDJSON lines, JSON-array elements). Non-ASCII stays readable UTF-8."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def dumps_pretty(obj: Any) -> str:
    """Indented JSON, the way APIs and humans print it."""
    return json.dumps(obj, ensure_ascii=False, indent=2)


def write_json(path: Path, obj: Any) -> None:
    """Pretty JSON plus a final newline, so committed files diff cleanly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((dumps_pretty(obj) + "\n").encode("utf-8"))


@contextmanager
def open_sink(path: Path, *, gzipped: bool) -> Iterator[BinaryIO]:
    """A binary writer for ``path``, gzip-compressed when asked.

    ``mtime=0`` and an empty file name keep the gzip header free of anything that changes between
    runs or directories, so the same data gives the same bytes (and the same manifest md5).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as raw:
        if gzipped:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as zipped:
                # GzipFile is a binary file in all but typeshed's name; TextIOWrapper wraps it.
                yield cast(BinaryIO, zipped)
        else:
            yield raw


def file_md5(path: Path) -> str:
    """Hex MD5 of a file, read in blocks (it is a checksum here, not security)."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()


def select_exact(rng: random.Random, k: int, n: int) -> Iterator[bool]:
    """Stream ``n`` decisions of which exactly ``min(k, n)`` are True (Knuth's Algorithm S).

    Lets a writer mark, say, exactly 10% of rows as bad while generating them one chunk at a time,
    without first materialising the ``n`` positions.
    """
    remaining = min(k, n)
    for seen in range(n):
        pick = remaining > 0 and rng.random() * (n - seen) < remaining
        if pick:
            remaining -= 1
        yield pick
