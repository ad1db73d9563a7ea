"""S3 batch drops: data files laid out under the keys they get in a bucket, plus the truth.

``s3/drops/<drop-id>/`` holds one drop. Four drops are complete (three announce it with a producer
manifest ``_manifest.json``, one with an empty Hadoop-style ``_SUCCESS`` marker) and one is not: its
manifest lists a file that never arrived and a file that is still half uploaded. Some files are
broken on purpose, and ``s3/expected.json`` says which and how, computed here rather than by hand:

* ``corrupt``: the whole file is unreadable (a cut gzip stream, a Parquet file without its footer),
  so it dead-letters as one unit;
* ``bad_rows``: a CSV whose few malformed rows (wrong field count) dead-letter one by one while the
  rest of the file loads.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq

from ingest.datagen._common import (
    ProgressFn,
    dumps_compact,
    file_md5,
    iso_s,
    open_sink,
    rng_for,
    select_exact,
    write_json,
)
from ingest.datagen.orders import CSV_HEADER, ORDER_SCHEMA, OrderChunk, iter_orders
from ingest.datagen.orders import order_created_epoch as _order_epoch

__all__ = ["DROPS", "DropSpec", "FileSpec", "plan_rows", "write_s3"]

Format = Literal["csv", "json", "ndjson", "parquet"]
Defect = Literal["bad_rows", "truncated_gzip", "footer_cut", "missing", "partial"]

MIN_ROWS_PER_FILE = 5
# Share of rows in the malformed CSV that are malformed (at least two: one of each kind).
BAD_ROW_SHARE = 0.1


@dataclass(frozen=True)
class FileSpec:
    """One data file of a drop: its name under the drop prefix, format and planned defect."""

    name: str
    format: Format
    weight: int
    compression: Literal["gzip"] | None = None
    delimiter: str = ","
    decimal_point: str = "."
    bom: bool = False
    tricky_notes: bool = False
    defect: Defect | None = None


@dataclass(frozen=True)
class DropSpec:
    """One drop: how it announces completeness, and its files."""

    marker: Literal["manifest", "_SUCCESS"]
    files: tuple[FileSpec, ...]


DROPS: tuple[DropSpec, ...] = (
    DropSpec(
        "manifest",
        (
            FileSpec("orders-bom.csv", "csv", 2, bom=True, tricky_notes=True),
            FileSpec("orders.json", "json", 1),
            FileSpec("orders.ndjson", "ndjson", 1),
            FileSpec("orders.parquet", "parquet", 2),
        ),
    ),
    DropSpec(
        "manifest",
        (
            # A European export: semicolons because the decimal separator is a comma.
            FileSpec(
                "orders-eu.csv", "csv", 1, delimiter=";", decimal_point=",", tricky_notes=True
            ),
            FileSpec("orders.csv.gz", "csv", 2, compression="gzip"),
            FileSpec("orders.ndjson.gz", "ndjson", 2, compression="gzip"),
            FileSpec("orders-malformed.csv", "csv", 1, defect="bad_rows"),
        ),
    ),
    DropSpec(
        "manifest",
        (
            FileSpec("orders.csv", "csv", 1),
            FileSpec(
                "orders-truncated.csv.gz", "csv", 1, compression="gzip", defect="truncated_gzip"
            ),
            FileSpec("orders-footerless.parquet", "parquet", 1, defect="footer_cut"),
        ),
    ),
    DropSpec(
        "_SUCCESS",
        (
            FileSpec("part-00000.parquet", "parquet", 2),
            FileSpec("part-00001.parquet", "parquet", 2),
        ),
    ),
    DropSpec(
        "manifest",
        (
            FileSpec("orders-1.csv", "csv", 1),
            FileSpec("orders-2.ndjson", "ndjson", 1, defect="missing"),
            FileSpec("orders-3.csv.gz", "csv", 1, compression="gzip", defect="partial"),
        ),
    ),
)

_REASONS: dict[Defect, str] = {
    "bad_rows": "rows with too many or too few fields: dead-letter each such row, load the rest",
    "truncated_gzip": "gzip stream cut in half: the file cannot be decompressed at all",
    "footer_cut": "Parquet footer and trailing magic removed: the file cannot be opened at all",
    "missing": "listed in the manifest but never uploaded",
    "partial": "upload not finished: size and md5 differ from the manifest",
}


def plan_rows(rows: int) -> list[list[int]]:
    """Rows per file, drop by drop: ``rows`` split by weight, at least ``MIN_ROWS_PER_FILE`` each.

    The split is exact (sums to ``rows``) whenever ``rows`` is large enough for the minimum.
    """
    specs = [spec for drop in DROPS for spec in drop.files]
    total_weight = sum(spec.weight for spec in specs)
    counts = [max(MIN_ROWS_PER_FILE, rows * spec.weight // total_weight) for spec in specs]
    leftover = rows - sum(counts)
    for i in range(max(leftover, 0)):
        counts[i % len(counts)] += 1
    plan: list[list[int]] = []
    for drop in DROPS:
        plan.append(counts[: len(drop.files)])
        counts = counts[len(drop.files) :]
    return plan


def _write_csv(
    path: Path, spec: FileSpec, chunks: Iterable[OrderChunk], bad: Iterator[bool]
) -> int:
    """Write a CSV (header + rows); returns how many rows were written malformed."""
    bad_rows = 0
    with open_sink(path, gzipped=spec.compression == "gzip") as sink:
        # utf-8-sig writes the BOM once, at the start, as Excel-made exports do.
        text = io.TextIOWrapper(sink, encoding="utf-8-sig" if spec.bom else "utf-8", newline="")
        writer = csv.writer(text, delimiter=spec.delimiter, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for chunk in chunks:
            for i in range(len(chunk)):
                fields = chunk.csv_row(i, decimal_point=spec.decimal_point)
                if next(bad):
                    text.write(_malformed(fields, kind=bad_rows % 2, sep=spec.delimiter))
                    bad_rows += 1
                else:
                    writer.writerow(fields)
        text.flush()
        text.detach()  # leave closing (and the gzip trailer) to open_sink
    return bad_rows


def _malformed(fields: list[str], *, kind: int, sep: str) -> str:
    """A one-line malformed row: the two ways hand-edited and buggy exports usually break."""
    fields = [*fields[:6], "", fields[7]]  # no note, so the row stays on one line
    if kind == 0:
        # The decimal-comma bug: an unquoted "12,50" splits the amount into two fields.
        fields[2] = fields[2].replace(".", ",")
        return sep.join(fields) + "\n"
    # A row cut short, as when a writer crashed mid-line.
    return sep.join(fields[:4]) + "\n"


def _write_json_array(path: Path, spec: FileSpec, chunks: Iterable[OrderChunk]) -> None:
    with open_sink(path, gzipped=spec.compression == "gzip") as sink:
        sink.write(b"[")
        sep = "\n"
        for chunk in chunks:
            parts = []
            for i in range(len(chunk)):
                parts.append(sep + dumps_compact(chunk.json_object(i)))
                sep = ",\n"
            sink.write("".join(parts).encode("utf-8"))
        sink.write(b"\n]\n" if sep == ",\n" else b"]\n")


def _write_ndjson(path: Path, spec: FileSpec, chunks: Iterable[OrderChunk]) -> None:
    with open_sink(path, gzipped=spec.compression == "gzip") as sink:
        for chunk in chunks:
            lines = [dumps_compact(chunk.json_object(i)) + "\n" for i in range(len(chunk))]
            sink.write("".join(lines).encode("utf-8"))


def _write_parquet(path: Path, chunks: Iterable[OrderChunk]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # One row group per chunk: bounded memory, and deterministic because chunking is.
    with pq.ParquetWriter(str(path), ORDER_SCHEMA, compression="snappy") as writer:
        for chunk in chunks:
            writer.write_table(chunk.arrow_table())


def _cut_parquet_footer(path: Path) -> None:
    """Drop the footer (its length is in the 4 bytes before the closing ``PAR1``) and the magic."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        fh.seek(size - 8)
        footer_len = int.from_bytes(fh.read(4), "little")
    os.truncate(path, size - 8 - footer_len)


def _manifest_entry(path: Path, spec: FileSpec, rows: int) -> dict[str, Any]:
    return {
        "key": spec.name,
        "format": spec.format,
        "compression": spec.compression,
        "rows": rows,
        "size": path.stat().st_size,
        "md5": file_md5(path),
    }


def _with_progress(
    chunks: Iterable[OrderChunk], progress: ProgressFn | None
) -> Iterator[OrderChunk]:
    for chunk in chunks:
        yield chunk
        if progress is not None:
            progress(len(chunk))


def _write_file(
    path: Path,
    spec: FileSpec,
    *,
    first: int,
    rows: int,
    customers: int,
    seed: int,
    stream: str,
    progress: ProgressFn | None,
) -> tuple[dict[str, Any], int]:
    """Write one data file with its defect applied; returns its manifest entry and bad-row count.

    The manifest entry describes the file as the producer meant it: for a corrupt file that is the
    corrupt bytes (the producer shipped garbage, the drop is still complete); for a missing or
    partial file it is the full file, which is exactly why the drop does not check out.
    """
    rng = rng_for(seed, "s3", stream)
    chunks = _with_progress(
        iter_orders(
            rng, first=first, count=rows, customers=customers, tricky_first=spec.tricky_notes
        ),
        progress,
    )
    bad_rows = 0
    if spec.format == "csv":
        n_bad = max(2, int(rows * BAD_ROW_SHARE)) if spec.defect == "bad_rows" else 0
        picks = select_exact(rng_for(seed, "s3-bad", stream), n_bad, rows)
        bad_rows = _write_csv(path, spec, chunks, picks)
    elif spec.format == "json":
        _write_json_array(path, spec, chunks)
    elif spec.format == "ndjson":
        _write_ndjson(path, spec, chunks)
    else:
        _write_parquet(path, chunks)

    if spec.defect == "truncated_gzip":
        os.truncate(path, path.stat().st_size // 2)
    elif spec.defect == "footer_cut":
        _cut_parquet_footer(path)
    entry = _manifest_entry(path, spec, rows)
    if spec.defect == "partial":
        os.truncate(path, path.stat().st_size // 2)
    elif spec.defect == "missing":
        path.unlink()
    return entry, bad_rows


def _check_against_manifest(
    drop_dir: Path, prefix: str, entries: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """What a loader would find wrong with the drop, checked on disk rather than assumed."""
    problems: list[dict[str, Any]] = []
    for entry in entries:
        path = drop_dir / entry["key"]
        key = prefix + entry["key"]
        if not path.exists():
            problems.append({"key": key, "problem": "missing"})
        elif path.stat().st_size != entry["size"]:
            problems.append(
                {
                    "key": key,
                    "problem": "size_mismatch",
                    "manifest_size": entry["size"],
                    "actual_size": path.stat().st_size,
                }
            )
        elif file_md5(path) != entry["md5"]:
            problems.append({"key": key, "problem": "md5_mismatch"})
    return problems


def write_s3(
    s3_dir: Path, *, rows: int, customers: int, seed: int, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Write all drops under ``s3_dir/drops/`` and return (and write) ``s3/expected.json``."""
    drops_out: list[dict[str, Any]] = []
    first = 1
    previous_epoch = 0
    for index, (drop, counts) in enumerate(zip(DROPS, plan_rows(rows), strict=True), start=1):
        last = first + sum(counts) - 1
        # A drop lands on the hour after its newest order, and at least an hour after the last drop.
        drop_epoch = max((_order_epoch(last, 9) // 3600 + 1) * 3600, previous_epoch + 3600)
        previous_epoch = drop_epoch
        drop_id = f"{iso_s(drop_epoch).replace('-', '').replace(':', '')}-{index:04d}"
        drop_dir = s3_dir / "drops" / drop_id
        entries: list[dict[str, Any]] = []
        files_out: list[dict[str, Any]] = []
        for spec, n in zip(drop.files, counts, strict=True):
            entry, bad = _write_file(
                drop_dir / spec.name,
                spec,
                first=first,
                rows=n,
                customers=customers,
                seed=seed,
                stream=f"{index}:{spec.name}",
                progress=progress,
            )
            first += n
            entries.append(entry)
            corrupt = spec.defect in ("truncated_gzip", "footer_cut")
            readable = spec.defect not in ("truncated_gzip", "footer_cut", "missing", "partial")
            files_out.append(
                {
                    "key": f"drops/{drop_id}/{spec.name}",
                    "format": spec.format,
                    "compression": spec.compression,
                    "rows": n,
                    "good_rows": n - bad if readable else 0,
                    "bad_rows": bad,
                    "corrupt": corrupt,
                    "status": spec.defect or "ok",
                    "reason": _REASONS[spec.defect] if spec.defect else None,
                    "csv": (
                        {
                            "delimiter": spec.delimiter,
                            "decimal_point": spec.decimal_point,
                            "bom": spec.bom,
                        }
                        if spec.format == "csv"
                        else None
                    ),
                }
            )
        if drop.marker == "manifest":
            manifest = {"drop_id": drop_id, "created_at": iso_s(drop_epoch), "files": entries}
            write_json(drop_dir / "_manifest.json", manifest)
            problems = _check_against_manifest(drop_dir, f"drops/{drop_id}/", entries)
        else:
            (drop_dir / "_SUCCESS").write_bytes(b"")
            problems = []
        complete = not problems
        drops_out.append(
            {
                "drop_id": drop_id,
                "prefix": f"drops/{drop_id}/",
                "marker": drop.marker,
                "complete": complete,
                "problems": problems,
                "rows_to_land": sum(f["good_rows"] for f in files_out) if complete else 0,
                "bad_rows": sum(f["bad_rows"] for f in files_out) if complete else 0,
                "files": files_out,
            }
        )
    expected = {"drops": drops_out, "totals": _totals(s3_dir, drops_out)}
    write_json(s3_dir / "expected.json", expected)
    return expected


def _totals(s3_dir: Path, drops: list[dict[str, Any]]) -> dict[str, int]:
    files = [f for d in drops for f in d["files"]]
    return {
        "drops": len(drops),
        "complete_drops": sum(d["complete"] for d in drops),
        "files_present": sum((s3_dir / f["key"]).exists() for f in files),
        "corrupt_files": sum(f["corrupt"] for d in drops if d["complete"] for f in d["files"]),
        "rows_to_land": sum(d["rows_to_land"] for d in drops),
        "bad_rows": sum(d["bad_rows"] for d in drops),
        "rows_generated": sum(f["rows"] for f in files),
    }
