"""The ASGI layer that counts, rate-limits and breaks data requests before the routes see them.

A plain ASGI middleware rather than ``BaseHTTPMiddleware``: ``drop`` needs to send the response
start and part of the body and then *not* finish, which only raw ``send`` allows. Uvicorn answers
an app that returns mid-body by closing the connection ("ASGI callable returned without completing
response"), so the client reads a ``Content-Length`` it never receives in full — httpx raises
``httpx.RemoteProtocolError`` ("peer closed connection without sending complete message body").

Order per request: count and log it → server-side rate limit (a rejection is not a fault and does
not advance the fault draw, so timing cannot change which requests fault) → fault decision →
answer.
"""

from __future__ import annotations

import asyncio
import time

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.mockapi.config import FaultKind
from ingest.mockapi.errors import error_body
from ingest.mockapi.faults import status_fault
from ingest.mockapi.state import MockState, RequestRecord

__all__ = ["EXEMPT_PREFIXES", "FaultMiddleware", "client_id", "is_exempt"]

# Never faulted, rate-limited or counted: control and health routes must stay reliable, and
# counting them would make "I sent 50 requests" assertions include the stats calls themselves.
EXEMPT_PREFIXES = ("/_admin", "/healthz", "/docs", "/redoc", "/openapi.json")


def is_exempt(path: str) -> bool:
    """True for routes that faults, rate limits and counters leave alone."""
    return any(path == p or path.startswith(p + "/") for p in EXEMPT_PREFIXES)


def client_id(scope: Scope) -> str:
    """``X-Client-Id`` if the client sent one, else its IP address."""
    header = Headers(scope=scope).get("x-client-id")
    if header:
        return header
    peer = scope.get("client")
    return str(peer[0]) if peer else "unknown"


def _path_and_query(scope: Scope) -> str:
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else str(scope["path"])
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    return f"{path}?{query}" if query else path


def _with_headers(message: Message, extra: dict[str, str]) -> Message:
    if not extra:
        return message
    headers = list(message.get("headers", []))
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
    return {**message, "headers": headers}


def _set_content_length(message: Message, length: int) -> Message:
    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"content-length"]
    headers.append((b"content-length", str(length).encode()))
    return {**message, "headers": headers}


async def _capture(app: ASGIApp, scope: Scope, receive: Receive) -> tuple[Message, bytes]:
    """Run ``app`` and return its response start message and whole body, unsent."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    assert start is not None, "the app returned without starting a response"
    return start, b"".join(chunks)


class FaultMiddleware:
    """Counts every data request, applies the rate limit and injects the configured faults."""

    def __init__(self, app: ASGIApp, state: MockState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        state = self.state
        # Read the config once: a PUT /_admin/config during this request's await must not
        # change how it is answered half-way.
        config = state.config
        client = client_id(scope)
        method = str(scope["method"])
        path = _path_and_query(scope)
        record = state.begin(
            client=client,
            method=method,
            path=path,
            idempotency_key=Headers(scope=scope).get("idempotency-key"),
        )

        extra: dict[str, str] = {}
        if state.limiter is not None:
            decision = state.limiter.check(client)
            extra = decision.headers(wall_now=time.time())
            if not decision.allowed:
                record.set_rate_limited()
                body = error_body("rate_limited", "rate limit exceeded")
                await self._answer(record, scope, receive, send, 429, extra, body)
                return

        kind = state.planner.decide((client, method, path))
        if kind is None:
            await self.app(scope, receive, self._recording_send(record, send, extra))
            return
        record.set_fault(kind)

        canned = status_fault(
            kind, retry_after=config.faults.retry_after_seconds, wall_now=time.time()
        )
        if canned is not None:
            body = error_body("injected_fault", canned.message, {"fault": kind.value})
            headers = {**extra, **canned.headers}
            await self._answer(record, scope, receive, send, canned.status, headers, body)
        elif kind is FaultKind.SLOW:
            # asyncio.sleep, not time.sleep: other requests keep being served meanwhile.
            await asyncio.sleep(config.faults.slow_seconds)
            await self.app(scope, receive, self._recording_send(record, send, extra))
        elif kind is FaultKind.TRUNCATED:
            start, body_bytes = await _capture(self.app, scope, receive)
            # Any strict prefix of a JSON object or array is invalid JSON.
            cut = body_bytes[: len(body_bytes) // 2]
            record.set_status(int(start["status"]))
            await send(_set_content_length(_with_headers(start, extra), len(cut)))
            await send({"type": "http.response.body", "body": cut, "more_body": False})
        elif kind is FaultKind.DROP:
            start, body_bytes = await _capture(self.app, scope, receive)
            # The original Content-Length announces the full body; half of it is all that comes.
            await send(_with_headers(start, extra))
            await send(
                {
                    "type": "http.response.body",
                    "body": body_bytes[: len(body_bytes) // 2],
                    "more_body": True,
                }
            )
            # Returning now, mid-body, makes uvicorn close the connection.
        else:  # pragma: no cover - every FaultKind is handled above
            raise AssertionError(f"unhandled fault kind {kind}")

    @staticmethod
    async def _answer(
        record: RequestRecord,
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        headers: dict[str, str],
        body: dict[str, object],
    ) -> None:
        # Counted before sending, so a client that reads /_admin/stats right after its answer
        # always finds its request accounted for.
        record.set_status(status)
        await JSONResponse(body, status_code=status, headers=headers)(scope, receive, send)

    @staticmethod
    def _recording_send(record: RequestRecord, send: Send, extra: dict[str, str]) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.set_status(int(message["status"]))
                message = _with_headers(message, extra)
            await send(message)

        return wrapped
