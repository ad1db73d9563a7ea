"""``ingest serve metrics``: a Prometheus exporter for the stack and the load log (wiring).

Each scrape asks the services and the state database afresh, so the numbers are never older than
the scrape. The freshness exporter of module 04 builds on the same load log.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg import sql

from ingest.settings import Settings, get_settings
from ingest.stack import probe

__all__ = ["StateCollector", "create_app"]


class StateCollector(Collector):
    """Service reachability and, per source, the time and size of the last successful load."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "ingest_service_up", "1 when the service answers a real request.", labels=["service"]
        )
        given = {
            "postgres": self.settings.database_url,
            "redis": self.settings.redis_url,
            "s3": self.settings.s3_endpoint_url,
        }
        for name, url in given.items():
            if url:
                ok, _ = probe(name, url, timeout=2.0)  # type: ignore[arg-type]
                up.add_metric([name], 1.0 if ok else 0.0)
        yield up
        last = GaugeMetricFamily(
            "ingest_source_last_success_timestamp_seconds",
            "Unix time at which the source's last successful run finished.",
            labels=["source"],
        )
        rows = GaugeMetricFamily(
            "ingest_source_last_rows_loaded",
            "Rows loaded by the source's last successful run.",
            labels=["source"],
        )
        if self.settings.database_url:
            query = sql.SQL(
                """SELECT DISTINCT ON (source) source, extract(epoch FROM finished_at), rows_loaded
                   FROM {}.load_log WHERE status = 'succeeded' ORDER BY source, finished_at DESC"""
            ).format(sql.Identifier(self.settings.db_schema))
            try:
                with psycopg.connect(self.settings.database_url, connect_timeout=2) as conn:
                    for source, finished, loaded in conn.execute(query).fetchall():
                        last.add_metric([source], float(finished))
                        rows.add_metric([source], float(loaded))
            except psycopg.Error:
                pass  # ingest_service_up{service="postgres"} already says why there is nothing here
        yield last
        yield rows


def create_app(settings: Settings | None = None) -> FastAPI:
    """A one-route app serving ``/metrics`` (and ``/healthz``)."""
    registry = CollectorRegistry()
    registry.register(StateCollector(settings or get_settings()))
    app = FastAPI(title="ingest metrics")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
