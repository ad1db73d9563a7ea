"""The dead-letter queue: the table (real PostgreSQL), redaction, and replays through a given client."""

from __future__ import annotations

import json
import uuid
from collections.abc import Generator, Iterator
from typing import Any

import httpx
import pytest

from ingest.errors import ServerError
from ingest.mockapi.app import create_app
from ingest.mockapi.config import MockConfig
from ingest.state.db import connect
from ingest.state.dlq import (
    REDACTED,
    DeadLetterQueue,
    is_secret,
    rebuild_request,
    redact_headers,
    replay,
    request_context,
)
from tests.support.servers import serve_in_thread

URL = "https://api.example.com/v1/customers"


@pytest.fixture
def dlq(database_url: str, fresh_schema: str) -> DeadLetterQueue:
    return DeadLetterQueue(database_url, schema=fresh_schema)


# -- the table ------------------------------------------------------------------------------------


def test_put_get_and_list(dlq: DeadLetterQueue) -> None:
    payload = bytes(range(256))  # arbitrary bytes survive untouched
    first = dlq.put(
        source="crm",
        kind="request",
        reason="HTTP 400",
        error_class="ClientError",
        payload=payload,
        context={"request": {"method": "POST"}, "n": [1, 2]},
        attempts=2,
    )
    second = dlq.put(source="files", kind="s3_row", reason="bad row", payload=None, context={})
    letter = dlq.get(first)
    assert letter is not None
    assert (letter.source, letter.kind, letter.reason, letter.error_class) == (
        "crm",
        "request",
        "HTTP 400",
        "ClientError",
    )
    assert letter.payload == payload
    assert letter.context == {"request": {"method": "POST"}, "n": [1, 2]}
    assert letter.attempts == 2
    assert letter.created_at is not None and not letter.resolved
    assert dlq.get(second + 1000) is None
    assert [d.id for d in dlq.list()] == [first, second]
    assert [d.id for d in dlq.list(source="files")] == [second]
    assert [d.id for d in dlq.list(limit=1)] == [first]


def test_list_hides_resolved_rows_unless_asked(dlq: DeadLetterQueue) -> None:
    a = dlq.put(source="s", kind="request", reason="r", payload=None, context={})
    b = dlq.put(source="s", kind="request", reason="r", payload=None, context={})
    assert dlq.mark_replayed(a, resolved=True)
    assert [d.id for d in dlq.list()] == [b]
    assert [d.id for d in dlq.list(unresolved_only=False)] == [a, b]
    assert not dlq.mark_replayed(b + 1000, resolved=True)


def test_mark_replayed_failure_keeps_the_row_and_records_the_error(dlq: DeadLetterQueue) -> None:
    id_ = dlq.put(source="s", kind="request", reason="original", payload=None, context={"k": 1})
    dlq.mark_replayed(id_, resolved=False, error="HTTP 500: still broken")
    letter = dlq.get(id_)
    assert letter is not None
    assert not letter.resolved and letter.replayed_at is not None
    assert letter.attempts == 2
    assert letter.reason == "original"
    assert letter.context == {"k": 1, "last_replay_error": "HTTP 500: still broken"}
    dlq.mark_replayed(id_, resolved=True)
    letter = dlq.get(id_)
    assert letter is not None and letter.resolved
    assert letter.context["last_replay_error"] is None


def test_put_joins_the_callers_transaction(
    dlq: DeadLetterQueue, database_url: str, fresh_schema: str
) -> None:
    with connect(database_url, schema=fresh_schema) as conn:
        dlq.put(source="s", kind="record", reason="r", payload=b"x", context={}, conn=conn)
        assert len(dlq.list(conn=conn)) == 1
        conn.rollback()
    assert dlq.list() == []


# -- redaction ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "Proxy-Authorization",
        "Cookie",
        "Set-Cookie",
        "X-Api-Key",
        "X-Auth-Token",
        "Stripe-Signature",
        "X-Client-Secret",
        "x-session-id",
        "api_key",
        "access_token",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret(name)


@pytest.mark.parametrize(
    "name", ["Idempotency-Key", "idempotency-key", "Content-Type", "Accept", "X-Client-Id", "limit"]
)
def test_names_that_are_not_secret(name: str) -> None:
    assert not is_secret(name)


def test_request_context_redacts_and_keeps_the_payload() -> None:
    body = b'{"name": "Ada", "password": "kept-in-the-payload"}'
    request = httpx.Request(
        "POST",
        "https://user:pw@api.example.com/v1/customers?limit=5&api_key=sk_live_1",
        content=body,
        headers={
            "Authorization": "Bearer sk_live_2",
            "Cookie": "session=sk_live_3",
            "X-Api-Key": "sk_live_4",
            "X-Upstream-Token": "sk_live_5",
            "Idempotency-Key": "create-ada-1",
            "Content-Type": "application/json",
        },
    )
    response = httpx.Response(
        422,
        headers={"Set-Cookie": "session=sk_live_6", "Content-Type": "application/json"},
        content=b'{"error": "' + b"x" * 5000 + b'"}',
        request=request,
    )
    captured = request_context(
        request, response, attempts=3, error=ServerError("boom", status_code=422)
    )
    text = json.dumps(captured.context)
    for n in range(1, 7):
        assert f"sk_live_{n}" not in text
    assert "user:pw" not in text
    stored = captured.context["request"]
    assert stored["method"] == "POST"
    assert stored["url"] == "https://api.example.com/v1/customers?limit=5&api_key=REDACTED"
    assert stored["headers"]["authorization"] == REDACTED
    assert stored["headers"]["x-upstream-token"] == REDACTED
    assert stored["headers"]["idempotency-key"] == "create-ada-1"
    assert stored["headers"]["content-type"] == "application/json"
    assert "host" not in stored["headers"] and "content-length" not in stored["headers"]
    assert captured.context["status_code"] == 422
    assert captured.context["attempts"] == 3
    assert captured.context["error"] == {"class": "ServerError", "message": "boom"}
    assert captured.context["response"]["headers"]["set-cookie"] == REDACTED
    assert len(captured.context["response"]["body_excerpt"]) == 2000
    assert captured.payload == body  # the body is kept as sent


def test_request_context_without_a_response_or_body() -> None:
    captured = request_context(httpx.Request("GET", URL), attempts=1, error="gave up")
    assert captured.payload is None
    assert captured.context["status_code"] is None
    assert "response" not in captured.context
    assert captured.context["error"] == {"class": None, "message": "gave up"}
    json.dumps(captured.context)  # JSON-able


def test_redact_headers_lowercases_names() -> None:
    assert redact_headers({"X-API-KEY": "a", "Accept": "b"}) == {
        "x-api-key": REDACTED,
        "accept": "b",
    }


# -- replay ---------------------------------------------------------------------------------------


class CountingUpstream:
    """Records what reaches it and answers with a queue of statuses (then 200)."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return httpx.Response(self.statuses.pop(0) if self.statuses else 200, text="answer")


class Token(httpx.Auth):
    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


def _dead_post(dlq: DeadLetterQueue, status: int = 503) -> int:
    request = httpx.Request(
        "POST",
        f"{URL}?api_key=secret-value&limit=5",
        json={"name": "Ada"},
        headers={
            "Authorization": "Bearer old",
            "X-Api-Key": "old",
            "Idempotency-Key": "k-1",
            "X-Custom": "kept",
            "X-Upstream-Token": "old",
            "User-Agent": "original-agent",
        },
    )
    response = httpx.Response(status, text="down", request=request)
    return dlq.put_request(source="crm", request=request, response=response, error=None, attempts=3)


def test_replay_success_resolves_the_row_and_goes_through_the_given_client(
    dlq: DeadLetterQueue,
) -> None:
    id_ = _dead_post(dlq)
    upstream = CountingUpstream(200)
    with httpx.Client(
        transport=httpx.MockTransport(upstream),
        auth=Token("fresh"),
        headers={"User-Agent": "replayer", "X-Api-Key": "client-key"},
    ) as client:
        assert replay(dlq, id_, client) is True
    [sent] = upstream.seen  # sent once, through this client's transport
    assert sent.method == "POST"
    assert str(sent.url) == f"{URL}?limit=5"  # the redacted parameter is left out
    assert sent.content == b'{"name":"Ada"}'
    assert sent.headers["authorization"] == "Bearer fresh"  # the client's own auth
    assert sent.headers["x-api-key"] == "client-key"
    assert sent.headers["user-agent"] == "replayer"  # the client's header wins over the stored one
    assert sent.headers["idempotency-key"] == "k-1"
    assert sent.headers["x-custom"] == "kept"
    assert "x-upstream-token" not in sent.headers  # redacted, and the client does not set it
    assert REDACTED not in str(sent.headers) + str(sent.url)
    letter = dlq.get(id_)
    assert letter is not None and letter.resolved and letter.replayed_at is not None
    assert dlq.list() == []
    with pytest.raises(ValueError, match="already resolved"):
        replay(dlq, id_, client)


def test_replay_failure_keeps_the_row(dlq: DeadLetterQueue) -> None:
    id_ = _dead_post(dlq)
    upstream = CountingUpstream(500)
    with httpx.Client(transport=httpx.MockTransport(upstream)) as client:
        assert replay(dlq, id_, client) is False
    letter = dlq.get(id_)
    assert letter is not None and not letter.resolved
    assert letter.replayed_at is not None
    assert letter.attempts == 4
    assert letter.context["last_replay_error"] == "HTTP 500: answer"
    assert [d.id for d in dlq.list()] == [id_]


def test_replay_records_an_error_the_stack_raises(dlq: DeadLetterQueue) -> None:
    id_ = _dead_post(dlq)

    def stack_gives_up(request: httpx.Request) -> httpx.Response:
        raise ServerError("503 after 5 attempts", status_code=503)

    with httpx.Client(transport=httpx.MockTransport(stack_gives_up)) as client:
        assert replay(dlq, id_, client) is False
    letter = dlq.get(id_)
    assert letter is not None and not letter.resolved
    assert letter.context["last_replay_error"] == "ServerError: 503 after 5 attempts"


def test_replay_refuses_what_it_cannot_replay(dlq: DeadLetterQueue) -> None:
    row = dlq.put(source="s", kind="s3_row", reason="bad", payload=b"a,b", context={})
    with httpx.Client(transport=httpx.MockTransport(CountingUpstream())) as client:
        with pytest.raises(ValueError, match="not a request"):
            replay(dlq, row, client)
        with pytest.raises(KeyError):
            replay(dlq, row + 1000, client)
        letter = dlq.get(row)
        assert letter is not None
        with pytest.raises(ValueError):
            rebuild_request(letter, client)


# -- against a real mock API ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def mock_api() -> Iterator[str]:
    """A mock API of this module's own: the test reconfigures it, which would disturb others."""
    with serve_in_thread(create_app(MockConfig(records=20))) as url:
        yield url


def test_exhausted_request_replayed_after_the_outage(dlq: DeadLetterQueue, mock_api: str) -> None:
    client_id = f"dlq-{uuid.uuid4().hex}"
    admin = httpx.Client(base_url=f"{mock_api}/_admin")
    outage: dict[str, Any] = {
        "records": 20,
        "faults": {"rate": 1.0, "weights": {"503": 1}, "max_consecutive_faults": None},
    }
    admin.put("/config", json=outage).raise_for_status()
    with httpx.Client(base_url=mock_api, headers={"X-Client-Id": client_id}) as client:
        answers = [client.get("/rest/cursor/customers", params={"limit": 2}) for _ in range(3)]
        assert {a.status_code for a in answers} == {503}
        id_ = dlq.put_request(
            source="crm", request=answers[-1].request, response=answers[-1], error=None, attempts=3
        )
        assert replay(dlq, id_, client) is False  # still down
        admin.put("/config", json={"records": 20}).raise_for_status()  # fixed
        assert replay(dlq, id_, client) is True
    log = admin.get("/requests", params={"client": client_id}).json()["requests"]
    assert [(e["path"], e["status"]) for e in log] == [("/rest/cursor/customers?limit=2", 200)]
    admin.close()
    letter = dlq.get(id_)
    assert letter is not None and letter.resolved and letter.attempts == 5
