"""Every pagination style walks the fixture set exactly once, honours updated_since, rejects junk."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ingest.mockapi.fixtures import rest_record, rest_records

from .conftest import Configure, running_server

N = 237  # not a multiple of the page size, so the last page is short
SEED = 3
PAGE = 50

Record = dict[str, Any]
Walk = Callable[[httpx.Client, dict[str, str]], tuple[list[Record], int]]


def walk_cursor(client: httpx.Client, params: dict[str, str]) -> tuple[list[Record], int]:
    records: list[Record] = []
    cursor: str | None = None
    calls = 0
    while True:
        query = {**params, "limit": str(PAGE)} | ({"cursor": cursor} if cursor else {})
        body = client.get("/rest/cursor/customers", params=query).raise_for_status().json()
        calls += 1
        records += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return records, calls
        assert not cursor.isdigit(), "the cursor should be opaque, not a bare id"


def walk_offset(client: httpx.Client, params: dict[str, str]) -> tuple[list[Record], int]:
    records: list[Record] = []
    offset, calls = 0, 0
    while True:
        query = {**params, "offset": str(offset), "limit": str(PAGE)}
        body = client.get("/rest/offset/customers", params=query).raise_for_status().json()
        calls += 1
        assert (body["offset"], body["limit"]) == (offset, PAGE)
        records += body["items"]
        offset += PAGE
        if offset >= body["total"]:
            assert len(records) == body["total"]
            return records, calls


def walk_page(client: httpx.Client, params: dict[str, str]) -> tuple[list[Record], int]:
    records: list[Record] = []
    page, calls = 1, 0
    while True:
        query = {**params, "page": str(page), "per_page": str(PAGE)}
        body = client.get("/rest/page/customers", params=query).raise_for_status().json()
        calls += 1
        assert (body["page"], body["per_page"]) == (page, PAGE)
        assert body["total_pages"] == math.ceil(body["total"] / PAGE)
        records += body["results"]
        if page >= body["total_pages"]:
            return records, calls
        page += 1


def walk_link(client: httpx.Client, params: dict[str, str]) -> tuple[list[Record], int]:
    records: list[Record] = []
    response = client.get("/rest/link/customers", params={**params, "per_page": str(PAGE)})
    calls = 1
    while True:
        page = response.raise_for_status().json()
        assert isinstance(page, list)
        records += page
        assert "first" in response.links and "last" in response.links
        nxt = response.links.get("next")
        if nxt is None:
            return records, calls
        assert nxt["url"].startswith(str(client.base_url).rstrip("/") + "/rest/link/customers?")
        response = client.get(nxt["url"])
        calls += 1


def walk_next_url(client: httpx.Client, params: dict[str, str]) -> tuple[list[Record], int]:
    body = (
        client.get("/rest/next-url/customers", params={**params, "limit": str(PAGE)})
        .raise_for_status()
        .json()
    )
    records: list[Record] = body["data"]
    calls = 1
    while body["next"] is not None:
        assert body["next"].startswith(str(client.base_url).rstrip("/") + "/")
        body = client.get(body["next"]).raise_for_status().json()
        calls += 1
        records += body["data"]
    return records, calls


WALKS: dict[str, Walk] = {
    "cursor": walk_cursor,
    "offset": walk_offset,
    "page": walk_page,
    "link": walk_link,
    "next-url": walk_next_url,
}


@pytest.fixture
def dataset(configure: Configure) -> list[Record]:
    configure(records=N, seed=SEED)
    return rest_records(N, seed=SEED)


@pytest.mark.parametrize("style", WALKS)
def test_walks_the_whole_dataset_exactly_once(
    style: str, client: httpx.Client, dataset: list[Record]
) -> None:
    records, calls = WALKS[style](client, {})
    assert [r["id"] for r in records] == list(range(1, N + 1))
    assert records == dataset  # the fixture records themselves, field for field
    assert calls == math.ceil(N / PAGE)  # really paged, and no empty trailing page


@pytest.mark.parametrize("style", WALKS)
def test_updated_since_is_strictly_greater(
    style: str, client: httpx.Client, dataset: list[Record]
) -> None:
    since = dataset[99]["updated_at"]  # record 100's own timestamp: record 100 is excluded
    records, calls = WALKS[style](client, {"updated_since": since})
    assert [r["id"] for r in records] == list(range(101, N + 1))
    assert calls == math.ceil((N - 100) / PAGE)


def test_updated_since_accepts_offsets_and_past_the_end(
    client: httpx.Client, dataset: list[Record]
) -> None:
    # The same instant as record 10's updated_at, written with an offset instead of Z.
    since = dataset[9]["updated_at"].replace("Z", "+00:00")
    body = client.get("/rest/offset/customers", params={"updated_since": since}).json()
    assert body["total"] == N - 10 and body["items"][0]["id"] == 11
    late = client.get("/rest/page/customers", params={"updated_since": "2099-01-01T00:00:00Z"})
    assert late.json() == {
        "results": [],
        "page": 1,
        "per_page": 100,
        "total_pages": 0,
        "total": 0,
    }


def test_single_record_and_404(client: httpx.Client, dataset: list[Record]) -> None:
    assert client.get("/rest/customers/5").json() == rest_record(5, seed=SEED)
    missing = client.get(f"/rest/customers/{N + 1}")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found"


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/rest/cursor/customers", {"limit": "0"}),
        ("/rest/cursor/customers", {"limit": "1001"}),
        ("/rest/cursor/customers", {"limit": "ten"}),
        ("/rest/cursor/customers", {"cursor": "not-a-cursor"}),
        ("/rest/cursor/customers", {"cursor": "MTIz"}),  # base64 of "123", not our format
        ("/rest/offset/customers", {"offset": "-1"}),
        ("/rest/offset/customers", {"limit": "100000"}),
        ("/rest/page/customers", {"page": "0"}),
        ("/rest/page/customers", {"per_page": "0"}),
        ("/rest/link/customers", {"page": "x"}),
        ("/rest/next-url/customers", {"after": "-5"}),
        ("/rest/next-url/customers", {"updated_since": "yesterday"}),
        ("/rest/offset/customers", {"updated_since": "2026-13-01T00:00:00Z"}),
    ],
)
def test_bad_parameters_are_400_with_a_json_error(
    client: httpx.Client, path: str, params: dict[str, str]
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["type"] == "invalid_request"


def test_link_header_on_the_last_page_has_no_next(
    client: httpx.Client, dataset: list[Record]
) -> None:
    last = math.ceil(N / PAGE)
    response = client.get("/rest/link/customers", params={"page": last, "per_page": PAGE})
    assert len(response.json()) == N - (last - 1) * PAGE
    assert "next" not in response.links
    assert response.links["prev"]["url"].endswith(f"page={last - 1}&per_page={PAGE}")
    assert response.headers["x-total-count"] == str(N)


def test_healthz(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_command_line_sets_records_and_seed() -> None:
    with running_server("--records", "7", "--seed", "2") as url:
        body = httpx.get(f"{url}/rest/offset/customers", timeout=10).json()
    assert body["items"] == rest_records(7, seed=2)
