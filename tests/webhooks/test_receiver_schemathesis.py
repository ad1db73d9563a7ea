"""schemathesis against the receiver's own OpenAPI schema, over a real socket: no 5xx, ever.

The receiver runs under uvicorn with one configured (Stripe-scheme) source and PostgreSQL up, so a
503 — the one 5xx the schema documents, for PostgreSQL being down — is as much a failure as a 500.
Every generated request is sent as generated (for POST: a random source name, so 404), and every
``POST /webhooks/{source}`` is sent again to the configured source, unsigned (401) and then signed
over the exact bytes on the wire, so verification, JSON parsing, the bloom filter, the inbox write
and the dead letter queue all see schemathesis's bodies (empty objects, lone surrogates, control
characters, arrays and strings where an object is documented).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from psycopg import sql
from schemathesis import BaseSchema, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from ingest.settings import Settings
from ingest.state.migrate import migrate
from ingest.webhooks.app import create_app
from tests.support.servers import serve_in_thread
from tests.webhooks.senders import SenderSource


class StripeSigned(requests.auth.AuthBase):
    """Sign the prepared request's body as Stripe would, just before it is sent."""

    def __init__(self, source: SenderSource) -> None:
        self.source = source

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        raw = body.encode() if isinstance(body, str) else body
        assert isinstance(raw, bytes)
        request.headers.update(self.source.sign("", raw, int(time.time()), sdk=False))
        return request


@pytest.fixture(scope="module")
def live_receiver(database_url: str) -> Iterator[tuple[str, SenderSource]]:
    """The receiver on a real socket with one Stripe source, on a state schema of its own."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    migrate(database_url, schema=schema)
    source = SenderSource.new("stripe")
    env = {k: v for k, v in os.environ.items() if k.startswith("INGEST_")}
    settings = Settings.from_environ({**env, "INGEST_DB_SCHEMA": schema})
    app = create_app(settings, sources={source.name: source.receiver_source()})
    try:
        with serve_in_thread(app) as url:
            yield url, source
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="module")
def receiver_schema(live_receiver: tuple[str, SenderSource]) -> BaseSchema:
    url, _ = live_receiver
    return schemathesis.openapi.from_url(f"{url}/openapi.json")


# Every operation of the schema, and how each is generated: POST also gets negative data
# (bodies that are not objects, wrong types), which the receiver must refuse without a 5xx.
CASES = [
    ("GET", "/healthz", GenerationMode.POSITIVE),
    ("GET", "/readyz", GenerationMode.POSITIVE),
    ("GET", "/metrics", GenerationMode.POSITIVE),
    ("POST", "/webhooks/{source}", GenerationMode.POSITIVE),
    ("POST", "/webhooks/{source}", GenerationMode.NEGATIVE),
]
CHECKS = [not_a_server_error, status_code_conformance]


def test_every_operation_of_the_schema_is_exercised(receiver_schema: BaseSchema) -> None:
    operations = {
        (method.upper(), path) for path in receiver_schema for method in receiver_schema[path]
    }
    assert operations == {(method, path) for method, path, _ in CASES}


@pytest.mark.parametrize(
    ("method", "path", "mode"), CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES]
)
def test_receiver_never_answers_5xx(
    receiver_schema: BaseSchema,
    live_receiver: tuple[str, SenderSource],
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    _, source = live_receiver
    operation = receiver_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=100,
        deadline=None,
        database=None,  # no example database written into the work tree
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def exercise(case: Case[Any]) -> None:
        response = case.call()
        case.validate_response(response, checks=CHECKS)
        if "source" in (case.path_parameters or {}):
            # The same body to the configured source: unsigned (verification refuses it), then
            # signed over the exact bytes sent (parsing, dedup, the inbox or the dead letters).
            case.path_parameters = {**case.path_parameters, "source": source.name}
            case.validate_response(case.call(), checks=CHECKS)
            case.validate_response(case.call(auth=StripeSigned(source)), checks=CHECKS)

    exercise()
