"""Webhook senders for the receiver's acceptance tests and its benchmark: sign, deliver, retry, record.

A sender behaves like Stripe or a Standard Webhooks provider: every attempt is signed afresh with
the current timestamp, a connection error or a 5xx is retried (honouring ``Retry-After``), and a
delivery ends at its first 2xx — or at a 4xx, which no real sender retries either. Each delivery's
full history (every status, every transport error) is kept so a test can check what was
acknowledged against what PostgreSQL holds.

Signatures come partly from the vendors' own libraries (``stripe.WebhookSignature`` and
``standardwebhooks.Webhook``) and partly from ``ingest.webhooks.signature``'s ``sign`` methods,
so the receiver is shown to accept what real senders produce, not only what it signs itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from ingest.demo.webhooks import sdk_signature_headers
from ingest.sources.spec import WebhookSourceSpec
from ingest.webhooks.app import Source
from ingest.webhooks.signature import HmacSha256Scheme, StandardWebhooksScheme, StripeScheme

__all__ = [
    "HMAC_HEADER",
    "HMAC_TIMESTAMP_HEADER",
    "SCHEMES",
    "Answer",
    "Connection",
    "Delivery",
    "Load",
    "Outcome",
    "RetryPolicy",
    "SchemeName",
    "SenderSource",
    "TransportError",
    "make_deliveries",
    "signed_requests",
    "write_sources",
]

SchemeName = Literal["stripe", "standard-webhooks", "hmac-sha256"]
SCHEMES: tuple[SchemeName, ...] = ("stripe", "standard-webhooks", "hmac-sha256")

# The hmac-sha256 sources are GitHub-shaped (hex, "sha256=" prefix) plus a signed timestamp, so
# that they too can be stale and re-signed.
HMAC_HEADER = "X-Signature-256"
HMAC_TIMESTAMP_HEADER = "X-Webhook-Timestamp"
_EVENT_TYPES = ("invoice.paid", "customer.created", "charge.refunded", "payout.failed")


def _compact(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class SenderSource:
    """A webhook source as its sender knows it: the name, the scheme and the shared secret."""

    name: str
    scheme: SchemeName
    secret: str
    secrets_env: str
    tolerance_seconds: int = 300

    @classmethod
    def new(cls, scheme: SchemeName, *, tolerance_seconds: int = 300) -> SenderSource:
        """A source with a unique name, secret and secret variable (so test runs never collide)."""
        tag = uuid.uuid4().hex[:10]
        prefix = {"stripe": "st", "standard-webhooks": "sw", "hmac-sha256": "hm"}[scheme]
        if scheme == "standard-webhooks":
            secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        elif scheme == "stripe":
            secret = "whsec_" + secrets.token_hex(16)
        else:
            secret = secrets.token_urlsafe(24)
        return cls(
            name=f"{prefix}_{tag}",
            scheme=scheme,
            secret=secret,
            secrets_env=f"INGEST_TEST_WEBHOOK_SECRET_{tag.upper()}",
            tolerance_seconds=tolerance_seconds,
        )

    def spec(self) -> dict[str, Any]:
        """The source's YAML mapping (``kind: webhook``); the secret stays in the environment."""
        spec: dict[str, Any] = {
            "name": self.name,
            "kind": "webhook",
            "scheme": self.scheme,
            "secrets_env": self.secrets_env,
            "tolerance_seconds": self.tolerance_seconds,
        }
        if self.scheme == "hmac-sha256":
            spec |= {
                "signature": {
                    "header": HMAC_HEADER,
                    "encoding": "hex",
                    "prefix": "sha256=",
                    "timestamp_header": HMAC_TIMESTAMP_HEADER,
                },
                "event_id": "/id",
                "event_type": "/type",
            }
        return spec

    def environ(self) -> dict[str, str]:
        """The environment variable the receiver reads the secret from."""
        return {self.secrets_env: self.secret}

    def receiver_source(self) -> Source:
        """The receiver's view of this source, for ``create_app(sources=...)``."""
        spec = WebhookSourceSpec.model_validate(self.spec())
        return Source(spec, spec.create_scheme(self.environ()))

    def body(self, event_id: str, n: int) -> bytes:
        """The JSON body of event number ``n``, shaped the way this kind of sender shapes it."""
        event_type = _EVENT_TYPES[n % len(_EVENT_TYPES)]
        data = {"object": {"id": f"obj_{n}", "amount": n * 100 % 99_991, "currency": "eur"}}
        if self.scheme == "standard-webhooks":  # the id travels in the webhook-id header
            return _compact({"type": event_type, "data": data})
        return _compact({"id": event_id, "object": "event", "type": event_type, "data": data})

    def sign(self, event_id: str, body: bytes, timestamp: int, *, sdk: bool) -> dict[str, str]:
        """The signature headers for one attempt; ``sdk`` uses the vendor's library to sign."""
        if self.scheme == "stripe":
            if sdk:
                return sdk_signature_headers("stripe", self.secret, event_id, body, timestamp)
            return StripeScheme([self.secret]).sign(body, timestamp=timestamp)
        if self.scheme == "standard-webhooks":
            if sdk:
                return sdk_signature_headers(
                    "standard-webhooks", self.secret, event_id, body, timestamp
                )
            return StandardWebhooksScheme([self.secret]).sign(
                body, msg_id=event_id, timestamp=timestamp
            )
        scheme = HmacSha256Scheme(
            [self.secret],
            header=HMAC_HEADER,
            prefix="sha256=",
            timestamp_header=HMAC_TIMESTAMP_HEADER,
        )
        return scheme.sign(body, timestamp=timestamp)


def write_sources(sources: Iterable[SenderSource], directory: Path) -> Path:
    """Write the sources as ``directory/webhooks.yaml`` (an ``INGEST_SOURCES_DIR``); return the dir."""
    directory.mkdir(parents=True, exist_ok=True)
    document = {"sources": [source.spec() for source in sources]}
    (directory / "webhooks.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return directory


@dataclass(frozen=True)
class Delivery:
    """One event as a sender delivers it; duplicates of an event are further ``Delivery`` objects
    with the same source, id and body (a re-delivery is the same event, signed again)."""

    source: SenderSource
    event_id: str
    body: bytes
    sdk: bool = False  # sign with the vendor's library instead of ingest's

    @property
    def key(self) -> tuple[str, str]:
        """``(source, event_id)``: the receiver's unique key."""
        return (self.source.name, self.event_id)

    @property
    def path(self) -> str:
        return f"/webhooks/{self.source.name}"

    def headers(self, timestamp: int) -> dict[str, str]:
        """Content type and signature headers for an attempt at ``timestamp`` (Unix seconds)."""
        signed = self.source.sign(self.event_id, self.body, timestamp, sdk=self.sdk)
        return {"Content-Type": "application/json", **signed}


def make_deliveries(
    sources: Sequence[SenderSource], count: int, *, start: int = 0
) -> list[Delivery]:
    """``count`` distinct events numbered from ``start``, dealt round-robin over ``sources``.

    Events of the stripe and standard-webhooks sources alternate between the vendor's signer and
    ingest's, so both kinds of signature arrive interleaved under load.
    """
    deliveries = []
    for n in range(start, start + count):
        source = sources[n % len(sources)]
        prefix = "msg" if source.scheme == "standard-webhooks" else "evt"
        event_id = f"{prefix}_{n:07d}_{source.name}"
        sdk = source.scheme != "hmac-sha256" and (n // len(sources)) % 2 == 0
        deliveries.append(Delivery(source, event_id, source.body(event_id, n), sdk=sdk))
    return deliveries


def signed_requests(
    deliveries: Iterable[Delivery], timestamp: int
) -> Iterator[tuple[Delivery, dict[str, str]]]:
    """Each delivery with its headers signed at ``timestamp``: for pre-generated load (wrk)."""
    for delivery in deliveries:
        yield delivery, delivery.headers(timestamp)


@dataclass(frozen=True)
class RetryPolicy:
    """How a sender retries. ``retry=False`` makes exactly one attempt per delivery."""

    retry: bool = True
    deadline_seconds: float = 120.0  # per delivery: give up (and say so) after this long
    reconnect_initial: float = 0.05  # after a connection error, wait this, doubling ...
    reconnect_max: float = 1.0  # ... up to this
    retry_after_max: float = 5.0  # a Retry-After larger than this is capped
    retry_after_default: float = 1.0  # a 5xx without Retry-After


@dataclass
class Outcome:
    """What happened to one delivery, attempt by attempt."""

    delivery: Delivery
    statuses: list[int] = field(default_factory=list)  # every HTTP answer, in order
    retry_after: list[str | None] = field(default_factory=list)  # the header of every 503
    transport_errors: list[str] = field(default_factory=list)  # what each failed attempt met
    answer: dict[str, Any] | None = None  # the JSON of the final 2xx
    answered_at: float | None = None  # time.monotonic() when the final 2xx arrived
    gave_up: bool = False

    @property
    def final(self) -> int | None:
        return self.statuses[-1] if self.statuses else None

    @property
    def acked(self) -> bool:
        """True once the receiver answered 2xx: from then on the event must be durable."""
        return self.final is not None and 200 <= self.final < 300


class TransportError(Exception):
    """The connection failed before a complete answer arrived (refused, reset, cut, timed out)."""


@dataclass(frozen=True)
class Answer:
    """A complete HTTP response."""

    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    """One keep-alive HTTP/1.1 connection to the receiver, opened on first use and after a failure.

    A load generator must not be what limits the load: on this workload httpx's client spends
    more than a millisecond of CPU per request, about what the receiver itself spends, while this
    minimal client (fixed request shape, strict response parsing) spends a tenth of that.
    """

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"need http://host:port, not {base_url!r}")
        self.host, self.port, self.timeout = parts.hostname, parts.port, timeout
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        """Send one POST and read its complete answer; ``TransportError`` if the connection fails."""
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await self._open()
                writer.write(self._request(path, body, headers))
                await writer.drain()
                answer = await self._read(reader)
        except (OSError, EOFError, TimeoutError, ValueError, asyncio.LimitOverrunError) as exc:
            await self.close()
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        if answer.headers.get("connection", "").lower() == "close":
            await self.close()
        return answer

    async def close(self) -> None:
        streams, self._streams = self._streams, None
        if streams is not None:
            streams[1].close()
            with contextlib.suppress(OSError):
                await streams[1].wait_closed()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        return self._streams

    def _request(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> Answer:
        # IncompleteReadError (an EOFError) when the server goes away mid-answer.
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        version, status, _ = head[0].split(" ", 2)
        if not version.startswith("HTTP/1."):
            raise ValueError(f"not an HTTP/1.x status line: {head[0]!r}")
        headers: dict[str, str] = {}
        for line in head[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                body += await reader.readexactly(size)
                await reader.readexactly(2)
            await reader.readuntil(b"\r\n")  # no trailers are sent to us
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:
            raise ValueError("an answer without Content-Length or chunked encoding")
        return Answer(int(status), headers, body)


def _retry_after(answer: Answer, policy: RetryPolicy) -> float:
    value = answer.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return policy.retry_after_default
    if not math.isfinite(seconds) or seconds < 0:
        return policy.retry_after_default
    return min(seconds, policy.retry_after_max)


class Load:
    """``senders`` concurrent senders working through ``deliveries`` against one receiver.

    ``acked``, ``outcomes`` and ``progress`` are updated live, so a test can act (kill the
    receiver, stop PostgreSQL) when the load has reached a given point.
    """

    def __init__(
        self,
        base_url: str,
        deliveries: Sequence[Delivery],
        *,
        senders: int = 50,
        clock: Callable[[], float] = time.time,
        policy: RetryPolicy | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url
        self.deliveries = list(deliveries)
        self.senders = senders
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.timeout = timeout
        self.outcomes: list[Outcome] = []
        self.acked: set[tuple[str, str]] = set()
        self.progress = 0  # deliveries finished (acknowledged, refused or given up)
        self.attempts = 0
        self.answered: Counter[int] = Counter()  # statuses of every attempt so far, live

    async def run(self) -> Load:
        """Deliver everything; return ``self`` with every outcome recorded."""
        queue = iter(self.deliveries)
        await asyncio.gather(*(self._sender(queue) for _ in range(self.senders)))
        return self

    async def _sender(self, queue: Iterator[Delivery]) -> None:
        # Each sender has its own connection, as independent senders do. They share the
        # iterator, which is safe on one event loop.
        connection = Connection(self.base_url, self.timeout)
        try:
            for delivery in queue:
                outcome = await self.deliver(connection, delivery)
                self.outcomes.append(outcome)
                if outcome.acked:
                    self.acked.add(delivery.key)
                self.progress += 1
        finally:
            await connection.close()

    async def deliver(self, connection: Connection, delivery: Delivery) -> Outcome:
        """Send ``delivery`` until a 2xx or a 4xx (or once, without retry); re-sign every attempt."""
        policy, outcome = self.policy, Outcome(delivery)
        deadline = time.monotonic() + policy.deadline_seconds
        reconnect = policy.reconnect_initial
        while True:
            self.attempts += 1
            headers = delivery.headers(int(self.clock()))
            try:
                answer = await connection.post(delivery.path, delivery.body, headers)
            except TransportError as exc:
                outcome.transport_errors.append(str(exc))
                wait, reconnect = reconnect, min(policy.reconnect_max, reconnect * 2)
            else:
                outcome.statuses.append(answer.status)
                self.answered[answer.status] += 1
                if answer.status == 503:
                    outcome.retry_after.append(answer.headers.get("retry-after"))
                if answer.is_success:
                    outcome.answer = answer.json()
                    outcome.answered_at = time.monotonic()
                    return outcome
                if answer.status < 500:
                    return outcome
                wait = _retry_after(answer, policy)
            if not policy.retry or time.monotonic() + wait > deadline:
                outcome.gave_up = True
                return outcome
            await asyncio.sleep(wait)

    # -- summaries --------------------------------------------------------------------------

    def statuses(self) -> Counter[int]:
        """Every HTTP answer of every finished delivery's attempts, counted by status."""
        return Counter(status for outcome in self.outcomes for status in outcome.statuses)

    def answers(self) -> Counter[str]:
        """The final 2xx answers, counted by their ``status`` field (accepted / duplicate)."""
        return Counter(str(o.answer.get("status")) for o in self.outcomes if o.answer is not None)

    def unacked(self) -> list[Outcome]:
        """Deliveries that never got a 2xx."""
        return [outcome for outcome in self.outcomes if not outcome.acked]

    def transport_errors(self) -> int:
        return sum(len(outcome.transport_errors) for outcome in self.outcomes)

    def summary(self) -> str:
        """One line for assertion messages."""
        return (
            f"{self.progress}/{len(self.deliveries)} finished, {len(self.acked)} keys acked,"
            f" {self.attempts} attempts, statuses {dict(self.statuses())},"
            f" {self.transport_errors()} transport errors, {len(self.unacked())} unacked"
        )
