"""The REST set: ``rest/customers.json``, the mock API's records as one pretty JSON array."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ingest.datagen import _common
from ingest.datagen._common import ProgressFn, dumps_pretty, open_sink
from ingest.mockapi.fixtures import rest_record

__all__ = ["write_rest"]


def write_rest(
    rest_dir: Path, *, rows: int, seed: int, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Write ``customers.json``: the bytes of ``json.dumps(rest_records(rows), indent=2)`` + LF.

    Records come one at a time from ``rest_record`` (the function behind ``rest_records``), and
    each is indented one level deeper by hand, so a million rows never sit in one list.
    """
    with open_sink(rest_dir / "customers.json", gzipped=False) as sink:
        sink.write(b"[" if rows else b"[]\n")
        parts: list[str] = []
        for i in range(1, rows + 1):
            # JSON strings never contain a raw newline, so this indents whole lines only.
            item = dumps_pretty(rest_record(i, seed=seed)).replace("\n", "\n  ")
            parts.append(("\n  " if i == 1 else ",\n  ") + item)
            if len(parts) >= _common.CHUNK_ROWS or i == rows:
                sink.write("".join(parts).encode("utf-8"))
                if progress is not None:
                    progress(len(parts))
                parts.clear()
        if rows:
            sink.write(b"\n]\n")
    return {
        "path": "rest/customers.json",
        "records": rows,
        "first_id": 1 if rows else None,
        "last_id": rows or None,
    }
