"""The webhook receiver's app factory (wiring).

Health, readiness and metrics are here from the start so the receiver can be deployed and probed;
``POST /webhooks/{source}`` answers 404 for any source not configured as a webhook source.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import psycopg
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from ingest.settings import Settings, get_settings

__all__ = ["SettingsDep", "create_app"]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(_settings)]


def create_app(settings: Settings | None = None) -> FastAPI:
    """The receiver, configured by ``settings`` (default: ``get_settings()``)."""
    app = FastAPI(title="ingest webhook receiver", version="0.1.0")
    registry = CollectorRegistry()
    events = Counter(
        "ingest_webhook_events",
        "Webhook deliveries by source and result.",
        ["source", "result"],
        registry=registry,
    )
    app.state.registry = registry
    app.state.settings = settings or get_settings()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(cfg: SettingsDep) -> JSONResponse:
        if not cfg.database_url:
            return JSONResponse(
                {"status": "unavailable", "reason": "no database configured"}, status_code=503
            )
        try:
            await asyncio.to_thread(_ping_database, cfg.database_url)
        except psycopg.Error:
            return JSONResponse(
                {"status": "unavailable", "reason": "database unreachable"}, status_code=503
            )
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/webhooks/{source}", status_code=202)
    async def receive(source: str) -> JSONResponse:
        events.labels(source="unknown", result="unknown_source").inc()
        return JSONResponse({"detail": "unknown source"}, status_code=404)

    return app


def _ping_database(url: str) -> None:
    with psycopg.connect(url, connect_timeout=2) as conn:
        conn.execute("SELECT 1")
