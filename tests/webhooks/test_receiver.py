"""The receiver over a real socket: what it accepts, what it refuses and with which status, what it keeps."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest
import standardwebhooks
import stripe
from psycopg import sql

from ingest.netutil import free_port
from ingest.settings import Settings
from ingest.sources.spec import WebhookSourceSpec
from ingest.webhooks.app import ReceiverConfig, Source, create_app
from tests.support.servers import serve_in_thread

NOW = 1_790_000_000  # the receiver's clock in these tests: fixed, so "stale" and "future" are exact
STRIPE_SECRETS = ["whsec_new", "whsec_old"]
SW_SECRET = "whsec_" + base64.b64encode(b"standard-webhooks-test-secret").decode()
GITHUB_SECRET = "gh-secret"


def _settings(**overrides: str) -> Settings:
    env = {k: v for k, v in os.environ.items() if k.startswith("INGEST_")}
    env.update({f"INGEST_{k.upper()}": v for k, v in overrides.items()})
    return Settings.from_environ(env)


def _source(name: str, scheme: str, secrets: list[str], **extra: Any) -> Source:
    spec = WebhookSourceSpec.model_validate(
        {"name": name, "kind": "webhook", "scheme": scheme, "secrets_env": "UNUSED", **extra}
    )
    return Source(spec, spec.create_scheme({"UNUSED": ",".join(secrets)}))


def _sources(stripe_secrets: list[str] = STRIPE_SECRETS) -> dict[str, Source]:
    return {
        "payments": _source("payments", "stripe", stripe_secrets),
        "svix": _source("svix", "standard-webhooks", [SW_SECRET]),
        "github": _source(
            "github",
            "hmac-sha256",
            [GITHUB_SECRET],
            signature={"header": "X-Hub-Signature-256", "prefix": "sha256="},
            event_id="X-GitHub-Delivery",
        ),
    }


class Receiver:
    """A served receiver and a view of its state schema."""

    def __init__(self, url: str, database_url: str, schema: str, app: Any) -> None:
        self.url, self.database_url, self.schema, self.app = url, database_url, schema, app

    def post(self, source: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{self.url}/webhooks/{source}", content=body, headers=headers)

    def rows(self, table: str, columns: str = "source, event_id") -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url) as conn:
            query = sql.SQL("SELECT {} FROM {} ORDER BY 1, 2").format(
                sql.SQL(columns), sql.Identifier(self.schema, table)
            )
            return conn.execute(query).fetchall()

    def metric(self, line_start: str) -> float:
        for line in httpx.get(f"{self.url}/metrics").text.splitlines():
            if line.startswith(line_start + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@pytest.fixture
def receiver(database_url: str, fresh_schema: str) -> Iterator[Receiver]:
    app = create_app(
        _settings(db_schema=fresh_schema),
        sources=_sources(),
        config=ReceiverConfig(clock=lambda: float(NOW), max_body_bytes=64 * 1024),
    )
    with serve_in_thread(app) as url:
        yield Receiver(url, database_url, fresh_schema, app)


def _stripe_event(event_id: str, kind: str = "charge.succeeded") -> bytes:
    return json.dumps({"id": event_id, "object": "event", "type": kind, "data": {"n": 1}}).encode()


def _stripe_headers(body: bytes, secret: str = "whsec_new", timestamp: int = NOW) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, timestamp=timestamp
    )
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


def _github_headers(body: bytes, delivery: str, secret: str = GITHUB_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Delivery": delivery}


# --- accepted, once --------------------------------------------------------------------------


def test_a_stripe_delivery_is_stored_once_and_its_retries_are_duplicates(
    receiver: Receiver,
) -> None:
    body = _stripe_event("evt_1")
    first = receiver.post("payments", body, _stripe_headers(body))
    assert first.status_code == 200 and first.json() == {"status": "accepted", "id": "evt_1"}
    # Stripe retries with a fresh timestamp and signature; still the same event.
    again = receiver.post("payments", body, _stripe_headers(body, timestamp=NOW - 60))
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert receiver.rows("webhook_events", "source, event_id, event_type") == [
        ("payments", "evt_1", "charge.succeeded")
    ]
    # Written with the inbox row, in the same transaction: the outbox entry for the relay.
    assert receiver.rows("outbox", "source, event_id, topic") == [("payments", "evt_1", "landing")]
    stored = receiver.rows("webhook_events", "payload, headers")[0]
    assert stored[0] == json.loads(body)
    assert "stripe-signature" in stored[1] and stored[1]["stripe-signature"] == "REDACTED"
    events = 'ingest_webhook_events_total{result="%s",source="payments"}'
    assert receiver.metric(events % "accepted") == 1
    assert receiver.metric(events % "duplicate") == 1
    # The duplicate was answered from the bloom filter's "maybe seen", confirmed in PostgreSQL.
    assert receiver.metric("ingest_webhook_bloom_hits_total") == 1
    assert receiver.metric("ingest_webhook_duplicates_confirmed_total") == 1


def test_standard_webhooks_signed_by_the_official_library_dedup_on_webhook_id(
    receiver: Receiver,
) -> None:
    body = b'{"type": "invoice.paid", "data": {"id": "in_1"}}'
    signer = standardwebhooks.Webhook(SW_SECRET)
    sent = datetime.fromtimestamp(NOW, UTC)
    headers = {
        "webhook-id": "msg_abc",
        "webhook-timestamp": str(NOW),
        "webhook-signature": signer.sign("msg_abc", sent, body.decode()),
    }
    assert receiver.post("svix", body, headers).json() == {"status": "accepted", "id": "msg_abc"}
    assert receiver.post("svix", body, headers).json()["status"] == "duplicate"
    assert receiver.rows("webhook_events", "source, event_id, event_type") == [
        ("svix", "msg_abc", "invoice.paid")
    ]


def test_hmac_source_takes_its_event_id_from_the_configured_header(receiver: Receiver) -> None:
    body = b'{"action": "opened"}'
    for delivery in ("d-1", "d-2", "d-1"):
        assert receiver.post("github", body, _github_headers(body, delivery)).status_code == 200
    assert receiver.rows("webhook_events") == [("github", "d-1"), ("github", "d-2")]


def test_same_event_id_from_two_sources_is_two_events(receiver: Receiver) -> None:
    body = b'{"id": "evt_shared", "type": "x"}'
    receiver.post("payments", body, _stripe_headers(body))
    receiver.post("github", body, _github_headers(body, "evt_shared"))
    assert receiver.rows("webhook_events") == [("github", "evt_shared"), ("payments", "evt_shared")]


def test_a_bloom_false_positive_is_confirmed_as_new_and_stored(receiver: Receiver) -> None:
    # Make the filter answer "maybe seen" for an event PostgreSQL has never stored.
    receiver.app.state.dedup.remember("payments", "evt_phantom")
    body = _stripe_event("evt_phantom")
    answer = receiver.post("payments", body, _stripe_headers(body))
    assert answer.json() == {"status": "accepted", "id": "evt_phantom"}
    assert receiver.rows("webhook_events") == [("payments", "evt_phantom")]
    assert receiver.metric("ingest_webhook_bloom_false_positives_total") == 1


def test_a_restarted_receiver_rebuilds_its_filter_from_postgres(
    receiver: Receiver, database_url: str
) -> None:
    body = _stripe_event("evt_before_restart")
    assert receiver.post("payments", body, _stripe_headers(body)).json()["status"] == "accepted"
    app = create_app(
        _settings(db_schema=receiver.schema),
        sources=_sources(),
        config=ReceiverConfig(clock=lambda: float(NOW + 3600)),
    )
    with serve_in_thread(app) as url:
        restarted = Receiver(url, database_url, receiver.schema, app)
        assert app.state.dedup.check("payments", "evt_before_restart")  # known before any request
        answer = restarted.post("payments", body, _stripe_headers(body, timestamp=NOW + 3600))
        assert answer.json()["status"] == "duplicate"
    assert receiver.rows("webhook_events") == [("payments", "evt_before_restart")]


# --- refused, with the right status, nothing stored ------------------------------------------


def _forged(body: bytes) -> dict[str, str]:
    return {"Stripe-Signature": f"t={NOW},v1={'0' * 64}"}


@pytest.mark.parametrize(
    ("case", "build", "status", "detail"),
    [
        ("forged", lambda b: (b, _forged(b)), 401, "bad signature"),
        (
            "tampered",
            lambda b: (b.replace(b'"n": 1', b'"n": 9'), _stripe_headers(b)),
            401,
            "bad signature",
        ),
        (
            "stale",
            lambda b: (b, _stripe_headers(b, timestamp=NOW - 301)),
            401,
            "timestamp outside tolerance",
        ),
        (
            "future",
            lambda b: (b, _stripe_headers(b, timestamp=NOW + 301)),
            401,
            "timestamp outside tolerance",
        ),
        ("wrong secret", lambda b: (b, _stripe_headers(b, "whsec_x")), 401, "bad signature"),
        ("no signature", lambda b: (b, {}), 401, "missing signature"),
        ("empty", lambda b: (b"", {}), 401, "missing signature"),
        ("malformed", lambda b: (b, {"Stripe-Signature": "garbage"}), 401, "malformed header"),
        (
            "oversized",
            lambda b: (b" " * (64 * 1024 + 1), _stripe_headers(b)),
            413,
            "body too large",
        ),
    ],
)
def test_bad_requests_are_refused_with_a_short_reason_and_nothing_is_stored(
    receiver: Receiver, case: str, build: Any, status: int, detail: str
) -> None:
    body, headers = build(_stripe_event("evt_bad"))
    answer = receiver.post("payments", body, headers)
    assert (answer.status_code, answer.json()) == (status, {"detail": detail}), case
    assert receiver.rows("webhook_events") == []
    assert receiver.rows("dead_letters", "source, kind") == []


def test_an_oversized_chunked_body_is_refused_without_a_content_length(receiver: Receiver) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 1024

    answer = httpx.post(f"{receiver.url}/webhooks/payments", content=chunks())
    assert answer.status_code == 413


def test_unknown_source_is_404_before_anything_is_read(receiver: Receiver) -> None:
    body = _stripe_event("evt_x")
    answer = receiver.post("nope", body, _stripe_headers(body))
    assert (answer.status_code, answer.json()) == (404, {"detail": "unknown source"})


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"id": "evt_1", "type": ', "body is not valid JSON"),
        (b"\xff\xfe not utf-8", "body is not valid JSON"),
        (b'{"id": "evt_nul", "note": "a\\u0000b"}', "body cannot be stored"),
    ],
)
def test_authentic_but_unusable_bodies_are_400_and_kept_as_dead_letters(
    receiver: Receiver, body: bytes, detail: str
) -> None:
    header = (
        f"t={NOW},v1=" + hmac.new(b"whsec_new", f"{NOW}.".encode() + body, "sha256").hexdigest()
    )
    answer = receiver.post("payments", body, {"Stripe-Signature": header})
    assert (answer.status_code, answer.json()) == (400, {"detail": detail})
    with psycopg.connect(receiver.database_url) as conn:
        kept = conn.execute(
            sql.SQL("SELECT source, kind, reason, payload, context FROM {}").format(
                sql.Identifier(receiver.schema, "dead_letters")
            )
        ).fetchall()
    assert len(kept) == 1
    source, kind, reason, payload, context = kept[0]
    assert (source, kind, bytes(payload)) == ("payments", "webhook", body)
    assert reason.startswith(detail)
    assert context["headers"]["stripe-signature"] == "REDACTED"
    assert receiver.rows("webhook_events") == []


def test_a_rotated_out_secret_works_until_it_is_removed_from_the_list(
    receiver: Receiver, database_url: str
) -> None:
    body = _stripe_event("evt_old_secret")
    assert receiver.post("payments", body, _stripe_headers(body, "whsec_old")).status_code == 200
    app = create_app(
        _settings(db_schema=receiver.schema),
        sources=_sources(stripe_secrets=["whsec_new"]),
        config=ReceiverConfig(clock=lambda: float(NOW)),
    )
    with serve_in_thread(app) as url:
        rotated = Receiver(url, database_url, receiver.schema, app)
        other = _stripe_event("evt_after_rotation")
        refused = rotated.post("payments", other, _stripe_headers(other, "whsec_old"))
        assert (refused.status_code, refused.json()) == (401, {"detail": "bad signature"})
        assert (
            rotated.post("payments", other, _stripe_headers(other, "whsec_new")).status_code == 200
        )


def test_postgres_down_is_503_with_retry_after_and_no_2xx() -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    app = create_app(
        _settings(database_url=dead),
        sources=_sources(),
        config=ReceiverConfig(clock=lambda: float(NOW), committer_options={"connect_timeout": 1.0}),
    )
    with serve_in_thread(app) as url:
        body = _stripe_event("evt_unstored")
        answer = httpx.post(f"{url}/webhooks/payments", content=body, headers=_stripe_headers(body))
        assert answer.status_code == 503
        assert int(answer.headers["Retry-After"]) >= 1
        assert answer.json() == {"detail": "temporarily unable to store events"}


# --- described ---------------------------------------------------------------------------------


def test_openapi_describes_the_webhook_route_and_every_answer(receiver: Receiver) -> None:
    schema = httpx.get(f"{receiver.url}/openapi.json").json()
    post = schema["paths"]["/webhooks/{source}"]["post"]
    assert set(post["responses"]) >= {"200", "400", "401", "404", "413", "503"}
    assert post["requestBody"]["content"]["application/json"]["schema"] == {"type": "object"}
    assert {"/healthz", "/readyz", "/metrics"} <= set(schema["paths"])


def test_metrics_have_a_latency_histogram_per_source_and_result(receiver: Receiver) -> None:
    body = _stripe_event(f"evt_{uuid.uuid4().hex}")
    receiver.post("payments", body, _stripe_headers(body))
    text = httpx.get(f"{receiver.url}/metrics").text
    assert (
        'ingest_webhook_request_seconds_bucket{le="0.1",result="accepted",source="payments"}'
        in text
    )
    assert "ingest_webhook_commits_total 1.0" in text
    assert "ingest_webhook_bloom_bytes" in text


# --- relayed -----------------------------------------------------------------------------------


def test_ingest_relay_moves_received_events_to_landing_tables_once(
    receiver: Receiver, database_url: str
) -> None:
    from tests.support.cli import ingest

    for event_id, kind in [("evt_a", "charge.succeeded"), ("evt_b", "charge.refunded")]:
        body = _stripe_event(event_id, kind)
        assert receiver.post("payments", body, _stripe_headers(body)).status_code == 200
    landing = f"l_{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "INGEST_DB_SCHEMA": receiver.schema, "INGEST_LANDING_SCHEMA": landing}
    try:
        first = ingest("relay", "--drain", env=env)
        assert first.returncode == 0, first.stderr
        assert "relayed 2 event(s)" in first.stdout
        again = ingest("relay", "--drain", env=env)  # nothing due: nothing moves twice
        assert "relayed 0 event(s)" in again.stdout
        with psycopg.connect(database_url) as conn:
            for table, event_id in [
                ("payments__charge_succeeded", "evt_a"),
                ("payments__charge_refunded", "evt_b"),
            ]:
                rows = conn.execute(
                    sql.SQL("SELECT event_id, payload->>'type' FROM {}").format(
                        sql.Identifier(landing, table)
                    )
                ).fetchall()
                assert [r[0] for r in rows] == [event_id]
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(landing))
            )


def test_serve_receiver_refuses_to_start_without_a_sources_secrets(tmp_path: Any) -> None:
    from tests.support.cli import ingest

    (tmp_path / "hooks.yaml").write_text(
        "name: payments\nkind: webhook\nscheme: stripe\nsecrets_env: HOOKS_TEST_SECRETS\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HOOKS_TEST_SECRETS"}
    env["INGEST_SOURCES_DIR"] = str(tmp_path)
    started = ingest("serve", "receiver", "--port", str(free_port()), env=env, timeout=60)
    assert started.returncode == 2
    assert "HOOKS_TEST_SECRETS holds no secret" in started.stderr


def test_a_sender_that_hangs_up_mid_body_is_counted_and_stores_nothing(
    receiver: Receiver,
) -> None:
    import socket
    import time
    from urllib.parse import urlsplit

    address = urlsplit(receiver.url)
    with socket.create_connection((address.hostname, address.port)) as raw:
        raw.sendall(
            b"POST /webhooks/payments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"id": "ev'
        )
    events = 'ingest_webhook_events_total{result="client_disconnected",source="payments"}'
    deadline = time.monotonic() + 10
    while receiver.metric(events) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert receiver.metric(events) == 1
    assert receiver.rows("webhook_events") == []


def test_an_event_id_postgres_cannot_index_is_400_and_kept(receiver: Receiver) -> None:
    event_id = "evt_" + "x" * 600
    body = _stripe_event(event_id)
    answer = receiver.post("payments", body, _stripe_headers(body))
    assert (answer.status_code, answer.json()) == (400, {"detail": "event id unusable"})
    assert receiver.rows("dead_letters", "source, kind") == [("payments", "webhook")]
    assert receiver.rows("webhook_events") == []
