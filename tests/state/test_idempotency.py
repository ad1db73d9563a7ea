"""Fingerprints, the idempotency store (real PostgreSQL) and the transport that uses them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.state.db import connect
from ingest.state.idempotency import (
    REPLAY_HEADER,
    IdempotencyStore,
    IdempotencyTransport,
    body_digest,
    canonical_body,
    canonical_url,
    fingerprint,
    idempotency_key_for,
)
from tests.support.servers import serve_in_thread

JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
URL = "https://api.example.com/v1/charges"

# -- canonicalisation ---------------------------------------------------------------------------

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
values = st.text(min_size=0, max_size=8)
json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
# Timing on a busy CI machine is not what these properties are about.
no_deadline = settings(deadline=None)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(names, children, max_size=4),
    max_leaves=12,
)


@no_deadline
@given(st.dictionaries(names, values, min_size=1, max_size=6), st.randoms())
def test_query_parameter_order_does_not_matter(params: dict[str, str], rnd: Any) -> None:
    pairs = list(params.items())
    shuffled = pairs[:]
    rnd.shuffle(shuffled)
    a = f"{URL}?{urlencode(pairs)}"
    b = f"{URL}?{urlencode(shuffled)}"
    assert canonical_url(a) == canonical_url(b)
    assert fingerprint("POST", a, body=None) == fingerprint("POST", b, body=None)


@no_deadline
@given(st.dictionaries(names, values, min_size=1, max_size=6), names, values)
def test_a_changed_query_value_changes_the_fingerprint(
    params: dict[str, str], name: str, value: str
) -> None:
    changed = {**params, name: value}
    if changed == params:
        changed[name] = value + "x"
    a = fingerprint("POST", f"{URL}?{urlencode(params)}", body=None)
    b = fingerprint("POST", f"{URL}?{urlencode(changed)}", body=None)
    assert a != b


def _reorder(value: Any, rnd: Any) -> Any:
    """The same JSON value with every object's keys in another order."""
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: _reorder(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [_reorder(v, rnd) for v in value]
    return value


@no_deadline
@given(st.dictionaries(names, json_values, min_size=1, max_size=5), st.randoms(), st.booleans())
def test_json_key_order_and_whitespace_do_not_matter(
    document: dict[str, Any], rnd: Any, pretty: bool
) -> None:
    a = json.dumps(document).encode()
    b = json.dumps(_reorder(document, rnd), indent=2 if pretty else None).encode()
    assert canonical_body(a, "application/json") == canonical_body(b, "application/json")
    assert fingerprint("POST", URL, body=a, headers=JSON) == fingerprint(
        "POST", URL, body=b, headers=JSON
    )


@no_deadline
@given(st.dictionaries(names, json_values, min_size=1, max_size=5), names)
def test_a_changed_json_value_changes_the_fingerprint(document: dict[str, Any], name: str) -> None:
    changed = {**document, name: ["changed", document.get(name)]}
    a = fingerprint("POST", URL, body=json.dumps(document).encode(), headers=JSON)
    b = fingerprint("POST", URL, body=json.dumps(changed).encode(), headers=JSON)
    assert a != b


@no_deadline
@given(st.dictionaries(names, values, min_size=2, max_size=6), st.randoms())
def test_form_pair_order_does_not_matter(fields: dict[str, str], rnd: Any) -> None:
    pairs = list(fields.items())
    shuffled = pairs[:]
    rnd.shuffle(shuffled)
    a, b = urlencode(pairs).encode(), urlencode(shuffled).encode()
    assert fingerprint("POST", URL, body=a, headers=FORM) == fingerprint(
        "POST", URL, body=b, headers=FORM
    )


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("HTTPS://API.Example.COM/v1/charges", "https://api.example.com/v1/charges"),
        ("https://api.example.com:443/v1/charges", "https://api.example.com/v1/charges"),
        ("http://api.example.com:80/x", "http://api.example.com/x"),
        ("https://api.example.com/v1/charges#top", "https://api.example.com/v1/charges"),
        ("https://user:pw@api.example.com/x", "https://api.example.com/x"),
        ("https://api.example.com", "https://api.example.com/"),
        ("https://api.example.com/x?q=a+b", "https://api.example.com/x?q=a%20b"),
        ("https://bücher.example/x", "https://xn--bcher-kva.example/x"),
    ],
)
def test_equivalent_urls(a: str, b: str) -> None:
    assert canonical_url(a) == canonical_url(b)
    assert fingerprint("post", a, body=b"x") == fingerprint("POST", b, body=b"x")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://api.example.com/v1/charges", "https://api.example.com/v1/Charges"),
        ("https://api.example.com:8443/x", "https://api.example.com/x"),
        ("http://api.example.com/x", "https://api.example.com/x"),
        # A repeated parameter is a list: its order is kept.
        ("https://api.example.com/x?id=1&id=2", "https://api.example.com/x?id=2&id=1"),
    ],
)
def test_different_urls(a: str, b: str) -> None:
    assert fingerprint("POST", a, body=None) != fingerprint("POST", b, body=None)


def test_method_body_and_chosen_headers_count() -> None:
    base = fingerprint("POST", URL, body=b'{"a":1}', headers=JSON)
    assert fingerprint("PATCH", URL, body=b'{"a":1}', headers=JSON) != base
    assert fingerprint("POST", URL, body=b'{"a":2}', headers=JSON) != base
    assert fingerprint("POST", URL, body=b'{"a":1}', headers={"content-type": "text/plain"}) != base
    # Header names are case-insensitive; headers not chosen are ignored.
    assert (
        fingerprint("POST", URL, body=b'{"a":1}', headers={"CONTENT-TYPE": "application/json"})
        == base
    )
    noisy = {**JSON, "User-Agent": "x", "X-Request-Id": str(uuid.uuid4())}
    assert fingerprint("POST", URL, body=b'{"a":1}', headers=noisy) == base
    chosen = fingerprint("POST", URL, body=b"{}", headers=noisy, include_headers=["X-Request-Id"])
    other = {**noisy, "X-Request-Id": "other"}
    assert (
        fingerprint("POST", URL, body=b"{}", headers=other, include_headers=["x-request-id"])
        != chosen
    )
    # An absent chosen header differs from an empty one.
    assert fingerprint("POST", URL, body=None, headers={}) != fingerprint(
        "POST", URL, body=None, headers={"content-type": ""}
    )


def test_bodies_that_are_not_what_they_claim_stay_raw() -> None:
    assert canonical_body(b"{not json", "application/json") == b"{not json"
    assert canonical_body(b"\xff\xfe", "application/x-www-form-urlencoded") == b"\xff\xfe"
    assert canonical_body(b'{"b":1, "a":2}', "text/plain") == b'{"b":1, "a":2}'
    assert canonical_body(b'{"b":1, "a":2}', "application/vnd.api+json; charset=utf-8") == (
        b'{"a":2,"b":1}'
    )
    assert canonical_body(None, "application/json") == b""


def test_idempotency_key_is_a_stable_uuid() -> None:
    fp = fingerprint("POST", URL, body=b"{}", headers=JSON)
    key = idempotency_key_for(fp)
    assert key == idempotency_key_for(fp)
    assert str(uuid.UUID(key)) == key
    assert len(key) <= 255
    assert idempotency_key_for(fingerprint("POST", URL, body=b"[]", headers=JSON)) != key


# -- the store, against PostgreSQL ----------------------------------------------------------------


@pytest.fixture
def store(database_url: str, fresh_schema: str) -> IdempotencyStore:
    return IdempotencyStore(database_url, schema=fresh_schema)


def _fp(n: int = 0) -> str:
    return fingerprint("POST", f"{URL}?n={n}", body=b"{}", headers=JSON)


def test_begin_claims_once_then_returns_the_existing_row(store: IdempotencyStore) -> None:
    fp = _fp()
    assert store.begin(fp, method="post", url=URL, source="s") is None
    existing = store.begin(fp, method="POST", url=URL, source="s")
    assert existing is not None
    assert (existing.state, existing.method, existing.source) == ("started", "POST", "s")
    assert existing.idempotency_key == idempotency_key_for(fp)
    assert not existing.completed
    assert not store.is_completed(fp)


def test_complete_then_is_completed(store: IdempotencyStore) -> None:
    fp = _fp()
    store.begin(fp, method="POST", url=URL)
    assert store.complete(fp, status_code=201, response_digest=body_digest(b"{}"))
    assert store.is_completed(fp)
    record = store.begin(fp, method="POST", url=URL)
    assert record is not None and record.completed
    assert (record.status_code, record.response_digest) == (201, body_digest(b"{}"))
    assert record.completed_at is not None
    # A late failure report cannot undo a success.
    assert not store.fail(fp)
    assert store.is_completed(fp)
    assert not store.complete(_fp(99), status_code=200, response_digest=None)


def test_fail_marks_a_started_row(store: IdempotencyStore) -> None:
    fp = _fp()
    store.begin(fp, method="POST", url=URL)
    assert store.fail(fp)
    record = store.get(fp)
    assert record is not None and record.state == "failed"


def test_prune_deletes_only_expired_rows(store: IdempotencyStore) -> None:
    short, long = _fp(1), _fp(2)
    store.begin(short, method="POST", url=URL, ttl=timedelta(hours=1))
    store.begin(long, method="POST", url=URL, ttl=timedelta(hours=48))
    assert store.prune() == 0
    assert store.prune(datetime.now(UTC) + timedelta(hours=2)) == 1
    assert store.get(short) is None
    assert store.get(long) is not None


def test_an_expired_row_is_claimed_afresh(store: IdempotencyStore) -> None:
    fp = _fp()
    store.begin(fp, method="POST", url=URL, ttl=timedelta(0))
    store.complete(fp, status_code=200, response_digest=None)
    assert not store.is_completed(fp)  # expired
    assert store.begin(fp, method="POST", url=URL) is None
    record = store.get(fp)
    assert record is not None and record.state == "started" and record.status_code is None


def test_record_completed_joins_the_callers_transaction(
    store: IdempotencyStore, database_url: str, fresh_schema: str
) -> None:
    fp = _fp()
    with connect(database_url, schema=fresh_schema) as conn:
        store.record_completed(fp, method="GET", url=URL, conn=conn)
        assert store.is_completed(fp, conn=conn)  # visible inside the transaction …
        assert not store.is_completed(fp)  # … and nowhere else yet
        conn.rollback()
    assert store.get(fp) is None
    with connect(database_url, schema=fresh_schema) as conn:
        store.record_completed(fp, method="GET", url=URL, status_code=200, conn=conn)
        conn.commit()
    assert store.is_completed(fp)


def test_a_connection_factory_works_too(database_url: str, fresh_schema: str) -> None:
    opened: list[int] = []

    def factory() -> psycopg.Connection[Any]:
        opened.append(1)
        return connect(database_url, schema=fresh_schema)

    store = IdempotencyStore(connect=factory)
    store.record_completed(_fp(), method="POST", url=URL)
    assert store.is_completed(_fp())
    assert len(opened) == 2
    with pytest.raises(ValueError, match="database_url or a connect factory"):
        IdempotencyStore()


# -- the transport --------------------------------------------------------------------------------


class Upstream:
    """Counts what reaches the server and answers with a queue of statuses (then 200)."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        status = self.statuses.pop(0) if self.statuses else 200
        return httpx.Response(status, json={"n": len(self.seen)})

    @property
    def keys(self) -> list[str | None]:
        return [r.headers.get("Idempotency-Key") for r in self.seen]


def _client(
    upstream: Callable[[httpx.Request], httpx.Response], store: IdempotencyStore
) -> httpx.Client:
    return httpx.Client(transport=IdempotencyTransport(httpx.MockTransport(upstream), store))


def _post(client: httpx.Client, amount: int = 500) -> httpx.Response:
    return client.post(URL, json={"amount": amount, "currency": "usd"})


def test_post_gets_the_fingerprints_key_and_a_completed_post_is_not_sent_again(
    store: IdempotencyStore,
) -> None:
    upstream = Upstream()
    with _client(upstream, store) as client:
        first = _post(client)
        assert first.status_code == 200 and first.json() == {"n": 1}
        request = upstream.seen[0]
        fp = fingerprint("POST", URL, body=request.content, headers=request.headers)
        assert upstream.keys == [idempotency_key_for(fp)]
        assert store.is_completed(fp)
        record = store.get(fp)
        assert record is not None
        assert record.response_digest == body_digest(first.content)

        again = _post(client)
    assert len(upstream.seen) == 1  # not sent again
    assert again.status_code == 200
    assert again.headers[REPLAY_HEADER] == "true"
    assert again.json() == {}


def test_a_resend_after_a_crash_carries_the_same_key(database_url: str, fresh_schema: str) -> None:
    upstream = Upstream(503)  # the first answer is a failure, so the request is re-sent
    for _ in range(2):  # two "processes": fresh store and transport objects each time
        with _client(upstream, IdempotencyStore(database_url, schema=fresh_schema)) as client:
            _post(client)
    assert len(upstream.seen) == 2
    assert upstream.keys[0] is not None and upstream.keys[0] == upstream.keys[1]


def test_a_lost_answer_is_recorded_as_failed_and_resent(store: IdempotencyStore) -> None:
    calls: list[str | None] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers.get("Idempotency-Key"))
        if len(calls) == 1:
            raise httpx.ReadTimeout("lost", request=request)
        return httpx.Response(201, json={})

    with _client(flaky, store) as client:
        with pytest.raises(httpx.ReadTimeout):
            _post(client)
        request_fp = fingerprint("POST", URL, body=b'{"amount":500,"currency":"usd"}', headers=JSON)
        record = store.get(request_fp)
        assert record is not None and record.state == "failed"
        assert _post(client).status_code == 201
    assert calls[0] == calls[1] == idempotency_key_for(request_fp)
    assert store.is_completed(request_fp)


def test_different_bodies_are_different_operations(store: IdempotencyStore) -> None:
    upstream = Upstream()
    with _client(upstream, store) as client:
        _post(client, 500)
        _post(client, 501)
    assert len(upstream.seen) == 2
    assert upstream.keys[0] != upstream.keys[1]


def test_get_passes_through_untouched(store: IdempotencyStore) -> None:
    upstream = Upstream()
    with _client(upstream, store) as client:
        client.get(URL)
        client.get(URL)
    assert upstream.keys == [None, None]


def test_a_callers_own_key_is_kept_and_distinguishes_operations(store: IdempotencyStore) -> None:
    upstream = Upstream()
    with _client(upstream, store) as client:
        for key in ("k-1", "k-1", "k-2"):
            client.post(URL, json={"amount": 500}, headers={"Idempotency-Key": key})
    assert upstream.keys == ["k-1", "k-2"]  # the second k-1 was answered from the store


@pytest.mark.anyio
async def test_async_transport(store: IdempotencyStore) -> None:
    upstream = Upstream(500)
    transport = IdempotencyTransport(httpx.MockTransport(upstream), store)
    async with httpx.AsyncClient(transport=transport) as client:
        statuses = [(await client.post(URL, json={"a": 1})).status_code for _ in range(3)]
        replayed = await client.post(URL, json={"a": 1})
    assert statuses == [500, 200, 200]
    assert len(upstream.seen) == 2  # the third POST was answered from the store
    assert upstream.keys[0] == upstream.keys[1] is not None
    assert replayed.headers[REPLAY_HEADER] == "true"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_keys_reach_the_real_mock_api(store: IdempotencyStore, mock_api_url: str) -> None:
    """The mock API logs each request's Idempotency-Key; it serves no POST, so both are sent."""
    client_id = f"test-idem-{uuid.uuid4().hex}"
    transport = IdempotencyTransport(httpx.HTTPTransport(), store)
    with httpx.Client(
        base_url=mock_api_url, transport=transport, headers={"X-Client-Id": client_id}
    ) as client:
        statuses = [client.post("/rest/cursor/customers", json={"n": 1}).status_code for _ in "ab"]
        client.get("/rest/cursor/customers", params={"limit": 1})
    log = httpx.get(f"{mock_api_url}/_admin/requests", params={"client": client_id}).json()
    keys = [entry["idempotency_key"] for entry in log["requests"]]
    assert statuses == [405, 405]
    assert len(keys) == 3
    assert keys[0] is not None and keys[0] == keys[1]
    assert keys[2] is None


@pytest.fixture(scope="module")
def charges_server() -> Iterator[tuple[str, list[int]]]:
    """A real server with a side effect: each POST /charges makes a charge (gzip-encoded answer)."""
    made: list[int] = []
    app = FastAPI()
    app.add_middleware(GZipMiddleware, minimum_size=10)

    @app.post("/charges", status_code=201)
    async def create_charge(body: dict[str, Any]) -> dict[str, Any]:
        made.append(1)
        return {"id": f"ch_{len(made)}", "padding": "x" * 100, **body}

    with serve_in_thread(app) as url:
        yield url, made


def test_a_streamed_answer_over_a_socket_is_digested_and_still_readable(
    store: IdempotencyStore, charges_server: tuple[str, list[int]]
) -> None:
    url, made = charges_server
    before = len(made)
    transport = IdempotencyTransport(httpx.HTTPTransport(), store)
    with httpx.Client(base_url=url, transport=transport) as client:
        first = client.post("/charges", json={"amount": 1})
        assert first.headers["content-encoding"] == "gzip"
        assert first.json()["amount"] == 1  # decoded once, by the client
        assert first.elapsed.total_seconds() >= 0
        again = client.post("/charges", json={"amount": 1})
    assert len(made) == before + 1
    assert again.headers[REPLAY_HEADER] == "true"
    assert again.status_code == 201


@pytest.mark.anyio
async def test_async_streamed_answer_over_a_socket(
    store: IdempotencyStore, charges_server: tuple[str, list[int]]
) -> None:
    url, made = charges_server
    before = len(made)
    transport = IdempotencyTransport(httpx.AsyncHTTPTransport(), store)
    async with httpx.AsyncClient(base_url=url, transport=transport) as client:
        first = await client.post("/charges", json={"amount": 2})
        again = await client.post("/charges", json={"amount": 2})
    assert first.json()["amount"] == 2
    assert len(made) == before + 1
    assert again.headers[REPLAY_HEADER] == "true"
