"""Step 3: the sample webhook deliveries, signed by the vendors' SDKs, into the real receiver.

The receiver (``ingest.webhooks.app.create_app``) runs in this process under uvicorn on a free
loopback port, for the length of the step. Every line of ``data/webhooks/deliveries.ndjson`` is
sent, retried duplicates included, each signed afresh at send time, the way Stripe and Standard
Webhooks senders sign: with ``stripe.WebhookSignature`` and ``standardwebhooks.Webhook``. One
forged delivery must be refused with 401. The outbox relay (``ingest relay --drain``) then moves
the events into their landing tables, one per source and event type.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import uvicorn

from ingest.demo.context import DemoContext
from ingest.demo.summary import DemoSummary, SourceLine, count_rows, dead_letter_counts
from ingest.errors import ConfigError, StackError
from ingest.netutil import free_port
from ingest.settings import Settings
from ingest.sources.spec import WebhookSourceSpec
from ingest.webhooks.app import Source, create_app
from ingest.webhooks.inbox import landing_table_name, run_relay

__all__ = [
    "DEMO_WEBHOOK_SCHEMES",
    "DemoSender",
    "Sent",
    "receiver_in_thread",
    "run_webhook_step",
    "sdk_signature_headers",
]

Scheme = Literal["stripe", "standard-webhooks"]

# The two senders of the sample deliveries and how each signs.
DEMO_WEBHOOK_SCHEMES: dict[str, Scheme] = {"stripe": "stripe", "acme": "standard-webhooks"}
_MAX_ATTEMPTS = 5  # per delivery, for 503s (PostgreSQL busy): what a real sender would do


def sdk_signature_headers(
    scheme: Scheme, secret: str, event_id: str, body: bytes, timestamp: int
) -> dict[str, str]:
    """The headers a delivery carries when the vendor's own SDK signs it (imported lazily)."""
    if scheme == "stripe":
        import stripe

        header = stripe.WebhookSignature.generate_signature_header(
            body.decode(), secret, timestamp=timestamp
        )
        return {"Stripe-Signature": header}
    import standardwebhooks

    at = datetime.fromtimestamp(timestamp, UTC)
    signature = standardwebhooks.Webhook(secret).sign(event_id, at, body.decode())
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def _new_secret(scheme: Scheme) -> str:
    # Stripe's secrets are opaque strings; Standard Webhooks' are base64 after the prefix.
    if scheme == "stripe":
        return "whsec_" + secrets.token_hex(16)
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass(frozen=True)
class DemoSender:
    """One webhook sender: its source name, scheme and a secret made up for this run."""

    name: str
    scheme: Scheme
    secret: str

    @classmethod
    def new(cls, name: str, scheme: Scheme) -> DemoSender:
        return cls(name, scheme, _new_secret(scheme))

    @property
    def secrets_env(self) -> str:
        return f"INGEST_DEMO_{self.name.upper()}_WEBHOOK_SECRETS"

    def receiver_source(self) -> Source:
        """The receiver's view of this sender: a ``kind: webhook`` spec and its scheme."""
        spec = WebhookSourceSpec.model_validate(
            {
                "name": self.name,
                "kind": "webhook",
                "scheme": self.scheme,
                "secrets_env": self.secrets_env,
            }
        )
        return Source(spec, spec.create_scheme({self.secrets_env: self.secret}))

    def sign(self, event_id: str, body: bytes, timestamp: int) -> dict[str, str]:
        """The signature headers the vendor's own SDK produces for this attempt."""
        return sdk_signature_headers(self.scheme, self.secret, event_id, body, timestamp)


def _check_sdks() -> None:
    try:
        import standardwebhooks  # noqa: F401
        import stripe  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"the demo signs webhooks with the vendors' SDKs and {exc.name!r} is not installed"
            " (they are development dependencies: `make venv`)"
        ) from exc


@contextmanager
def receiver_in_thread(settings: Settings, sources: dict[str, Source]) -> Iterator[str]:
    """The real receiver under uvicorn on a free loopback port; yields its base URL.

    The server stops (and its inbox writer flushes) when the block ends.
    """
    port = free_port()
    app = create_app(settings, sources=sources)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="demo-receiver", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise StackError("the webhook receiver did not start (see the log above)")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass
class Sent:
    """What the receiver answered, per source."""

    accepted: Counter[str]
    duplicate: Counter[str]
    forged_status: int


def _post(client: httpx.Client, sender: DemoSender, event_id: str, body: bytes) -> httpx.Response:
    for _ in range(_MAX_ATTEMPTS):
        headers = {"Content-Type": "application/json"}
        headers |= sender.sign(event_id, body, int(time.time()))  # signed afresh per attempt
        answer = client.post(f"/webhooks/{sender.name}", content=body, headers=headers)
        if answer.status_code != 503:
            return answer
        time.sleep(min(5.0, float(answer.headers.get("Retry-After", "1"))))
    return answer


def _send_all(
    ctx: DemoContext, url: str, senders: dict[str, DemoSender], lines: list[dict[str, Any]]
) -> Sent:
    accepted: Counter[str] = Counter()
    duplicate: Counter[str] = Counter()
    with httpx.Client(base_url=url, timeout=30) as client, ctx.progress() as progress:
        task = progress.add_task("webhooks: deliveries", total=len(lines) + 1)
        for line in lines:
            sender = senders[line["source"]]
            body = json.dumps(line["payload"], separators=(",", ":"), ensure_ascii=False).encode()
            answer = _post(client, sender, line["event_id"], body)
            if answer.status_code != 200:
                raise StackError(
                    f"the receiver answered {answer.status_code} to {line['source']}"
                    f" event {line['event_id']}: {answer.text[:200]}"
                )
            status = answer.json().get("status")
            (accepted if status == "accepted" else duplicate)[sender.name] += 1
            progress.advance(task)
        # A forgery: a real event, signed with a secret the receiver does not know.
        first = lines[0]
        real = senders[first["source"]]
        forger = DemoSender.new(real.name, real.scheme)
        body = json.dumps(first["payload"], separators=(",", ":"), ensure_ascii=False).encode()
        forged = _post(client, forger, first["event_id"], body)
        progress.advance(task)
    return Sent(accepted, duplicate, forged.status_code)


def _read_deliveries(ctx: DemoContext) -> list[dict[str, Any]]:
    path = ctx.data_dir / "webhooks" / "deliveries.ndjson"
    lines = [json.loads(text) for text in path.read_text().splitlines() if text.strip()]
    unknown = sorted({line["source"] for line in lines} - set(DEMO_WEBHOOK_SCHEMES))
    if unknown:
        raise ConfigError(f"{path}: deliveries of unknown sources {', '.join(unknown)}")
    if not lines:
        raise ConfigError(f"{path}: no deliveries")
    return lines


def _landing_tables(lines: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Per source, the landing tables its events go to (``<source>__<event type>``)."""
    tables: dict[str, set[str]] = {}
    for line in lines:
        event_type = line["payload"].get("type")
        tables.setdefault(line["source"], set()).add(landing_table_name(line["source"], event_type))
    return tables


def _rows(ctx: DemoContext, tables: dict[str, set[str]]) -> dict[str, int]:
    with ctx.connect() as conn:
        return {
            source: sum(count_rows(conn, ctx.landing_schema, t) for t in names)
            for source, names in tables.items()
        }


def _webhook_letters(ctx: DemoContext) -> dict[str, int]:
    with ctx.connect() as conn:
        return {s: dead_letter_counts(conn, s).get("webhook", 0) for s in DEMO_WEBHOOK_SCHEMES}


def run_webhook_step(ctx: DemoContext, summary: DemoSummary) -> None:
    """Receive, deduplicate and relay the sample deliveries; add a line per source to ``summary``."""
    _check_sdks()
    lines = _read_deliveries(ctx)
    expected = ctx.expected("webhooks/expected.json")["distinct_events"]
    senders = {name: DemoSender.new(name, scheme) for name, scheme in DEMO_WEBHOOK_SCHEMES.items()}
    tables = _landing_tables(lines)
    before, letters_before = _rows(ctx, tables), _webhook_letters(ctx)
    settings = Settings(
        database_url=ctx.database_url,
        db_schema=ctx.state_schema,
        landing_schema=ctx.landing_schema,
    )
    sources = {name: sender.receiver_source() for name, sender in senders.items()}
    with receiver_in_thread(settings, sources) as url:
        ctx.say(f"webhooks: receiver on {url}, {len(lines)} deliveries + 1 forged")
        sent = _send_all(ctx, url, senders, lines)
    if sent.forged_status != 401:
        raise StackError(f"a forged delivery was answered {sent.forged_status}, not 401")
    with ctx.progress() as progress:
        progress.add_task("webhooks: relaying the outbox", total=None)
        relayed = run_relay(
            ctx.database_url,
            schema=ctx.state_schema,
            landing_schema=ctx.landing_schema,
            drain=True,
        )
    after, letters = _rows(ctx, tables), _webhook_letters(ctx)
    summary.lines += [
        SourceLine(
            source=name,
            kind="webhook",
            expected=int(expected[name]),
            landed=after[name] - before[name],
            already_there=before[name],
            in_tables=after[name],
            duplicates=sent.duplicate[name],
            retries=None,  # a sender's retries are the sample's duplicates, not ours
            dead_letters=letters[name] - letters_before.get(name, 0),
            quarantined=None,
        )
        for name in DEMO_WEBHOOK_SCHEMES
        if name in tables
    ]
    accepted = sum(sent.accepted.values())
    summary.facts |= {"webhook_deliveries": len(lines), "forged_status": sent.forged_status}
    summary.notes += [
        f"webhooks: {len(lines)} deliveries → {accepted} accepted,"
        f" {sum(sent.duplicate.values())} answered as duplicates; 1 forged → {sent.forged_status};"
        f" the relay moved {relayed} events to {sum(len(t) for t in tables.values())} tables"
    ]
