"""Generic REST routes: one endpoint per pagination style, all over the same fixture records.

=====================================  ===================================================
``GET /rest/cursor/customers``         ``?limit=&cursor=`` → ``{"data", "next_cursor"}``
``GET /rest/offset/customers``         ``?offset=&limit=`` → ``{"items", "offset", "limit", "total"}``
``GET /rest/page/customers``           ``?page=&per_page=`` (1-based) →
                                       ``{"results", "page", "per_page", "total_pages", "total"}``
``GET /rest/link/customers``           ``?page=&per_page=`` → JSON array, RFC 8288 ``Link``
                                       header (``next``/``prev``/``first``/``last``)
``GET /rest/next-url/customers``       ``?limit=&after=`` → ``{"data", "next": absolute URL}``
``GET /rest/customers/{id}``           one record, 404 if missing
=====================================  ===================================================

Every list takes ``updated_since`` (ISO 8601; records with ``updated_at`` strictly greater).
Cursor and ``after`` only encode a position: clients send the same ``updated_since`` on every page,
as they would to Stripe. The next/link URLs already carry it.
Page sizes are 1..1000 (default 100); any bad parameter is a 400 with a JSON error.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from ingest.mockapi.deps import StateDep
from ingest.mockapi.errors import NotFound
from ingest.mockapi.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    Page,
    decode_cursor,
    encode_cursor,
    parse_timestamp,
    total_pages,
)

__all__ = ["router"]

router = APIRouter(prefix="/rest", tags=["rest"])


def _updated_since(
    updated_since: Annotated[str | None, Query(description="ISO 8601; strictly greater.")] = None,
) -> datetime | None:
    return None if updated_since is None else parse_timestamp(updated_since)


Since = Annotated[datetime | None, Depends(_updated_since)]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]


def _next_id(page: Page) -> int | None:
    return page.last_id if page.has_more else None


@router.get("/cursor/customers")
async def cursor_customers(
    state: StateDep, since: Since, limit: PageSize = DEFAULT_PAGE_SIZE, cursor: str | None = None
) -> JSONResponse:
    """Cursor in the body; ``next_cursor`` is null on the last page."""
    after = None if cursor is None else decode_cursor(cursor)
    page = state.dataset.after(after_id=after, limit=limit, updated_since=since)
    next_id = _next_id(page)
    return JSONResponse(
        {"data": page.records, "next_cursor": None if next_id is None else encode_cursor(next_id)}
    )


@router.get("/offset/customers")
async def offset_customers(
    state: StateDep,
    since: Since,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: PageSize = DEFAULT_PAGE_SIZE,
) -> JSONResponse:
    """Offset and limit; ``total`` counts the filtered records."""
    page = state.dataset.slice(offset=offset, limit=limit, updated_since=since)
    return JSONResponse(
        {"items": page.records, "offset": offset, "limit": limit, "total": page.total}
    )


@router.get("/page/customers")
async def page_customers(
    state: StateDep,
    since: Since,
    page: Annotated[int, Query(ge=1)] = 1,
    per_page: PageSize = DEFAULT_PAGE_SIZE,
) -> JSONResponse:
    """1-based page numbers; a page past the end is empty, not an error."""
    result = state.dataset.slice(offset=(page - 1) * per_page, limit=per_page, updated_since=since)
    body: dict[str, Any] = {
        "results": result.records,
        "page": page,
        "per_page": per_page,
        "total_pages": total_pages(result.total, per_page),
        "total": result.total,
    }
    return JSONResponse(body)


@router.get("/link/customers")
async def link_customers(
    request: Request,
    state: StateDep,
    since: Since,
    page: Annotated[int, Query(ge=1)] = 1,
    per_page: PageSize = DEFAULT_PAGE_SIZE,
) -> JSONResponse:
    """A bare JSON array; where to go next is in the RFC 8288 ``Link`` header (GitHub style)."""
    result = state.dataset.slice(offset=(page - 1) * per_page, limit=per_page, updated_since=since)
    last = max(1, total_pages(result.total, per_page))

    def url(n: int) -> str:
        return str(request.url.include_query_params(page=n, per_page=per_page))

    links = []
    if result.has_more:
        links.append(f'<{url(page + 1)}>; rel="next"')
    if page > 1:
        links.append(f'<{url(min(page - 1, last))}>; rel="prev"')
    links += [f'<{url(1)}>; rel="first"', f'<{url(last)}>; rel="last"']
    headers = {"Link": ", ".join(links), "X-Total-Count": str(result.total)}
    return JSONResponse(result.records, headers=headers)


@router.get("/next-url/customers")
async def next_url_customers(
    request: Request,
    state: StateDep,
    since: Since,
    limit: PageSize = DEFAULT_PAGE_SIZE,
    after: Annotated[int | None, Query(ge=0, description="Id of the last record seen.")] = None,
) -> JSONResponse:
    """The absolute URL of the next page in the body; null on the last page."""
    page = state.dataset.after(after_id=after, limit=limit, updated_since=since)
    next_id = _next_id(page)
    next_url = (
        None
        if next_id is None
        else str(request.url.include_query_params(after=next_id, limit=limit))
    )
    return JSONResponse({"data": page.records, "next": next_url})


@router.get("/customers/{record_id}")
async def get_customer(state: StateDep, record_id: int) -> JSONResponse:
    """One record by id."""
    record = state.dataset.get(record_id)
    if record is None:
        raise NotFound(f"no customer with id {record_id}")
    return JSONResponse(record)
