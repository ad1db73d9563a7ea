"""Step 1: a paginated REST source through the mock API with faults on, by ``ingest run``'s runner.

The mock API decides faults from a seed and the request itself, so with a fixed seed the same
requests fault on every fresh run. Faults are switched on for the demo's run only: the API's
previous configuration is put back afterwards, whatever happens (a config change starts a fresh
run of the API's counters, as any `PUT /_admin/config` does).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from ingest.demo.context import DemoContext
from ingest.demo.summary import DemoSummary, SourceLine, count_rows, dead_letter_counts
from ingest.errors import StackError
from ingest.http.paginate import Page
from ingest.sources.rest import RunResult, run_rest_source
from ingest.sources.spec import RestSourceSpec

__all__ = ["DEMO_CLIENT_ID", "DEMO_FAULTS", "DEMO_REST_SOURCE", "injected_faults", "run_rest_step"]

# Sent as X-Client-Id: the mock API keys its fault draws and its counters by client, so the
# demo's requests are told apart from anybody else's in /_admin/stats.
DEMO_CLIENT_ID = "ingest-demo"

# The demo's source, declared as a platform engineer would in sources/*.yaml.
DEMO_REST_SOURCE: dict[str, Any] = {
    "name": "demo_customers",
    "kind": "rest",
    "connection": {
        "base_url_env": "INGEST_MOCK_API_URL",
        "path": "/rest/cursor/customers",
        "params": {"limit": 100},
        "headers": {"X-Client-Id": DEMO_CLIENT_ID},
    },
    "pagination": {"type": "cursor", "cursor_path": "next_cursor", "cursor_param": "cursor"},
    "data_selector": "data",
    "incremental": {"cursor_field": "updated_at", "param": "updated_since", "lookback": "10m"},
    "primary_key": ["id"],
    "rate_limit": {"rate": 50, "capacity": 10},
    "retry": {"max_attempts": 8, "budget_seconds": 60},
}

# Three data requests in ten fault, each kind the policy stack must survive: 429 and 503 with
# Retry-After (seconds and HTTP-date), 500, 502, a dropped connection and a truncated body.
# `slow` is left out: it costs seconds and no retry. A streak of faults is capped below the
# retry budget, so every request gets through in the end.
DEMO_FAULTS: dict[str, Any] = {
    "rate": 0.3,
    "seed": 7,
    "weights": {kind: 1 for kind in ("429", "429-date", "500", "502", "503", "drop", "truncated")},
    "max_consecutive_faults": 3,
    "retry_after_seconds": 1,
}


@contextmanager
def injected_faults(mock_api_url: str) -> Iterator[httpx.Client]:
    """Turn the demo's faults on (a fresh mock-API run); restore the previous config on exit.

    Yields an admin client, for reading the run's counters before they are reset.
    """
    with httpx.Client(base_url=mock_api_url, timeout=30) as admin:
        try:
            before = admin.get("/_admin/config").raise_for_status().json()
            admin.put("/_admin/config", json={**before, "faults": DEMO_FAULTS}).raise_for_status()
        except httpx.HTTPError as exc:
            raise StackError(
                f"the mock API at {mock_api_url} does not take a fault config: {exc}"
            ) from exc
        try:
            yield admin
        except BaseException:
            with contextlib.suppress(httpx.HTTPError):  # the error in flight says more
                admin.put("/_admin/config", json=before)
            raise
        try:
            admin.put("/_admin/config", json=before).raise_for_status()
        except httpx.HTTPError as exc:
            raise StackError(
                f"could not switch the mock API's faults off again ({exc});"
                f" PUT {{}} to {mock_api_url}/_admin/config to reset it"
            ) from exc


def _faults_seen(admin: httpx.Client) -> int:
    stats = admin.get("/_admin/stats").raise_for_status().json()
    counters = stats["clients"].get(DEMO_CLIENT_ID, {})
    return sum(int(n) for n in counters.get("by_fault", {}).values())


def run_rest_step(ctx: DemoContext, summary: DemoSummary) -> None:
    """Pull the demo source; add its line, and what is worth saying about it, to ``summary``."""
    spec = RestSourceSpec.model_validate(DEMO_REST_SOURCE)
    with ctx.connect() as conn:
        before = count_rows(conn, ctx.landing_schema, spec.table)
        letters_before = sum(dead_letter_counts(conn, spec.name).values())
    with injected_faults(ctx.mock_api_url) as admin:
        # What should land is what the API serves: its fixture size, not a number of ours.
        records = int(admin.get("/_admin/config").raise_for_status().json()["records"])
        ctx.say(
            f"REST: {records} customers from the mock API, "
            f"{DEMO_FAULTS['rate']:.0%} of requests faulted (seed {DEMO_FAULTS['seed']})"
        )
        with ctx.progress() as progress:
            task = progress.add_task("REST: customers", total=records)

            def on_page(page: Page, partial: RunResult) -> None:
                progress.update(
                    task,
                    completed=min(partial.records, records),
                    description=f"REST: customers, page {partial.pages}",
                )

            result = run_rest_source(
                spec,
                database_url=ctx.database_url,
                state_schema=ctx.state_schema,
                landing_schema=ctx.landing_schema,
                redis_url=ctx.redis_url,
                environ=ctx.environ,
                on_page=on_page,
                # A commit per page (the API's page size) rather than per 20,000 records: the
                # bar moves page by page, and a rerun after Ctrl-C resumes from the last page.
                batch_records=int(DEMO_REST_SOURCE["connection"]["params"]["limit"]),
            )
        faults = _faults_seen(admin)
    if result.status != "succeeded":
        raise StackError(f"the demo's REST source failed: {result.error}")
    with ctx.connect() as conn:
        after = count_rows(conn, ctx.landing_schema, spec.table)
        letters = sum(dead_letter_counts(conn, spec.name).values()) - letters_before
    summary.lines.append(
        SourceLine(
            source=spec.name,
            kind="rest",
            expected=records,
            landed=after - before,
            already_there=before,
            in_tables=after,
            duplicates=result.records - result.inserted - result.updated,
            retries=result.retries,
            dead_letters=letters,
            quarantined=None,
        )
    )
    summary.facts |= {"rest_faults_injected": faults, "rest_retries": result.retries}
    summary.notes.append(
        f"REST: {result.pages} page(s); the mock API injected {faults} faults and the policy"
        f" stack retried {result.retries} times; watermark {result.watermark or '-'}"
    )
