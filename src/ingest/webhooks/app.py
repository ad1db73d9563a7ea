"""The webhook receiver's app factory (wiring).

One request, in order: known source (404) → body within the limit (413) → signature over the raw
bytes (401) → JSON (400, raw body dead-lettered) → event id → bloom filter → durable write → 2xx.
The primitives come from the module 02 notebooks: ``signature`` (schemes), ``dedup`` (generational
bloom filter, confirmed against PostgreSQL) and ``inbox`` (group commit into ``webhook_events`` and
the outbox). A 2xx is only ever sent after the COMMIT that made the event durable; when PostgreSQL
cannot commit, the answer is 503 with ``Retry-After`` and the sender delivers again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache, partial
from typing import Any

import orjson
import psycopg
from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import ClientDisconnect
from starlette.routing import Route

from ingest.errors import ConfigError, DataError, IngestError
from ingest.settings import Settings, get_settings
from ingest.sources.spec import WebhookSourceSpec, load_sources
from ingest.state.db import connect
from ingest.state.dlq import REDACTED, DeadLetterQueue, is_secret
from ingest.webhooks.dedup import (
    Deduplicator,
    GenerationalBloom,
    event_id_for,
    rebuild_from_postgres,
)
from ingest.webhooks.inbox import DatabaseUnavailable, GroupCommitter, InboundEvent
from ingest.webhooks.signature import SignatureError, SignatureScheme, _json_pointer

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "MAX_EVENT_ID_LENGTH",
    "ReceiverConfig",
    "Source",
    "create_app",
    "webhook_sources",
]

_log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 1 << 20  # Stripe's events are a few KiB; GitHub caps payloads at 25 MB
# Senders' ids are short (Stripe's `evt_…` ~30 characters). PostgreSQL cannot index a key over
# ~2.7 kB, and a row it cannot store must be bad input (400), never an outage (503, retried for days).
MAX_EVENT_ID_LENGTH = 512
_UNKNOWN = "unknown"  # the metrics label for sources that are not configured (bounded cardinality)


@dataclass(frozen=True)
class Source:
    """A configured webhook source, ready to verify: its spec and its scheme with the secrets."""

    spec: WebhookSourceSpec
    scheme: SignatureScheme


@dataclass
class ReceiverConfig:
    """What the receiver needs beyond ``Settings``; tests inject clocks and sizes here."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    bloom_capacity: int = 1_000_000  # events per generation (a day by default) at 0.1 %
    clock: Callable[[], float] = time.time
    committer_options: Mapping[str, Any] | None = None


def webhook_sources(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> dict[str, Source]:
    """The webhook sources in ``settings.sources_dir`` with their schemes (secrets from the environment).

    A missing secret variable is a configuration error, raised here at start-up rather than as a
    401 for every delivery.
    """
    env = dict(os.environ if environ is None else environ)
    if not settings.sources_dir.exists():
        return {}
    specs = load_sources(settings.sources_dir)
    return {
        name: Source(spec, spec.create_scheme(env))
        for name, spec in specs.items()
        if isinstance(spec, WebhookSourceSpec)
    }


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "ingest_webhook_events",
            "Webhook deliveries by source and result.",
            ["source", "result"],
            registry=registry,
        )
        self.latency = Histogram(
            "ingest_webhook_request_seconds",
            "Time from request to answer, by source and result.",
            ["source", "result"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def children(self, source: str, result: str) -> tuple[Counter, Histogram]:
        """The labelled metrics of one (source, result), looked up once rather than per request."""
        key = (source, result)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = (
                self.events.labels(source=source, result=result),
                self.latency.labels(source=source, result=result),
            )
        return found


class _DedupCollector(Collector):
    """The bloom filter's and the group commit's own counters, read at scrape time."""

    def __init__(self, dedup: Deduplicator, committer: GroupCommitter) -> None:
        self.dedup, self.committer = dedup, committer

    def collect(self) -> Iterator[Metric]:
        d = self.dedup
        counters = {
            "ingest_webhook_bloom_checks": ("Bloom filter lookups.", d.checks),
            "ingest_webhook_bloom_hits": ('Bloom filter "maybe seen" answers.', d.hits),
            "ingest_webhook_bloom_false_positives": (
                '"Maybe seen" answers that PostgreSQL did not confirm: new events, not dropped.',
                d.false_positives,
            ),
            "ingest_webhook_duplicates_confirmed": (
                "Duplicates confirmed against the durable unique key.",
                d.confirmed_duplicates + d.missed_duplicates,
            ),
            "ingest_webhook_commits": (
                "Transactions that committed webhook events (group commit).",
                self.committer.stats.transactions,
            ),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily(
            "ingest_webhook_bloom_bytes",
            "Memory held by the bloom filter.",
            value=d.bloom.size_bytes,
        )


# Senders send the same dozen header names on every delivery: decide once per name, not per request.
_secret_name = lru_cache(maxsize=1024)(is_secret)


def _redacted(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names lower-cased, secret values (signatures, tokens) replaced, as the DLQ does."""
    return {name.lower(): REDACTED if _secret_name(name) else v for name, v in headers.items()}


def _answer(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _unavailable(retry_after: float) -> JSONResponse:
    seconds = str(max(1, math.ceil(retry_after)))
    return _answer(503, "temporarily unable to store events", {"Retry-After": seconds})


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes without reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _event_type(payload: Any, pointer: str | None) -> str | None:
    """The event type at ``pointer`` (``/type``), if the body has a string there."""
    if pointer is None:
        return None
    try:
        # The signature module's RFC 6901 resolver, the one that finds hmac-sha256 event ids.
        node = _json_pointer(payload, pointer)
    except LookupError:
        return None
    return node if isinstance(node, str) else None


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Stored durably (new), or a duplicate of a stored event."},
    400: {"description": "Authentic, but not JSON; the raw body is kept as a dead letter."},
    401: {"description": "Missing, malformed, wrong or stale signature."},
    404: {"description": "No webhook source of that name."},
    413: {"description": "Body over the receiver's limit."},
    503: {"description": "PostgreSQL cannot commit now; retry after `Retry-After` seconds."},
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema of the app, plus the webhook route it does not see (a Starlette route)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        schema["paths"]["/webhooks/{source}"] = {
            "post": {
                "summary": "Receive one signed webhook delivery.",
                "operationId": "receive_webhook",
                "parameters": [
                    {
                        "name": "source",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "title": "Source"},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {
                    str(status): {
                        **spec,
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                    for status, spec in _RESPONSES.items()
                },
            }
        }
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(
    settings: Settings | None = None,
    *,
    sources: Mapping[str, Source] | None = None,
    config: ReceiverConfig | None = None,
) -> FastAPI:
    """The receiver, configured by ``settings`` (default: ``get_settings()``).

    ``sources`` defaults to the webhook sources of ``settings.sources_dir``. The inbox writer,
    the bloom filter (rebuilt from PostgreSQL) and the metrics live as long as the app.
    """
    cfg = settings or get_settings()
    options = config or ReceiverConfig()
    configured = dict(sources) if sources is not None else webhook_sources(cfg)
    if not cfg.database_url:
        raise ConfigError("the receiver needs PostgreSQL: set INGEST_DATABASE_URL")
    database_url: str = cfg.database_url
    registry = CollectorRegistry()
    metrics = _Metrics(registry)
    dedup = Deduplicator(GenerationalBloom(options.bloom_capacity, clock=options.clock))
    committer = GroupCommitter(
        database_url, schema=cfg.db_schema, **dict(options.committer_options or {})
    )
    registry.register(_DedupCollector(dedup, committer))
    dlq = DeadLetterQueue(database_url, schema=cfg.db_schema)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(_rebuild, dedup, database_url, cfg.db_schema)
        await committer.start()
        try:
            yield
        finally:
            await committer.aclose()

    app = FastAPI(
        title="ingest webhook receiver",
        version="0.1.0",
        summary="Verifies, deduplicates and durably stores signed webhook deliveries.",
        lifespan=lifespan,
    )
    app.state.registry = registry
    app.state.settings = cfg
    app.state.dedup = dedup
    app.state.committer = committer

    @app.get("/healthz", summary="The process is up.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="PostgreSQL answers: deliveries can be made durable.",
        responses={503: {"description": "PostgreSQL is unreachable."}},
    )
    async def readyz() -> JSONResponse:
        try:
            await asyncio.to_thread(_ping_database, database_url)
        except psycopg.Error:
            return JSONResponse(
                {"status": "unavailable", "reason": "database unreachable"}, status_code=503
            )
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", summary="Prometheus metrics.")
    async def prometheus() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def receive(request: Request) -> Response:
        started = time.perf_counter()
        source: str = request.path_params["source"]
        known = configured.get(source)
        label = source if known is not None else _UNKNOWN
        result, response = await _receive(request, source, known)
        events, latency = metrics.children(label, result)
        events.inc()
        latency.observe(time.perf_counter() - started)
        return response

    # The hot path is a plain Starlette route: FastAPI's parameter solving and validation cost
    # ~15% of a delivery's CPU and this endpoint takes nothing it would validate (the raw body is
    # the point). It is described in the OpenAPI schema by hand, below.
    app.router.routes.append(Route("/webhooks/{source}", receive, methods=["POST"]))
    app.openapi = partial(_openapi, app)  # type: ignore[method-assign]

    async def _receive(
        request: Request, name: str, source: Source | None
    ) -> tuple[str, JSONResponse]:
        if source is None:
            return "unknown_source", _answer(404, "unknown source")
        try:
            body = await _read_body(request, options.max_body_bytes)
        except _TooLarge:
            return "too_large", _answer(413, "body too large")
        except ClientDisconnect:
            # The sender gave up mid-body: nothing to verify or store, and nobody to answer.
            return "client_disconnected", _answer(400, "client disconnected")
        now = datetime.fromtimestamp(options.clock(), UTC)
        try:
            source.scheme.verify(request.headers, body, now=now)
        except SignatureError as exc:
            return "unauthorized", _answer(401, exc.reason)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return await _dead_letter(name, request, body, "body is not valid JSON")
        event_id = event_id_for(source.scheme, request.headers, body)
        if len(event_id) > MAX_EVENT_ID_LENGTH or "\x00" in event_id:
            return await _dead_letter(
                name,
                request,
                body,
                f"event id unusable: over {MAX_EVENT_ID_LENGTH} characters or NUL",
                result="bad_event_id",
            )
        try:
            if dedup.check(name, event_id):
                duplicate = await committer.exists(name, event_id)
                dedup.record_confirmation(duplicate=duplicate)
                if duplicate:
                    return "duplicate", JSONResponse({"status": "duplicate", "id": event_id})
            event = InboundEvent(
                source=name,
                event_id=event_id,
                event_type=_event_type(payload, source.spec.event_type_pointer),
                headers=_redacted(request.headers),
                payload=body,
                received_at=now,
            )
            inserted = await committer.write(event)
        except DatabaseUnavailable as exc:
            return "unavailable", _unavailable(exc.retry_after)
        except DataError as exc:
            # Authentic JSON that PostgreSQL's jsonb refuses (a \u0000 in a string, say).
            return await _dead_letter(
                name, request, body, f"body cannot be stored: {exc}", result="unstorable"
            )
        if not inserted:
            dedup.record_missed_duplicate()
            return "duplicate", JSONResponse({"status": "duplicate", "id": event_id})
        dedup.remember(name, event_id, at=now.timestamp())
        return "accepted", JSONResponse({"status": "accepted", "id": event_id})

    async def _dead_letter(
        name: str, request: Request, body: bytes, reason: str, result: str = "invalid_json"
    ) -> tuple[str, JSONResponse]:
        try:
            await asyncio.to_thread(
                dlq.put,
                source=name,
                kind="webhook",
                reason=reason,
                error_class="DataError",
                payload=body,
                context={"headers": _redacted(request.headers)},
            )
        except (psycopg.Error, IngestError):
            # Not kept yet: the sender must try again rather than hear "bad request" and drop it.
            return "unavailable", _unavailable(1.0)
        return result, _answer(400, reason.split(":")[0])

    return app


def _rebuild(dedup: Deduplicator, database_url: str, schema: str) -> None:
    """Refill the bloom filter from the events of its window, so a restart opens no hole.

    Without PostgreSQL the receiver still starts with an empty filter: every delivery is then
    checked by the unique key on insert, which is slower for duplicates but never wrong.
    """
    try:
        with connect(database_url, schema=schema) as conn:
            loaded = rebuild_from_postgres(dedup, conn)
    except (psycopg.Error, IngestError) as exc:
        _log.warning("bloom filter not rebuilt (starting empty): %s", exc)
        return
    _log.info("bloom filter rebuilt from %d stored events", loaded)


def _ping_database(url: str) -> None:
    with psycopg.connect(url, connect_timeout=2) as conn:
        conn.execute("SELECT 1")
