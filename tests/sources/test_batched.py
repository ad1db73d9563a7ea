"""`batched`: pages joined into transactions by size, by age, and never across column sets."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pyarrow as pa

from ingest.http.paginate import Page
from ingest.load.postgres import encode_csv
from ingest.sources.rest import batched


def _pages(sizes: list[int], *, column: str = "id") -> Iterator[tuple[Page, pa.Table]]:
    start = 0
    for number, size in enumerate(sizes, 1):
        records = [{column: i} for i in range(start, start + size)]
        start += size
        page = Page(
            records=records,
            number=number,
            request_url=f"http://api.test/items?page={number}",
            response=httpx.Response(200),
        )
        yield page, pa.table({column: [r[column] for r in records]})


def test_batches_close_at_the_record_threshold() -> None:
    batches = list(batched(_pages([400] * 10), min_records=1000))
    assert [len(pages) for pages, _, _ in batches] == [3, 3, 3, 1]
    assert [table.num_rows for _, table, _ in batches] == [1200, 1200, 1200, 400]
    # The CSV that goes to COPY is the joined table's, rows in page order.
    for _, table, csv in batches:
        assert csv == encode_csv(table)
    assert batches[0][1].column("id").to_pylist() == list(range(1200))


def test_a_slow_source_commits_after_max_seconds_even_below_the_threshold() -> None:
    now = [0.0]

    def pages() -> Iterator[tuple[Page, pa.Table]]:
        for page in _pages([10] * 6):
            yield page
            now[0] += 1.5  # one page every 1.5 s

    batches = list(batched(pages(), min_records=10_000, max_seconds=2.0, clock=lambda: now[0]))
    # A batch opens at its first page and closes at the first page arriving 2 s or more later.
    assert [len(p) for p, _, _ in batches] == [3, 3]


def test_pages_with_different_columns_are_never_joined() -> None:
    def pages() -> Iterator[tuple[Page, pa.Table]]:
        yield from _pages([5, 5])
        yield from _pages([5], column="other")

    batches = list(batched(pages(), min_records=1000))
    assert [t.schema.names for _, t, _ in batches] == [["id"], ["other"]]
    assert [t.num_rows for _, t, _ in batches] == [10, 5]
