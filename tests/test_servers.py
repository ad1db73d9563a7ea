"""The receiver and metrics apps as deployed: health, readiness, metrics over a real socket."""

from __future__ import annotations

import os
import uuid

import httpx
import psycopg
from psycopg import sql

from ingest.metrics_app import create_app as create_metrics_app
from ingest.netutil import free_port
from ingest.settings import Settings
from ingest.webhooks.app import create_app as create_receiver_app
from tests.support.servers import serve_in_thread


def _settings(**overrides: str) -> Settings:
    env = {k: v for k, v in os.environ.items() if k.startswith("INGEST_")}
    env.update({f"INGEST_{k.upper()}": v for k, v in overrides.items()})
    return Settings.from_environ(env)


def test_receiver_ready_only_when_postgres_answers() -> None:
    with serve_in_thread(create_receiver_app(_settings(), sources={})) as url:
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{url}/readyz").status_code == 200
        # Unknown sources are refused before anything is read or stored.
        assert httpx.post(f"{url}/webhooks/nope", content=b"{}").status_code == 404
        assert (
            'ingest_webhook_events_total{result="unknown_source",source="unknown"} 1.0'
            in httpx.get(f"{url}/metrics").text
        )
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    with serve_in_thread(create_receiver_app(_settings(database_url=dead), sources={})) as url:
        response = httpx.get(f"{url}/readyz")
        assert response.status_code == 503
        assert response.json()["reason"] == "database unreachable"
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_metrics_exporter_reports_services_and_last_loads(database_url: str) -> None:
    source = f"src_{uuid.uuid4().hex[:8]}"
    schema = os.environ["INGEST_DB_SCHEMA"]
    with psycopg.connect(database_url) as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.load_log (run_id, source, status, finished_at, rows_loaded) "
                "VALUES ('r1', %s, 'succeeded', to_timestamp(1700000000), 42)"
            ).format(sql.Identifier(schema)),
            (source,),
        )
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    with serve_in_thread(create_metrics_app(_settings(redis_url=dead_redis))) as url:
        text = httpx.get(f"{url}/metrics").text
    assert 'ingest_service_up{service="postgres"} 1.0' in text
    assert 'ingest_service_up{service="redis"} 0.0' in text
    assert f'ingest_source_last_success_timestamp_seconds{{source="{source}"}} 1.7e+09' in text
    assert f'ingest_source_last_rows_loaded{{source="{source}"}} 42.0' in text
