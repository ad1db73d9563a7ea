"""Paginators decide without I/O; one loop walks every style of the mock API exactly once.

Unit tests drive the paginators by hand on made-up responses and run the loop over
``httpx.MockTransport``; integration tests walk the real mock API, with and without faults.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import tenacity

from ingest.errors import (
    ClientError,
    ConfigError,
    DataError,
    DecodeError,
    ServerError,
    is_transient,
)
from ingest.http.paginate import (
    PAGINATOR_MAP,
    BasePaginator,
    HeaderLinkPaginator,
    JSONLinkPaginator,
    JSONResponseCursorPaginator,
    OffsetPaginator,
    Page,
    PageNumberPaginator,
    SinglePagePaginator,
    apaginate,
    create_paginator,
    decode_json,
    paginate,
    register_paginator,
    select_path,
    select_records,
)
from ingest.http.retry import RetryPolicy
from ingest.mockapi.fixtures import rest_record

Record = dict[str, Any]
API = "https://api.example.com"


def reply(request: httpx.Request, body: Any = None, **kwargs: Any) -> httpx.Response:
    """A response to ``request`` with a JSON ``body`` (for driving paginators by hand)."""
    return httpx.Response(200, json=body, request=request, **kwargs)


def no_wait_retrying(attempts: int = 5, **kwargs: Any) -> tenacity.Retrying:
    options: dict[str, Any] = {
        "stop": tenacity.stop_after_attempt(attempts),
        "wait": tenacity.wait_exponential(multiplier=1),
        "retry": tenacity.retry_if_exception(is_transient),
        "sleep": lambda seconds: None,
        "reraise": True,
    }
    options.update(kwargs)
    return tenacity.Retrying(**options)


# -- JSON paths and records -------------------------------------------------------------------


def test_select_path_steps_into_objects_and_lists() -> None:
    body = {"a": {"b": [{"c": 1}, {"c": 2}]}, "n": None}
    assert select_path(body, "a.b.0.c") == 1
    assert select_path(body, "a.b.-1.c") == 2
    assert select_path(body, "a.b.2.c", "none") == "none"
    assert select_path(body, "a.x", "none") == "none"
    assert select_path(body, "n", "none") is None  # null is a value, not a missing key
    assert select_path(body, "a.b.c", "none") == "none"  # a key does not index a list


@pytest.mark.parametrize("path", ["", "a..b", ".a", "a."])
def test_a_malformed_path_is_a_config_error(path: str) -> None:
    with pytest.raises(ConfigError, match="dotted path"):
        select_path({}, path)


def test_select_records_finds_the_only_list_or_takes_a_selector() -> None:
    assert select_records([{"id": 1}]) == [{"id": 1}]
    assert select_records({"items": [{"id": 1}], "total": 1}) == [{"id": 1}]
    assert select_records({"a": [], "b": {"data": [{"id": 2}]}}, "b.data") == [{"id": 2}]
    assert select_records({"data": None}, "data") == []
    assert select_records({"one": {"id": 3}}, "one") == [{"id": 3}]


def test_select_records_refuses_to_guess() -> None:
    with pytest.raises(ConfigError, match=r"list-valued keys: a, b\); set data_selector"):
        select_records({"a": [], "b": []})
    with pytest.raises(ConfigError, match=r"'itemz' matches nothing.*top-level keys: items"):
        select_records({"items": []}, "itemz")
    with pytest.raises(DataError, match="record 1 is a int"):
        select_records([{"id": 1}, 2])


def test_a_truncated_body_is_a_transient_decode_error_without_secrets() -> None:
    request = httpx.Request("GET", f"{API}/customers?limit=2&api_key=hunter2")
    whole = json.dumps({"data": [{"id": 1}, {"id": 2}]}).encode()
    response = httpx.Response(200, content=whole[: len(whole) // 2], request=request)
    with pytest.raises(
        DecodeError, match=r"GET https://api\.example\.com/customers\?limit=2"
    ) as info:
        decode_json(response)
    assert "the body is not valid JSON (16 bytes received)" in str(info.value)
    assert "hunter2" not in str(info.value)
    assert is_transient(info.value)


# -- each paginator, driven by hand ---------------------------------------------------------------


def test_cursor_paginator_sends_the_cursor_back_and_keeps_other_params() -> None:
    request = httpx.Request("GET", f"{API}/customers?limit=2&updated_since=2026-01-01T00:00:00Z")
    paginator = JSONResponseCursorPaginator()
    paginator.init_request(request)
    assert "cursor" not in request.url.params
    paginator.update_state(reply(request, {"data": [{"id": 1}], "next_cursor": "abc"}))
    assert paginator.has_next_page
    paginator.update_request(request)
    assert dict(request.url.params) == {
        "limit": "2",
        "updated_since": "2026-01-01T00:00:00Z",
        "cursor": "abc",
    }
    paginator.update_state(reply(request, {"data": [{"id": 2}], "next_cursor": "def"}))
    paginator.update_request(request)
    assert request.url.params.get_list("cursor") == ["def"]  # replaced, not appended


@pytest.mark.parametrize("end", [None, ""])
def test_cursor_paginator_stops_on_a_null_or_empty_cursor(end: str | None) -> None:
    request = httpx.Request("GET", f"{API}/customers")
    paginator = JSONResponseCursorPaginator()
    paginator.init_request(request)
    paginator.update_state(reply(request, {"data": [], "next_cursor": end}))
    assert not paginator.has_next_page


def test_cursor_paginator_with_custom_path_and_param_and_a_fresh_walk() -> None:
    request = httpx.Request("GET", f"{API}/customers")
    paginator = JSONResponseCursorPaginator(cursor_path="meta.cursors.next", cursor_param="after")
    paginator.init_request(request)
    paginator.update_state(reply(request, {"meta": {"cursors": {"next": 42}}}))
    paginator.update_request(request)
    assert request.url.params["after"] == "42"
    paginator.update_state(reply(request, {"meta": {"cursors": {"next": None}}}))
    assert not paginator.has_next_page
    paginator.init_request(request)  # a new walk starts over
    assert paginator.has_next_page and paginator.cursor is None


def test_offset_paginator_moves_by_limit_and_stops_at_the_total() -> None:
    request = httpx.Request("GET", f"{API}/customers")
    paginator = OffsetPaginator(limit=2)
    paginator.init_request(request)
    assert dict(request.url.params) == {"offset": "0", "limit": "2"}
    paginator.update_state(reply(request, {"items": [{}, {}], "total": 5}), [{}, {}])
    paginator.update_request(request)
    assert dict(request.url.params) == {"offset": "2", "limit": "2"}
    paginator.update_state(reply(request, {"items": [{}, {}], "total": 5}), [{}, {}])
    assert paginator.has_next_page
    paginator.update_request(request)
    # Offset 4 is the last page: the total says so before any empty page is asked for.
    paginator.update_state(reply(request, {"items": [{}], "total": 6}), [{}, {}])
    assert not paginator.has_next_page


def test_offset_paginator_stops_at_the_total_even_on_a_full_page() -> None:
    request = httpx.Request("GET", f"{API}/customers")
    paginator = OffsetPaginator(limit=2, offset=2, offset_param="skip", limit_param="take")
    paginator.init_request(request)
    assert dict(request.url.params) == {"skip": "2", "take": "2"}
    paginator.update_state(reply(request, {"items": [{}, {}], "total": 4}), [{}, {}])
    assert not paginator.has_next_page


def test_offset_paginator_without_total_stops_on_a_short_or_empty_page() -> None:
    request = httpx.Request("GET", f"{API}/customers")
    paginator = OffsetPaginator(limit=3, total_path=None)
    paginator.init_request(request)
    paginator.update_state(reply(request, [{}, {}, {}]), [{}, {}, {}])
    assert paginator.has_next_page
    paginator.update_state(reply(request, [{}]), [{}])
    assert not paginator.has_next_page
    paginator.init_request(request)
    paginator.update_state(reply(request, []), [])
    assert not paginator.has_next_page


def test_offset_paginator_reports_a_missing_or_bad_total() -> None:
    request = httpx.Request("GET", f"{API}/customers")
    paginator = OffsetPaginator(limit=2)
    paginator.init_request(request)
    with pytest.raises(ConfigError, match=r"total_path 'total' is not in the response.*count"):
        paginator.update_state(reply(request, {"items": [], "count": 0}), [])
    with pytest.raises(DataError, match="not a count"):
        paginator.update_state(reply(request, {"items": [], "total": "many"}), [])


def test_page_number_paginator_counts_pages_and_stops_on_the_last() -> None:
    request = httpx.Request("GET", f"{API}/customers?per_page=2")
    paginator = PageNumberPaginator(total_path="total_pages")
    paginator.init_request(request)
    assert request.url.params["page"] == "1"
    for expected in (2, 3):
        paginator.update_state(reply(request, {"results": [{}, {}], "total_pages": 3}), [{}, {}])
        paginator.update_request(request)
        assert request.url.params["page"] == str(expected)
    paginator.update_state(reply(request, {"results": [{}], "total_pages": 3}), [{}])
    assert not paginator.has_next_page
    assert request.url.params["per_page"] == "2"


def test_page_number_paginator_from_zero_without_total_needs_an_empty_page() -> None:
    request = httpx.Request("GET", f"{API}/customers")
    paginator = PageNumberPaginator(base_page=0, page_param="p")
    paginator.init_request(request)
    assert request.url.params["p"] == "0"
    paginator.update_state(reply(request, [{}]), [{}])
    paginator.update_request(request)
    assert request.url.params["p"] == "1" and paginator.has_next_page
    paginator.update_state(reply(request, []), [])
    assert not paginator.has_next_page


def test_page_number_paginator_maximum_page_and_a_config_that_never_stops() -> None:
    request = httpx.Request("GET", f"{API}/customers")
    paginator = PageNumberPaginator(maximum_page=2, stop_after_empty_page=False)
    paginator.init_request(request)
    paginator.update_state(reply(request, []), [])
    assert paginator.has_next_page  # empty pages do not stop it: it was told so
    paginator.update_request(request)
    paginator.update_state(reply(request, []), [])
    assert not paginator.has_next_page
    with pytest.raises(ConfigError, match="would never stop"):
        PageNumberPaginator(stop_after_empty_page=False)


def test_header_link_paginator_follows_rel_next_and_resolves_relative_links() -> None:
    request = httpx.Request("GET", f"{API}/customers?per_page=2")
    paginator = HeaderLinkPaginator()
    paginator.init_request(request)
    links = '</customers?page=2&per_page=2>; rel="next", </customers?page=5&per_page=2>; rel="last"'
    paginator.update_state(reply(request, [{}], headers={"Link": links}))
    paginator.update_request(request)
    assert str(request.url) == f"{API}/customers?page=2&per_page=2"
    paginator.update_state(
        reply(request, [{}], headers={"Link": '</customers?page=1>; rel="first"'})
    )
    assert not paginator.has_next_page
    paginator.update_state(reply(request, [{}]))  # no Link header at all
    assert not paginator.has_next_page


def test_next_url_on_another_host_moves_the_host_header_too() -> None:
    request = httpx.Request("GET", f"{API}/customers")
    paginator = JSONLinkPaginator(next_url_path="links.next")
    paginator.init_request(request)
    paginator.update_state(
        reply(request, {"links": {"next": "https://eu.example.com:8443/c?after=9"}})
    )
    paginator.update_request(request)
    assert str(request.url) == "https://eu.example.com:8443/c?after=9"
    assert request.headers["Host"] == "eu.example.com:8443"
    paginator.update_state(reply(request, {"links": {"next": None}}))
    assert not paginator.has_next_page


def test_single_page_paginator_stops_after_one_page() -> None:
    request = httpx.Request("GET", f"{API}/customers")
    paginator = SinglePagePaginator()
    paginator.init_request(request)
    assert paginator.has_next_page
    paginator.update_state(reply(request, [{}]), [{}])
    assert not paginator.has_next_page


# -- the registry -----------------------------------------------------------------------------------


def test_registry_names() -> None:
    assert set(PAGINATOR_MAP) >= {
        "single_page",
        "cursor",
        "offset",
        "page_number",
        "header_link",
        "json_link",
    }
    assert isinstance(create_paginator("cursor"), JSONResponseCursorPaginator)
    assert isinstance(create_paginator("header_link"), HeaderLinkPaginator)


def test_create_paginator_from_a_mapping_or_an_instance() -> None:
    offset = create_paginator({"type": "offset", "limit": 100, "total_path": None})
    assert isinstance(offset, OffsetPaginator)
    assert (offset.limit, offset.total_path) == (100, None)
    page = create_paginator({"type": "page_number", "base_page": 0, "total_path": "meta.pages"})
    assert isinstance(page, PageNumberPaginator) and page.base_page == 0
    mine = JSONLinkPaginator()
    assert create_paginator(mine) is mine


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        create_paginator("pages")
    message = str(info.value)
    assert "unknown paginator 'pages'" in message
    for name in PAGINATOR_MAP:
        assert name in message
    with pytest.raises(ConfigError, match="needs a 'type', one of: cursor, "):
        create_paginator({"limit": 10})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"type": "offset"}, "paginator 'offset' needs parameter 'limit'"),
        ({"type": "cursor", "cursor_pth": "x"}, "has no parameter 'cursor_pth'"),
        ({"type": "offset", "limit": 0}, "limit must be an integer >= 1, got 0"),
        ({"type": "offset", "limit": True}, "limit must be an integer >= 1, got True"),
        ({"type": "offset", "limit": 10, "total_path": "a..b"}, "total_path must be a dotted path"),
        ({"type": "cursor", "cursor_param": ""}, "cursor_param must be a non-empty string"),
        ({"type": "page_number", "stop_after_empty_page": "no"}, "stop_after_empty_page must be"),
    ],
)
def test_bad_parameters_are_named(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_paginator(config)


def test_register_paginator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ingest.http.paginate.PAGINATOR_MAP", dict(PAGINATOR_MAP))
    from ingest.http import paginate as module

    class EveryOtherPage(SinglePagePaginator):
        pass

    register_paginator("every_other", EveryOtherPage)
    assert "every_other" in module.PAGINATOR_MAP
    assert isinstance(create_paginator({"type": "every_other"}), EveryOtherPage)
    register_paginator("every_other", EveryOtherPage)  # the same again is fine
    with pytest.raises(ConfigError, match="already taken by JSONResponseCursorPaginator"):
        register_paginator("cursor", EveryOtherPage)
    with pytest.raises(ConfigError, match="subclass of BasePaginator"):
        register_paginator("dict", dict)  # type: ignore[arg-type]
    assert "every_other" not in PAGINATOR_MAP


# -- the loop over a fake network ---------------------------------------------------------------------


class FakeCursorAPI:
    """Serves ``n`` records by cursor at ``/customers``; the first ``truncate`` answers are cut."""

    def __init__(self, n: int, *, page: int = 3, truncate: int = 0, status: int = 200) -> None:
        self.records = [{"id": i} for i in range(1, n + 1)]
        self.page = page
        self.truncate = truncate
        self.status = status
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(str(request.url))
        if self.status != 200:
            return httpx.Response(self.status, json={"error": "nope"})
        start = int(request.url.params.get("cursor", "0"))
        chunk = self.records[start : start + self.page]
        more = start + self.page < len(self.records)
        body = json.dumps({"data": chunk, "next_cursor": str(start + self.page) if more else None})
        if self.truncate:
            self.truncate -= 1
            return httpx.Response(200, content=body[: len(body) // 2].encode())
        return httpx.Response(200, content=body.encode())


def fake_client(api: Callable[[httpx.Request], httpx.Response]) -> httpx.Client:
    return httpx.Client(base_url=API, transport=httpx.MockTransport(api))


def test_the_loop_sends_one_request_per_page_and_none_after_the_last() -> None:
    api = FakeCursorAPI(7, page=3)
    with fake_client(api) as client:
        pages = list(paginate(client, ("GET", "/customers", {"limit": 3}), "cursor"))
    assert [p.number for p in pages] == [1, 2, 3]
    assert [r["id"] for p in pages for r in p.records] == list(range(1, 8))
    assert len(api.seen) == 3
    assert pages[1].request_url == f"{API}/customers?limit=3&cursor=3"
    assert pages[0].status_code == 200 and isinstance(pages[0], Page)


def test_the_loop_copies_the_callers_request() -> None:
    api = FakeCursorAPI(5, page=2)
    with fake_client(api) as client:
        first = client.build_request("GET", "/customers")
        ids = [r["id"] for p in paginate(client, first, "cursor") for r in p.records]
    assert ids == [1, 2, 3, 4, 5]
    assert str(first.url) == f"{API}/customers"


def test_a_truncated_page_is_fetched_again_under_the_given_retrying() -> None:
    api = FakeCursorAPI(4, page=2, truncate=2)
    sleeps: list[float] = []
    retrying = no_wait_retrying(sleep=sleeps.append)
    with fake_client(api) as client:
        pages = list(paginate(client, ("GET", "/customers", None), "cursor", retrying=retrying))
    assert [r["id"] for p in pages for r in p.records] == [1, 2, 3, 4]
    # The same first page three times (two cut short), then page two once.
    assert api.seen == [f"{API}/customers"] * 3 + [f"{API}/customers?cursor=2"]
    assert len(sleeps) == 2  # the policy's wait and sleep were used, not a loop of our own


def test_without_retrying_a_truncated_page_raises() -> None:
    api = FakeCursorAPI(4, page=2, truncate=1)
    with fake_client(api) as client, pytest.raises(DecodeError):
        list(paginate(client, ("GET", "/customers", None), "cursor"))
    assert len(api.seen) == 1


def test_the_policy_still_decides_and_gives_up_with_the_decode_error() -> None:
    never = no_wait_retrying(retry=tenacity.retry_never)
    with fake_client(FakeCursorAPI(4, truncate=1)) as client, pytest.raises(DecodeError):
        list(paginate(client, ("GET", "/customers", None), "cursor", retrying=never))
    # reraise=False in the caller's policy: still the DecodeError, not tenacity's RetryError.
    api = FakeCursorAPI(4, truncate=5)
    two = no_wait_retrying(attempts=2, reraise=False)
    with fake_client(api) as client, pytest.raises(DecodeError):
        list(paginate(client, ("GET", "/customers", None), "cursor", retrying=two))
    assert len(api.seen) == 2


@pytest.mark.parametrize(("status", "error"), [(400, ClientError), (503, ServerError)])
def test_error_statuses_are_raised_and_not_retried_by_the_loop(
    status: int, error: type[Exception]
) -> None:
    api = FakeCursorAPI(4, status=status)
    with fake_client(api) as client, pytest.raises(error) as info:
        list(paginate(client, ("GET", "/customers", None), "cursor", retrying=no_wait_retrying()))
    assert getattr(info.value, "status_code", None) == status
    # Retrying statuses is the client's retry transport's job; the loop does not do it twice.
    assert len(api.seen) == 1


def test_apaginate_walks_and_refetches_with_an_async_retrying() -> None:
    api = FakeCursorAPI(5, page=2, truncate=1)

    async def no_sleep(seconds: float) -> None:
        return None

    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(3),
        retry=tenacity.retry_if_exception(is_transient),
        sleep=no_sleep,
    )

    async def walk() -> list[int]:
        transport = httpx.MockTransport(api)
        async with httpx.AsyncClient(base_url=API, transport=transport) as client:
            pages = apaginate(client, ("GET", "/customers", None), "cursor", retrying=retrying)
            return [r["id"] async for page in pages for r in page.records]

    assert asyncio.run(walk()) == [1, 2, 3, 4, 5]
    assert len(api.seen) == 4  # three pages, the first one twice


# -- the real mock API ------------------------------------------------------------------------------

N, SEED, PAGE_SIZE = 237, 3, 50

STYLES: dict[str, tuple[str, dict[str, Any], Any]] = {
    "cursor": ("/rest/cursor/customers", {"limit": PAGE_SIZE}, "cursor"),
    "offset": ("/rest/offset/customers", {}, {"type": "offset", "limit": PAGE_SIZE}),
    "page": (
        "/rest/page/customers",
        {"per_page": PAGE_SIZE},
        {"type": "page_number", "total_path": "total_pages"},
    ),
    "link": ("/rest/link/customers", {"per_page": PAGE_SIZE}, "header_link"),
    "next-url": ("/rest/next-url/customers", {"limit": PAGE_SIZE}, "json_link"),
}


@pytest.fixture
def mock_api(mock_api_url: str) -> Iterator[Callable[..., httpx.Client]]:
    """``configure(**config)`` puts a mock config and returns a client with a fresh client id."""
    clients: list[httpx.Client] = []
    with httpx.Client(base_url=mock_api_url, timeout=10.0) as admin:

        def configure(**config: Any) -> httpx.Client:
            admin.put(
                "/_admin/config", json={"records": N, "seed": SEED, **config}
            ).raise_for_status()
            client = httpx.Client(
                base_url=mock_api_url,
                timeout=10.0,
                headers={"X-Client-Id": f"test-paginate-{uuid.uuid4().hex}"},
            )
            clients.append(client)
            return client

        try:
            yield configure
        finally:
            for client in clients:
                client.close()
            admin.put("/_admin/config", json={}).raise_for_status()


def server_stats(client: httpx.Client) -> dict[str, Any]:
    stats: dict[str, Any] = client.get("/_admin/stats").json()["clients"]
    return stats.get(client.headers["X-Client-Id"], {"requests": 0, "by_fault": {}})


def walk_ids(client: httpx.Client, style: str, **extra: Any) -> tuple[list[int], int]:
    path, params, config = STYLES[style]
    pages = list(paginate(client, ("GET", path, {**params, **extra}), config))
    return [r["id"] for p in pages for r in p.records], len(pages)


@pytest.mark.parametrize("style", list(STYLES))
def test_every_style_walks_the_whole_collection_exactly_once(
    mock_api: Callable[..., httpx.Client], style: str
) -> None:
    client = mock_api()
    ids, pages = walk_ids(client, style)
    assert ids == list(range(1, N + 1))
    assert pages == 5  # ceil(237 / 50): no style asks for a page past the end
    assert server_stats(client)["requests"] == pages


@pytest.mark.parametrize("style", list(STYLES))
def test_every_style_honours_updated_since(
    mock_api: Callable[..., httpx.Client], style: str
) -> None:
    client = mock_api()
    since = rest_record(180, seed=SEED)["updated_at"]
    ids, pages = walk_ids(client, style, updated_since=since)
    assert ids == list(range(181, N + 1))
    assert pages == 2


def test_page_numbers_without_a_total_stop_after_one_empty_page(
    mock_api: Callable[..., httpx.Client],
) -> None:
    client = mock_api()
    pages = list(paginate(client, ("GET", "/rest/page/customers", {"per_page": 50}), "page_number"))
    assert [len(p.records) for p in pages] == [50, 50, 50, 50, 37, 0]


def test_truncated_bodies_are_fetched_again_until_every_page_decodes(
    mock_api: Callable[..., httpx.Client],
) -> None:
    client = mock_api(faults={"rate": 0.5, "weights": {"truncated": 1}})
    path, _, config = STYLES["cursor"]
    # Small pages: 24 requests at a 50 % fault rate make "no fault at all" a 1-in-16-million run.
    pages = list(
        paginate(client, ("GET", path, {"limit": 10}), config, retrying=no_wait_retrying())
    )
    assert [r["id"] for p in pages for r in p.records] == list(range(1, N + 1))
    stats = server_stats(client)
    truncated = stats["by_fault"].get("truncated", 0)
    assert truncated > 0
    assert stats["requests"] == len(pages) + truncated


def test_the_projects_retry_policy_drives_the_refetch(
    mock_api: Callable[..., httpx.Client],
) -> None:
    client = mock_api(faults={"rate": 0.5, "weights": {"truncated": 1}})
    reasons: list[str] = []
    policy = RetryPolicy(sleep=lambda seconds: None)
    retrying = policy.retrying(on_retry=lambda attempt: reasons.append(attempt.reason))
    request = ("GET", "/rest/next-url/customers", {"limit": 10})
    pages = list(paginate(client, request, "json_link", retrying=retrying))
    assert [r["id"] for p in pages for r in p.records] == list(range(1, N + 1))
    assert reasons and set(reasons) == {"DecodeError"}
    assert server_stats(client)["requests"] == len(pages) + len(reasons)


def test_truncated_body_without_retrying_raises(mock_api: Callable[..., httpx.Client]) -> None:
    client = mock_api(faults={"rate": 1.0, "weights": {"truncated": 1}})
    with pytest.raises(DecodeError, match="/rest/offset/customers"):
        walk_ids(client, "offset")


def test_apaginate_against_the_mock_with_truncated_bodies(
    mock_api: Callable[..., httpx.Client],
) -> None:
    base_url = str(mock_api(faults={"rate": 0.5, "weights": {"truncated": 1}}).base_url)

    async def no_sleep(seconds: float) -> None:
        return None

    async def walk(base_url: str) -> list[int]:
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(5),
            retry=tenacity.retry_if_exception(is_transient),
            sleep=no_sleep,
            reraise=True,
        )
        headers = {"X-Client-Id": f"test-apaginate-{uuid.uuid4().hex}"}
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10.0) as client:
            path, params, config = STYLES["next-url"]
            pages = apaginate(client, ("GET", path, params), config, retrying=retrying)
            return [r["id"] async for page in pages for r in page.records]

    assert asyncio.run(walk(base_url)) == list(range(1, N + 1))


def test_base_paginator_is_abstract() -> None:
    with pytest.raises(TypeError):
        BasePaginator()  # type: ignore[abstract]
