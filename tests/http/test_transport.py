"""`ingest.http.transport` (exported from notebooks/01-retry-client/01-httpx-basics.ipynb)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from ingest import errors
from ingest.http import transport
from ingest.http.transport import (
    WrappingTransport,
    error_for_response,
    map_transport_error,
    raise_for_status,
    redact_url,
    response_excerpt,
)

SECRET = "sk_live_do_not_log"
URL = f"https://api.example.com/v1/charges?api_key={SECRET}&limit=3"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_public_api() -> None:
    assert set(transport.__all__) >= {
        "WrappingTransport",
        "error_for_response",
        "map_transport_error",
        "raise_for_status",
        "redact_url",
        "response_excerpt",
    }


# -- messages -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://user:pw@api.example.com/v1/x?api_key=abc&limit=5",
            "https://api.example.com/v1/x?api_key=REDACTED&limit=5",
        ),
        (
            "https://b.s3.amazonaws.com/k.csv?X-Amz-Credential=AKIA&X-Amz-Signature=ab&x=1",
            "https://b.s3.amazonaws.com/k.csv?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&x=1",
        ),
        ("https://a.test/cb?code=xyz&state=s", "https://a.test/cb?code=REDACTED&state=s"),
        (
            "https://a.test/t?access_token=t1&sig=s1",
            "https://a.test/t?access_token=REDACTED&sig=REDACTED",
        ),
        # Nothing secret: printed exactly as sent, encoded cursor included.
        (
            "http://127.0.0.1/rest?cursor=a%2Fb&limit=2",
            "http://127.0.0.1/rest?cursor=a%2Fb&limit=2",
        ),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert redact_url(httpx.URL(url)) == expected


def test_response_excerpt_is_one_short_line() -> None:
    response = httpx.Response(500, text="<html>\n  <h1>Internal   error</h1>\n</html>")
    assert response_excerpt(response) == "<html> <h1>Internal error</h1> </html>"
    short = response_excerpt(response, limit=12)
    assert len(short) == 12 and short.endswith("…")
    assert short.startswith("<html> <h1>")
    assert response_excerpt(response, limit=0) == ""


def test_response_excerpt_does_not_consume_an_unread_stream() -> None:
    response = httpx.Response(500, stream=httpx.ByteStream(b"not read yet"))
    assert response_excerpt(response) == "<body not read>"
    assert response.read() == b"not read yet"


# -- statuses -----------------------------------------------------------------------------------


def _response(status: int, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("json", {"error": {"type": "demo", "message": "it broke"}})
    return httpx.Response(status, headers=headers, request=httpx.Request("GET", URL), **kwargs)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, None),
        (204, None),
        (301, None),
        (304, None),
        (400, errors.ClientError),
        (401, errors.ClientError),
        (404, errors.ClientError),
        (409, errors.ClientError),
        (422, errors.ClientError),
        (408, errors.ServerError),
        (425, errors.ServerError),
        (429, errors.RateLimited),
        (500, errors.ServerError),
        (501, errors.ServerError),
        (502, errors.ServerError),
        (503, errors.ServerError),
        (504, errors.ServerError),
    ],
)
def test_error_for_response_classes(status: int, expected: type[errors.IngestError] | None) -> None:
    error = error_for_response(_response(status))
    if expected is None:
        assert error is None
        return
    assert type(error) is expected
    assert error is not None and error.status_code == status
    assert errors.is_transient(error) is (expected is not errors.ClientError)


def test_error_message_names_the_request_without_its_secret() -> None:
    error = error_for_response(_response(404))
    assert error is not None
    message = str(error)
    assert message.startswith("GET https://api.example.com/v1/charges?api_key=REDACTED&limit=3")
    assert "404 Not Found" in message
    assert message.endswith('{"error":{"type":"demo","message":"it broke"}}')
    assert SECRET not in message


def test_error_message_excerpt_is_short() -> None:
    error = error_for_response(_response(500, json=None, text="x" * 5000))
    assert error is not None
    assert len(str(error)) < 400


def test_error_for_a_response_that_was_never_sent() -> None:
    error = error_for_response(httpx.Response(503, text="down"))
    assert error is not None and "<unknown request>" in str(error)


@pytest.mark.parametrize("status", [429, 503])
def test_transient_errors_carry_the_servers_wait_hint(status: int) -> None:
    seconds = error_for_response(_response(status, {"Retry-After": "7"}))
    assert seconds is not None and seconds.retry_after == 7.0
    date = format_datetime(NOW + timedelta(seconds=30), usegmt=True)
    dated = error_for_response(_response(status, {"Retry-After": date}), now=NOW)
    assert dated is not None and dated.retry_after == 30.0
    none = error_for_response(_response(status))
    assert none is not None and none.retry_after is None


def test_raise_for_status() -> None:
    ok = _response(200)
    assert raise_for_status(ok) is ok
    with pytest.raises(errors.RateLimited) as caught:
        raise_for_status(_response(429, {"Retry-After": "2"}))
    assert caught.value.retry_after == 2.0
    with pytest.raises(errors.ClientError):
        raise_for_status(_response(403))


# -- exceptions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("httpx_error", "expected"),
    [
        (httpx.ConnectError, errors.ConnectError),
        (httpx.RemoteProtocolError, errors.ConnectError),
        (httpx.ReadError, errors.ConnectError),
        (httpx.WriteError, errors.ConnectError),
        (httpx.PoolTimeout, errors.ConnectError),
        (httpx.ProxyError, errors.ConnectError),
        (httpx.ConnectTimeout, errors.ReadTimeout),
        (httpx.ReadTimeout, errors.ReadTimeout),
        (httpx.WriteTimeout, errors.ReadTimeout),
        (httpx.DecodingError, errors.DecodeError),
        (httpx.UnsupportedProtocol, errors.ConfigError),
        (httpx.LocalProtocolError, errors.ConfigError),
        (httpx.TooManyRedirects, errors.ConfigError),
        (httpx.NetworkError, errors.TransportError),
    ],
)
def test_map_transport_error(
    httpx_error: type[httpx.RequestError], expected: type[errors.IngestError]
) -> None:
    exc = httpx_error("it failed", request=httpx.Request("POST", URL))
    mapped = map_transport_error(exc)
    assert type(mapped) is expected
    assert errors.is_transient(mapped) is (expected is not errors.ConfigError)
    message = str(mapped)
    assert httpx_error.__name__ in message and "it failed" in message
    assert "POST https://api.example.com/v1/charges?api_key=REDACTED" in message
    assert SECRET not in message


def test_map_transport_error_names_the_given_request_when_the_error_has_none() -> None:
    bare = map_transport_error(httpx.ConnectError("boom"))
    assert "<unknown request>" in str(bare)
    named = map_transport_error(httpx.ConnectError("boom"), request=httpx.Request("GET", URL))
    assert "GET https://api.example.com/v1/charges?api_key=REDACTED" in str(named)


def test_map_http_status_errors() -> None:
    response = _response(429, {"Retry-After": "3"})
    exc = httpx.HTTPStatusError("429", request=response.request, response=response)
    mapped = map_transport_error(exc)
    assert isinstance(mapped, errors.RateLimited) and mapped.retry_after == 3.0
    # httpx raises for a 3xx it did not follow; that is a terminal client-side problem.
    redirect = _response(302, {"Location": "/elsewhere"})
    exc = httpx.HTTPStatusError("302", request=redirect.request, response=redirect)
    mapped = map_transport_error(exc)
    assert isinstance(mapped, errors.ClientError) and mapped.status_code == 302
    assert "api_key=REDACTED" in str(mapped) and SECRET not in str(mapped)


# -- WrappingTransport --------------------------------------------------------------------------


class Probe(httpx.MockTransport):
    """Answers with the request's headers and remembers being closed."""

    def __init__(self) -> None:
        super().__init__(lambda request: httpx.Response(200, json=dict(request.headers)))
        self.closed = 0

    def close(self) -> None:
        self.closed += 1

    async def aclose(self) -> None:
        self.closed += 1


class Stamp(WrappingTransport):
    """A policy in the documented shape: adds a header (keeping one already set)."""

    def __init__(self, inner: httpx.BaseTransport | httpx.AsyncBaseTransport, value: str) -> None:
        super().__init__(inner)
        self.value = value

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.headers.setdefault("X-Stamp", self.value)
        return self.forward(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers.setdefault("X-Stamp", self.value)
        return await self.aforward(request)


def test_wrapping_transport_passes_through_and_closes_inner() -> None:
    probe = Probe()
    with httpx.Client(transport=WrappingTransport(WrappingTransport(probe))) as client:
        assert client.get("https://a.test/", headers={"X-A": "1"}).json()["x-a"] == "1"
    assert probe.closed == 1


def test_wrapping_transport_async_passes_through_and_closes_inner() -> None:
    probe = Probe()

    async def main() -> dict[str, str]:
        async with httpx.AsyncClient(transport=WrappingTransport(probe)) as client:
            body: dict[str, str] = (await client.get("https://a.test/")).json()
            return body

    assert "host" in asyncio.run(main())
    assert probe.closed == 1


def test_subclass_headers_reach_inner_and_stay_on_the_request() -> None:
    probe = Probe()
    outer = Stamp(Stamp(probe, "inner"), "outer")
    request = httpx.Request("GET", "https://a.test/")
    response = outer.handle_request(request)
    # The outermost layer set it first; the inner one kept it; the request object carries it.
    assert response.read() and json.loads(response.content)["x-stamp"] == "outer"
    assert request.headers["X-Stamp"] == "outer"

    async def main() -> httpx.Response:
        return await Stamp(probe, "async").handle_async_request(
            httpx.Request("GET", "https://a.test/")
        )

    assert json.loads(asyncio.run(main()).content)["x-stamp"] == "async"


def test_wrong_mode_is_a_clear_type_error() -> None:
    sync_only = WrappingTransport(httpx.HTTPTransport())
    with pytest.raises(TypeError, match="sync-only"):
        asyncio.run(sync_only.handle_async_request(httpx.Request("GET", "https://a.test/")))
    async_only = WrappingTransport(httpx.AsyncHTTPTransport())
    with pytest.raises(TypeError, match="async-only"):
        async_only.handle_request(httpx.Request("GET", "https://a.test/"))
    # Closing never touches the mode the inner transport does not have.
    sync_only.close()
    asyncio.run(async_only.aclose())


def test_repr_shows_the_stack() -> None:
    stack = Stamp(WrappingTransport(httpx.MockTransport(lambda r: httpx.Response(200))), "x")
    assert repr(stack).startswith("Stamp(WrappingTransport(<httpx.MockTransport")


# -- against the real mock API ------------------------------------------------------------------


@pytest.fixture
def mock_api(mock_api_url: str) -> Iterator[httpx.Client]:
    """The session's mock API, put back to fault-free afterwards for whoever comes next."""
    with httpx.Client(base_url=mock_api_url, timeout=10.0) as admin:
        yield admin
        admin.put("/_admin/config", json={}).raise_for_status()


def _fault(admin: httpx.Client, kind: str) -> httpx.Client:
    faults = {
        "rate": 1.0,
        "weights": {kind: 1},
        "retry_after_seconds": 1,
        "slow_seconds": 1.0,
    }
    admin.put("/_admin/config", json={"records": 20, "faults": faults}).raise_for_status()
    return httpx.Client(
        base_url=str(admin.base_url), headers={"X-Client-Id": f"t-{uuid.uuid4().hex}"}
    )


def _outcome(client: httpx.Client) -> errors.IngestError | httpx.Response:
    try:
        response = client.get("/rest/cursor/customers", params={"limit": 5}, timeout=0.3)
    except httpx.HTTPError as exc:
        return map_transport_error(exc)
    return error_for_response(response) or response


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("429", errors.RateLimited),
        ("429-date", errors.RateLimited),
        ("500", errors.ServerError),
        ("502", errors.ServerError),
        ("503", errors.ServerError),
        ("slow", errors.ReadTimeout),
        ("drop", errors.ConnectError),
    ],
)
def test_real_faults_map_to_transient_errors(
    mock_api: httpx.Client, kind: str, expected: type[errors.IngestError]
) -> None:
    with _fault(mock_api, kind) as client:
        outcome = _outcome(client)
    assert type(outcome) is expected
    assert errors.is_transient(outcome)
    if kind.startswith("429"):
        assert isinstance(outcome, errors.RateLimited)
        # delta-seconds "1", or an HTTP-date rounded up to the next whole second
        assert outcome.retry_after is not None and 0.0 < outcome.retry_after <= 2.0


def test_truncated_body_is_a_200_that_does_not_decode(mock_api: httpx.Client) -> None:
    with _fault(mock_api, "truncated") as client:
        outcome = _outcome(client)
    assert isinstance(outcome, httpx.Response) and outcome.status_code == 200
    with pytest.raises(ValueError):
        outcome.json()
