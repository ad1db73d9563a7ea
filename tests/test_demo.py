"""`ingest demo`: phase 1 end to end (REST with faults, S3 drops, signed webhooks), as a user runs it.

Against the session's services. What should land comes from the data generators' expected.json
files and from the mock API itself, never from a constant; what did land is read from PostgreSQL.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import psycopg
import pytest
from psycopg import sql

from ingest.webhooks.inbox import landing_table_name
from tests.support.cli import ingest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def _expected(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((DATA / name).read_text())
    return document


def _api_ids(mock_api_url: str) -> list[int]:
    """What the REST source should land: every id the API serves, counted from the API."""
    ids: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
        body = httpx.get(f"{mock_api_url}/rest/cursor/customers", params=params).json()
        ids += [r["id"] for r in body["data"]]
        cursor = body["next_cursor"]
        if not cursor:
            return ids


def _deliveries() -> list[dict[str, Any]]:
    text = (DATA / "webhooks" / "deliveries.ndjson").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _webhook_tables() -> dict[str, dict[str, str]]:
    """Per source, event type → its landing table."""
    tables: dict[str, dict[str, str]] = {}
    for d in _deliveries():
        kind = d["payload"]["type"]
        tables.setdefault(d["source"], {})[kind] = landing_table_name(d["source"], kind)
    return tables


class Db:
    """Reads of the session's state and landing schemas."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.state = os.environ["INGEST_DB_SCHEMA"]
        self.landing = os.environ["INGEST_LANDING_SCHEMA"]

    def rows(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.state)))
            return conn.execute(query, args).fetchall()  # type: ignore[arg-type]

    def landed(self, table: str, columns: str = "*") -> list[tuple[Any, ...]]:
        query = sql.SQL("SELECT {} FROM {} ORDER BY 1").format(
            sql.SQL(columns), sql.Identifier(self.landing, table)
        )
        with psycopg.connect(self.url) as conn:
            return conn.execute(query).fetchall()

    def snapshot(self) -> dict[str, Any]:
        """Everything the demo writes, counted: a rerun must leave all of it as it was."""
        tables = ["demo_customers", "demo_orders"]
        tables += [t for by_type in _webhook_tables().values() for t in by_type.values()]
        return {
            **{t: len(self.landed(t)) for t in tables},
            "webhook_events": self.rows(
                "SELECT source, count(*) FROM webhook_events GROUP BY 1 ORDER BY 1"
            ),
            "dead_letters": self.rows(
                "SELECT source, kind, count(*) FROM dead_letters GROUP BY 1, 2 ORDER BY 1, 2"
            ),
            "s3_objects": self.rows(
                "SELECT state, count(*) FROM s3_objects WHERE source = 'demo_orders'"
                " GROUP BY 1 ORDER BY 1"
            ),
            "customers": self.landed("demo_customers", "id, updated_at::text"),
        }


@pytest.fixture
def bucket(s3_endpoint_url: str) -> Iterator[str]:
    """A bucket name of this test's own; the demo creates it, the test empties and deletes it."""
    name = f"t-demo-{uuid.uuid4().hex[:12]}"
    yield name
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=name).get("Contents", [])]
    if keys:
        s3.delete_objects(Bucket=name, Delete={"Objects": [{"Key": k} for k in keys]})
    s3.delete_bucket(Bucket=name)


def _check_first_run(summary: dict[str, Any], customers: int) -> None:
    s3, hooks = _expected("s3/expected.json")["totals"], _expected("webhooks/expected.json")
    lines = {line["source"]: line for line in summary["sources"]}
    assert list(lines) == ["demo_customers", "demo_orders", "stripe", "acme"]
    rest = lines["demo_customers"]
    assert (rest["expected"], rest["landed"], rest["already_there"], rest["in_tables"]) == (
        customers,
        customers,
        0,
        customers,
    )
    # The faults were real: the server injected some, and the policy stack retried each one.
    assert summary["rest_faults_injected"] > 0
    assert rest["retries"] == summary["rest_faults_injected"]
    assert (rest["dead_letters"], rest["duplicates"]) == (0, 0)

    orders = lines["demo_orders"]
    assert orders["expected"] == orders["landed"] == orders["in_tables"] == s3["rows_to_land"]
    assert orders["dead_letters"] == s3["bad_rows"]
    assert orders["quarantined"] == summary["s3_file_dead_letters"] == s3["corrupt_files"]
    assert summary["s3_drops_ready"] == s3["complete_drops"]
    assert summary["s3_drops_waiting"] == s3["drops"] - s3["complete_drops"]

    for source, distinct in hooks["distinct_events"].items():
        line = lines[source]
        assert line["expected"] == line["landed"] == line["in_tables"] == distinct
        assert line["duplicates"] == hooks["duplicates_by_source"][source]
        assert line["already_there"] == line["dead_letters"] == 0
    assert summary["webhook_deliveries"] == hooks["deliveries"]
    assert summary["forged_status"] == 401
    assert summary["ok"] is True and summary["already_there"] == 0


def _check_tables(db: Db, customers: list[int]) -> None:
    s3 = _expected("s3/expected.json")
    assert [r[0] for r in db.landed("demo_customers", "id")] == customers

    orders = [r[0] for r in db.landed("demo_orders", "order_id")]
    assert len(orders) == len(set(orders)) == s3["totals"]["rows_to_land"]
    objects = dict(db.rows("SELECT key, state FROM s3_objects WHERE source = 'demo_orders'"))
    for drop in s3["drops"]:
        for f in drop["files"]:
            if not drop["complete"]:
                assert f["key"] not in objects  # an incomplete drop's files are not registered
            else:
                assert objects[f["key"]] == ("quarantined" if f["corrupt"] else "loaded")
    letters = db.rows(
        "SELECT kind, context->>'key' FROM dead_letters WHERE source = 'demo_orders' ORDER BY 1, 2"
    )
    corrupt = sorted(f["key"] for d in s3["drops"] for f in d["files"] if f["corrupt"])
    assert [key for kind, key in letters if kind == "s3_file"] == corrupt
    assert Counter(kind for kind, _ in letters)["s3_row"] == s3["totals"]["bad_rows"]

    hooks = _expected("webhooks/expected.json")
    firsts = {(d["source"], d["event_id"]): d["payload"] for d in _deliveries()}
    for source, by_type in _webhook_tables().items():
        landed: dict[str, Any] = {}
        for kind, table in by_type.items():
            rows = db.landed(table, "event_id, payload")
            assert len(rows) == hooks["event_types"][source][kind]
            landed |= dict(rows)
        assert landed == {e: p for (s, e), p in firsts.items() if s == source}
    assert db.rows("SELECT source, count(*) FROM webhook_events GROUP BY 1 ORDER BY 1") == sorted(
        hooks["distinct_events"].items()
    )
    pending = db.rows("SELECT count(*) FROM outbox WHERE delivered_at IS NULL")
    assert pending == [(0,)]


def test_demo_lands_phase_1_as_the_generators_say_and_a_rerun_lands_nothing_twice(
    database_url: str, mock_api_url: str, bucket: str
) -> None:
    customers = _api_ids(mock_api_url)
    env = {**os.environ, "INGEST_DEMO_BUCKET": bucket, "COLUMNS": "200"}
    db = Db(database_url)

    first = ingest("demo", "--json", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    _check_first_run(json.loads(first.stdout), len(customers))
    _check_tables(db, customers)
    before = db.snapshot()

    second = ingest("demo", env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert db.snapshot() == before
    total = sum(n for key, n in before.items() if isinstance(n, int))
    assert f"second run: {total} rows were already there, nothing landed twice" in second.stdout
    # The table's total row: expected, landed, already there.
    match = re.search(r"total\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*(\d+)\s*│", second.stdout)
    assert match, second.stdout
    assert tuple(map(int, match.groups())) == (total, 0, total)
    assert "1 forged → 401" in second.stdout

    log = db.rows(
        "SELECT status, rows_loaded FROM load_log WHERE source = 'demo_customers' ORDER BY id"
    )
    assert log[-2:] == [("succeeded", len(customers)), ("succeeded", 0)]


def test_demo_starts_the_stack_it_needs_when_no_service_is_given(tmp_path: Path) -> None:
    """`make demo` on a fresh checkout: no INGEST_* URL, so every service is started embedded."""
    from ingest.netutil import free_port
    from ingest.stack import ENV_VARS, PORT_SETTINGS

    env = {k: v for k, v in os.environ.items() if k not in set(ENV_VARS.values())}
    env |= {"INGEST_HOME": str(tmp_path / "home"), "INGEST_DEMO_BUCKET": "ingest-demo"}
    env |= {variable: str(free_port()) for variable in PORT_SETTINGS.values()}
    try:
        run = ingest("demo", "--json", env=env)
        assert run.returncode == 0, run.stdout + run.stderr
        for name in ENV_VARS:
            assert f"{name}: starting on 127.0.0.1" in run.stderr
        summary = json.loads(run.stdout)
        assert summary["ok"] is True and summary["already_there"] == 0
        assert summary["landed"] == sum(line["expected"] for line in summary["sources"])
        assert summary["forged_status"] == 401
    finally:
        down = ingest("stack", "down", env=env)
        assert down.returncode == 0, down.stdout + down.stderr
