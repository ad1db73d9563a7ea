"""Parse-only throughput and peak memory of ``ingest.s3.parsers`` against pyarrow's own readers.

    python bench/bench_parsers.py [--rows 1000000] [--repeat 5] [--dir DIR]
    python bench/bench_parsers.py --big [--big-mb 1024] [--dir DIR]

Default mode writes a 10-column CSV (about 114 bytes a row: 1M rows is ~114 MB) and the same rows
as Parquet, then times each reader in a fresh child process (so every figure has its own peak RSS,
from ``getrusage`` in the child): ours, pyarrow's whole-file readers (``read_csv``, ``read_table``:
the limit, all cores, the whole file in memory) and pyarrow's streaming readers (``open_csv``,
``iter_batches``: what ours is built on). Runs are interleaved and the best of ``--repeat`` is kept,
so a busy machine slows every reader alike. The ratio ours / pyarrow is the figure that carries
across machines; the goal is >= 0.8.

``--big`` writes a CSV of about ``--big-mb`` MB and parses it with ours in a child process,
reporting its peak RSS against a 500 MB budget. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ingest.s3.parsers import ParseOptions, parse

CHUNK_ROWS = 250_000
RSS_BUDGET_MB = 500


def chunk(start: int, rows: int) -> pa.Table:
    """Rows ``start…start+rows`` of the data set: deterministic, 10 columns, ~114 CSV bytes a row."""
    rng = np.random.default_rng(start)
    ids = np.arange(start, start + rows)
    return pa.table(
        {
            "order_id": pa.array([f"ORD-{i:07d}" for i in ids]),
            "customer_id": rng.integers(1, 1_000_000, rows),
            "email": pa.array([f"c{i % 99991}@example.com" for i in ids]),
            "amount": np.round(rng.random(rows) * 1000, 2),
            "discount": np.round(rng.random(rows), 6),
            "currency": pa.array(rng.choice(["usd", "eur", "gbp"], rows)),
            "status": pa.array(rng.choice(["paid", "shipped", "delivered", "refunded"], rows)),
            "gift": rng.random(rows) < 0.1,
            "created_at": pa.array((1_700_000_000 + ids * 7).astype("datetime64[s]")),
            "note": pa.array(rng.choice(["", "leave at the door", 'fragile, "glass"'], rows)),
        }
    )


def write_files(directory: Path, rows: int, *, parquet: bool) -> tuple[Path, Path | None]:
    """The CSV (and Parquet) of ``rows`` rows, written chunk by chunk in bounded memory."""
    csv_path, parquet_path = directory / "bench.csv", directory / "bench.parquet"
    schema = chunk(0, 1).schema
    with pacsv.CSVWriter(csv_path, schema) as csv_writer:
        parquet_writer = pq.ParquetWriter(parquet_path, schema) if parquet else None
        for start in range(0, rows, CHUNK_ROWS):
            table = chunk(start, min(CHUNK_ROWS, rows - start))
            csv_writer.write_table(table)
            if parquet_writer is not None:
                parquet_writer.write_table(table)
        if parquet_writer is not None:
            parquet_writer.close()
    return csv_path, parquet_path if parquet else None


# -- readers, each run in its own child process --------------------------------------------------


def _ours(path: str, **options: object) -> int:
    with parse(path, options=ParseOptions(**options)) as parsed:  # type: ignore[arg-type]
        return sum(batch.num_rows for batch in parsed)


def _open_csv(path: str) -> int:
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(use_threads=False),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
    )
    return sum(batch.num_rows for batch in reader)


READERS: dict[str, Callable[[str], int]] = {
    "ours": _ours,
    "ours, newlines_in_values=False": lambda p: _ours(p, newlines_in_values=False),
    "pyarrow read_csv": lambda p: pacsv.read_csv(p).num_rows,
    "pyarrow read_csv, newlines_in_values": lambda p: (
        pacsv.read_csv(p, parse_options=pacsv.ParseOptions(newlines_in_values=True)).num_rows
    ),
    "pyarrow open_csv (streaming)": _open_csv,
    "ours, parquet": _ours,
    "pyarrow read_table": lambda p: pq.read_table(p).num_rows,
    "pyarrow iter_batches (streaming)": lambda p: sum(
        b.num_rows for b in pq.ParquetFile(p).iter_batches()
    ),
}
CSV_READERS = [
    "ours",
    "ours, newlines_in_values=False",
    "pyarrow read_csv",
    "pyarrow read_csv, newlines_in_values",
    "pyarrow open_csv (streaming)",
]
PARQUET_READERS = ["ours, parquet", "pyarrow read_table", "pyarrow iter_batches (streaming)"]


def peak_rss_mb() -> float:
    """This process's peak resident set size.

    ``VmHWM`` where there is a /proc: ``getrusage``'s ``ru_maxrss`` survives ``exec`` on Linux,
    so a child would report its parent's peak if that was higher.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def child(reader: str, path: str, warm: bool) -> None:
    """One reader in this fresh process: once to warm up (thread pools, allocator), once timed."""
    imports_mb = peak_rss_mb()
    if warm:
        READERS[reader](path)
    start = time.perf_counter()
    rows = READERS[reader](path)
    seconds = time.perf_counter() - start
    result = {"rows": rows, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}
    print(json.dumps(result | {"imports_rss_mb": imports_mb}))


def run_child(reader: str, path: Path, *, warm: bool = True) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", reader, str(path), "warm" if warm else "cold"],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(proc.stdout.splitlines()[-1])
    return result


# -- modes ---------------------------------------------------------------------------------------


def measure(readers: list[str], path: Path, repeat: int) -> dict[str, dict[str, float]]:
    runs: dict[str, list[dict[str, float]]] = {r: [] for r in readers}
    for _ in range(repeat):
        for reader in readers:  # interleaved: a busy spell slows every reader alike
            runs[reader].append(run_child(reader, path))
    summary = {}
    for reader, results in runs.items():
        rows = results[0]["rows"]
        assert all(r["rows"] == rows for r in results), reader
        times = [r["seconds"] for r in results]
        summary[reader] = {
            "rows": rows,
            "best_s": min(times),
            "median_s": statistics.median(times),
            "rows_per_s": rows / min(times),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
            "imports_rss_mb": max(r["imports_rss_mb"] for r in results),
        }
    return summary


def report(title: str, summary: dict[str, dict[str, float]], reference: str) -> None:
    print(f"\n{title}")
    print(
        f"{'reader':40} {'best s':>8} {'median s':>9} {'M rows/s':>9} {'vs ' + reference:>22}"
        f" {'peak RSS MB':>12} {'(imports)':>10}"
    )
    for reader, s in summary.items():
        ratio = s["rows_per_s"] / summary[reference]["rows_per_s"]
        print(
            f"{reader:40} {s['best_s']:8.3f} {s['median_s']:9.3f} {s['rows_per_s'] / 1e6:9.2f}"
            f" {ratio:21.2f}x {s['peak_rss_mb']:12.0f} {s['imports_rss_mb']:10.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--big", action="store_true", help="parse a ~1 GB CSV, report peak RSS")
    parser.add_argument("--big-mb", type=int, default=1024)
    parser.add_argument("--dir", type=Path, help="where to write the files (default: a temp dir)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        reader, path, warmth = args.child
        child(reader, path, warm=warmth == "warm")
        return
    directory = args.dir or Path(tempfile.mkdtemp(prefix="bench-parsers-"))
    directory.mkdir(parents=True, exist_ok=True)
    print(f"python {sys.version.split()[0]}, pyarrow {pa.__version__}, {os.cpu_count()} CPUs")
    if args.big:
        rows = args.big_mb * 1024 * 1024 // 114
        csv_path, _ = write_files(directory, rows, parquet=False)
        size_mb = csv_path.stat().st_size / 1e6
        result = run_child("ours", csv_path, warm=False)
        print(
            f"\n--big: {result['rows']:,} rows, {size_mb:,.0f} MB CSV parsed in {result['seconds']:.1f} s "
            f"({result['rows'] / result['seconds'] / 1e6:.2f} M rows/s); peak RSS {result['peak_rss_mb']:.0f} MB "
            f"(budget {RSS_BUDGET_MB} MB: {'met' if result['peak_rss_mb'] < RSS_BUDGET_MB else 'MISSED'})"
        )
        return
    csv_path, parquet_path = write_files(directory, args.rows, parquet=True)
    assert parquet_path is not None
    print(
        f"{args.rows:,} rows, 10 columns: CSV {csv_path.stat().st_size / 1e6:.0f} MB, "
        f"Parquet {parquet_path.stat().st_size / 1e6:.0f} MB; best of {args.repeat}, interleaved"
    )
    report("CSV", measure(CSV_READERS, csv_path, args.repeat), "pyarrow read_csv")
    report("Parquet", measure(PARQUET_READERS, parquet_path, args.repeat), "pyarrow read_table")


if __name__ == "__main__":
    main()
