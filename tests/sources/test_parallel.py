"""`ingest.sources.parallel`: one source's pages split across worker processes, landed exactly once.

Everything real: the session's mock API over a socket (faults drawn from fixed client ids, so the
same requests fault on every run), PostgreSQL, Redis, spawned worker processes, and the CLI as a
separate process. Workers tag the source's `X-Client-Id` with `-w<k>`, so the mock's request log
tells them apart.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from psycopg import sql

from ingest.errors import ConfigError
from ingest.http.paginate import OffsetPaginator, PageNumberPaginator
from ingest.mockapi.fixtures import rest_records
from ingest.sources.parallel import (
    ParallelResult,
    StridedOffsetPaginator,
    StridedPageNumberPaginator,
    in_transaction,
    run_parallel,
    split_pagination,
)
from ingest.sources.spec import RestSourceSpec
from ingest.state.migrate import migrate
from tests.support.cli import ingest

RECORDS = 3000
PAGE = 100

OFFSET = {
    "path": "/rest/offset/customers",
    "params": {},
    "pagination": {"type": "offset", "limit": PAGE, "total_path": "total"},
    "data_selector": "items",
    "param": "offset",
}
PAGE_NUMBER = {
    "path": "/rest/page/customers",
    "params": {"per_page": PAGE},
    "pagination": {"type": "page_number", "total_path": "total_pages"},
    "data_selector": "results",
    "param": "page",
}


@pytest.fixture
def schemas(database_url: str) -> Iterator[tuple[str, str]]:
    state, landing = f"t_{uuid.uuid4().hex[:10]}", f"t_{uuid.uuid4().hex[:10]}_l"
    migrate(database_url, schema=state)
    yield state, landing
    with psycopg.connect(database_url, autocommit=True) as conn:
        for schema in (state, landing):
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def mock(mock_api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mock_api_url) as admin:
        yield admin
        admin.put("/_admin/config", json={}).raise_for_status()


def _source(client_id: str, style: dict[str, Any]) -> dict[str, Any]:
    """A source as a platform engineer writes it in YAML."""
    return {
        "name": "customers",
        "kind": "rest",
        "connection": {
            "base_url_env": "INGEST_MOCK_API_URL",
            "path": style["path"],
            "params": style["params"],
            "headers": {"X-Client-Id": client_id},
            "timeout_seconds": 0.5,
        },
        "pagination": style["pagination"],
        "data_selector": style["data_selector"],
        "incremental": {"cursor_field": "updated_at", "param": "updated_since", "lookback": "10m"},
        "primary_key": ["id"],
        "rate_limit": {"rate": 500, "capacity": 50, "key": f"test-{client_id}-{uuid.uuid4().hex}"},
        "retry": {
            "initial_wait": 0.01,
            "max_wait": 0.05,
            "retry_after_cap": 0.05,
            "max_attempts": 10,
        },
    }


def _spec(client_id: str, style: dict[str, Any]) -> RestSourceSpec:
    return RestSourceSpec.model_validate(_source(client_id, style))


def _run(
    spec: RestSourceSpec,
    schemas: tuple[str, str],
    database_url: str,
    redis_url: str,
    **options: Any,
) -> ParallelResult:
    state, landing = schemas
    return run_parallel(
        spec,
        workers=options.pop("workers", 3),
        database_url=database_url,
        state_schema=state,
        landing_schema=landing,
        redis_url=redis_url,
        tag_header="X-Client-Id",
        **options,
    )


def _landed(database_url: str, landing: str, table: str = "customers") -> list[int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            sql.SQL("SELECT id FROM {} ORDER BY id").format(sql.Identifier(landing, table))
        ).fetchall()
    return [int(r[0]) for r in rows]


def _watermark(database_url: str, state: str, source: str = "customers") -> str | None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            sql.SQL("SELECT value->>'value' FROM {} WHERE source = %s").format(
                sql.Identifier(state, "watermarks")
            ),
            (source,),
        ).fetchone()
    return None if row is None else str(row[0])


def _log(mock: httpx.Client, client_id: str) -> list[dict[str, Any]]:
    entries = mock.get("/_admin/requests").json()["requests"]
    return [e for e in entries if e["client"].startswith(f"{client_id}-w")]


def _clean(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The requests the mock answered normally (no injected fault)."""
    return [e for e in entries if e["fault"] is None and e["status"] == 200]


# -- the strided paginators, without a server ---------------------------------------------------


def _walk(paginator: Any, total: int, param: str) -> list[int]:
    request = httpx.Request("GET", "https://api.example/items")
    paginator.init_request(request)
    asked = []
    while True:
        value = int(request.url.params[param])
        asked.append(value)
        start = value if param == "offset" else (value - 1) * PAGE
        items = [{"id": i} for i in range(start, min(start + PAGE, total))]
        body = {"total": total, "total_pages": -(-total // PAGE)}
        paginator.update_state(httpx.Response(200, json=body), items)
        if not paginator.has_next_page:
            return asked
        paginator.update_request(request)


def test_offset_shares_are_strides_that_cover_every_page_once() -> None:
    shares = split_pagination({"type": "offset", "limit": PAGE}, 3)
    assert shares is not None and all(isinstance(s, StridedOffsetPaginator) for s in shares)
    walks = [_walk(s, 950, "offset") for s in shares]
    assert walks == [[0, 300, 600, 900], [100, 400, 700], [200, 500, 800]]


def test_page_number_shares_stop_at_the_page_count_and_at_maximum_page() -> None:
    shares = split_pagination({"type": "page_number", "total_path": "total_pages"}, 3)
    assert shares is not None and all(isinstance(s, StridedPageNumberPaginator) for s in shares)
    assert [_walk(s, 950, "page") for s in shares] == [[1, 4, 7, 10], [2, 5, 8], [3, 6, 9]]
    # Two pages in all: a third worker would have nothing to fetch, so there are two.
    capped = split_pagination({"type": "page_number", "maximum_page": 2}, 3)
    assert capped is not None and [_walk(s, 950, "page") for s in capped] == [[1], [2]]


def test_pages_that_name_the_next_one_cannot_be_split() -> None:
    for config in ("cursor", "header_link", {"type": "json_link"}, "single_page"):
        assert split_pagination(config, 3) is None
    single = split_pagination("page_number", 1)
    assert single is not None and [type(s) for s in single] == [StridedPageNumberPaginator]
    assert isinstance(StridedOffsetPaginator(10), OffsetPaginator)
    assert isinstance(StridedPageNumberPaginator(), PageNumberPaginator)
    with pytest.raises(ConfigError, match=r"worker must be an integer in 0\.\.2"):
        StridedOffsetPaginator(10, worker=3, workers=3)
    with pytest.raises(ConfigError, match="needs parameter 'limit'"):
        split_pagination("offset", 3)


# -- transactions between workers ---------------------------------------------------------------


def test_a_deadlocked_transaction_is_run_again(database_url: str, fresh_schema: str) -> None:
    rows = sql.Identifier(fresh_schema, "rows")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, n int)").format(rows))
        conn.execute(sql.SQL("INSERT INTO {} VALUES (1, 0), (2, 0)").format(rows))
    both_hold_one = threading.Barrier(2, timeout=30)
    attempts = {"a": 0, "b": 0}
    retried: list[int] = []
    errors: list[BaseException] = []

    def update_both(name: str, first: int, second: int) -> None:
        def work(conn: psycopg.Connection[Any]) -> None:
            attempts[name] += 1
            conn.execute(sql.SQL("UPDATE {} SET n = n + 1 WHERE id = %s").format(rows), (first,))
            if attempts[name] == 1:
                both_hold_one.wait()  # each holds one row and now asks for the other's
            conn.execute(sql.SQL("UPDATE {} SET n = n + 1 WHERE id = %s").format(rows), (second,))

        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                in_transaction(conn, work, on_retry=retried.append)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=update_both, args=("a", 1, 2)),
        threading.Thread(target=update_both, args=("b", 2, 1)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(attempts.values()) == [1, 2] and retried == [1]  # one victim, run once more
    with psycopg.connect(database_url) as conn:
        counts = conn.execute(sql.SQL("SELECT id, n FROM {} ORDER BY id").format(rows)).fetchall()
    assert counts == [(1, 2), (2, 2)]  # the aborted attempt left nothing behind


# -- runs against the mock API ------------------------------------------------------------------


@pytest.mark.parametrize("style", [OFFSET, PAGE_NUMBER], ids=["offset", "page_number"])
def test_three_workers_land_every_id_once_and_set_the_watermark(
    style: dict[str, Any],
    schemas: tuple[str, str],
    database_url: str,
    redis_url: str,
    mock: httpx.Client,
) -> None:
    client_id = f"parallel-{style['param']}"
    mock.put("/_admin/config", json={"records": RECORDS, "seed": 4}).raise_for_status()
    progress: list[int] = []
    result = _run(
        _spec(client_id, style),
        schemas,
        database_url,
        redis_url,
        batch_records=500,
        on_progress=lambda partial: progress.append(partial.records),
    )
    assert result.status == "succeeded", result.error
    expected = rest_records(RECORDS, seed=4)
    assert _landed(database_url, schemas[1]) == [r["id"] for r in expected]
    newest = max(r["updated_at"] for r in expected)
    assert result.watermark == _watermark(database_url, schemas[0]) == newest
    assert (result.records, result.inserted, result.workers) == (RECORDS, RECORDS, 3)
    assert result.worker_pages == [10, 10, 10] and result.pages == 30
    assert progress == sorted(progress) and progress[-1] == RECORDS  # one summed, growing count

    # The server's side: three clients, every page fetched once, each by the worker it belongs to.
    log = _log(mock, client_id)
    assert {e["client"] for e in log} == {f"{client_id}-w{k}" for k in range(3)}
    assert len(log) == 30 and all(e["status"] == 200 for e in log)
    pages = Counter(e["path"] for e in log)
    assert len(pages) == 30 and set(pages.values()) == {1}
    for entry in log:
        value = int(httpx.URL(entry["path"]).params[style["param"]])
        index = value // PAGE if style["param"] == "offset" else value - 1
        assert entry["client"] == f"{client_id}-w{index % 3}"


def test_through_faults_still_exactly_once(
    schemas: tuple[str, str], database_url: str, redis_url: str, mock: httpx.Client
) -> None:
    # Fixed client ids (and so fixed worker ids): the same requests fault on every run.
    client_id = "parallel-faulty"
    mock.put(
        "/_admin/config",
        json={"records": RECORDS, "seed": 5, "faults": {"rate": 0.3, "slow_seconds": 1.0}},
    ).raise_for_status()
    result = _run(_spec(client_id, OFFSET), schemas, database_url, redis_url, batch_records=500)
    assert result.status == "succeeded", result.error
    expected = rest_records(RECORDS, seed=5)
    assert _landed(database_url, schemas[1]) == [r["id"] for r in expected]
    assert result.watermark == _watermark(database_url, schemas[0]) == expected[-1]["updated_at"]

    log = _log(mock, client_id)
    faulted = [e for e in log if e["fault"] is not None]
    assert faulted and result.retries > 0
    assert len({e["client"] for e in faulted}) > 1  # every worker met faults of its own
    # A page asked for more than once was asked again after a fault: one clean answer per page.
    clean = Counter(e["path"] for e in _clean(log))
    assert len(clean) == 30 and set(clean.values()) == {1}
    assert {e["path"] for e in log} == set(clean)


def test_a_failed_worker_fails_the_run_and_keeps_the_old_watermark(
    schemas: tuple[str, str], database_url: str, redis_url: str, mock: httpx.Client
) -> None:
    client_id = f"parallel-{uuid.uuid4().hex[:8]}"
    mock.put("/_admin/config", json={"records": 1000, "seed": 6}).raise_for_status()
    first = _run(_spec(client_id, PAGE_NUMBER), schemas, database_url, redis_url)
    assert first.status == "succeeded", first.error
    before = _watermark(database_url, schemas[0])
    assert before == rest_records(1000, seed=6)[-1]["updated_at"]

    # 2,000 more records, and a run whose worker 0 starts at page 0: a 400, for good.
    mock.put("/_admin/config", json={"records": 3000, "seed": 6}).raise_for_status()
    broken = {**PAGE_NUMBER, "pagination": {**PAGE_NUMBER["pagination"], "base_page": 0}}
    failed = _run(_spec(client_id, broken), schemas, database_url, redis_url, batch_records=100)
    assert failed.status == "failed"
    assert (failed.error or "").startswith("worker 0: ClientError")
    assert failed.dead_letters == 1
    assert failed.watermark == _watermark(database_url, schemas[0]) == before
    with psycopg.connect(database_url) as conn:
        letter = conn.execute(
            sql.SQL("SELECT error_class, context->'request'->>'url' FROM {}").format(
                sql.Identifier(schemas[0], "dead_letters")
            )
        ).fetchone()
        statuses = conn.execute(
            sql.SQL("SELECT status FROM {} ORDER BY id").format(
                sql.Identifier(schemas[0], "load_log")
            )
        ).fetchall()
    assert letter is not None and letter[0] == "ClientError" and "page=0" in letter[1]
    assert statuses == [("succeeded",), ("failed",)]

    # The rerun starts from the old watermark; what the failed run landed merges as unchanged.
    rerun = _run(_spec(client_id, PAGE_NUMBER), schemas, database_url, redis_url)
    assert rerun.status == "succeeded", rerun.error
    expected = rest_records(3000, seed=6)
    assert _landed(database_url, schemas[1]) == [r["id"] for r in expected]
    assert rerun.watermark == _watermark(database_url, schemas[0]) == expected[-1]["updated_at"]
    assert rerun.inserted == 3000 - 1000 - (failed.inserted)


def test_a_cursor_source_runs_in_one_process_and_says_so_once(
    schemas: tuple[str, str], database_url: str, redis_url: str, mock: httpx.Client
) -> None:
    client_id = f"parallel-{uuid.uuid4().hex[:8]}"
    mock.put("/_admin/config", json={"records": 1000, "seed": 7}).raise_for_status()
    cursor = {
        "path": "/rest/cursor/customers",
        "params": {"limit": PAGE},
        "pagination": {"type": "cursor"},
        "data_selector": "data",
    }
    notices: list[str] = []
    result = _run(
        _spec(client_id, cursor), schemas, database_url, redis_url, on_notice=notices.append
    )
    assert notices == [
        "source customers uses cursor pagination; its pages cannot be split, running it in one process"
    ]
    assert result.status == "succeeded", result.error
    assert (result.workers, result.worker_pages, result.notice) == (1, [10], notices[0])
    assert _landed(database_url, schemas[1]) == list(range(1, 1001))
    # One process, untagged: the mock saw only the source's own client id.
    clients = {e["client"] for e in mock.get("/_admin/requests").json()["requests"]}
    assert client_id in clients and not any(c.startswith(f"{client_id}-w") for c in clients)


def test_cli_run_with_three_workers_prints_the_results(
    tmp_path: Path, database_url: str, mock: httpx.Client
) -> None:
    run = uuid.uuid4().hex[:10]
    env = dict(
        os.environ,
        INGEST_DB_SCHEMA=f"t_{run}",
        INGEST_LANDING_SCHEMA=f"t_{run}_l",
        INGEST_SOURCES_DIR=str(tmp_path),
    )
    source = _source(f"parallel-cli-{run}", OFFSET) | {"name": "customers_offset"}
    (tmp_path / "customers_offset.yaml").write_text(yaml.safe_dump(source))
    mock.put("/_admin/config", json={"records": RECORDS, "seed": 8}).raise_for_status()
    try:
        done = ingest("run", "customers_offset", "--workers", "3", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ingest run" in done.stdout
        row = next(line for line in done.stdout.splitlines() if "customers_offset" in line)
        assert "succeeded" in row and f" {RECORDS} " in row and " 30 " in row
        landed = _landed(database_url, env["INGEST_LANDING_SCHEMA"], "customers_offset")
        assert landed == list(range(1, RECORDS + 1))
        newest = rest_records(RECORDS, seed=8)[-1]["updated_at"]
        mark = _watermark(database_url, env["INGEST_DB_SCHEMA"], "customers_offset")
        assert newest in row and mark == newest
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            for key in ("INGEST_DB_SCHEMA", "INGEST_LANDING_SCHEMA"):
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(env[key]))
                )
