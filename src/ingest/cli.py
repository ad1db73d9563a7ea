"""The ``ingest`` command line. Wiring only: every command calls into the package."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from ingest.errors import IngestError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from ingest.s3.loader import S3RunResult
    from ingest.settings import Settings
    from ingest.sources.rest import RunResult
    from ingest.stack import ServiceStatus, Stack
    from ingest.state.dlq import DeadLetterQueue

__all__ = ["app", "main"]

app = typer.Typer(
    help="ingest: a fault-tolerant ingestion service and the workbook that builds it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stack_app = typer.Typer(
    help="The local stack: PostgreSQL, Redis, S3 (moto) and the mock API.", no_args_is_help=True
)
db_app = typer.Typer(help="The state database.", no_args_is_help=True)
serve_app = typer.Typer(
    help="Run one of the project's servers in the foreground.", no_args_is_help=True
)
data_app = typer.Typer(help="Sample data sets.", no_args_is_help=True)
dlq_app = typer.Typer(
    help="Dead letters: what could not be accepted, kept with its reason.", no_args_is_help=True
)
app.add_typer(stack_app, name="stack")
app.add_typer(db_app, name="db")
app.add_typer(serve_app, name="serve")
app.add_typer(data_app, name="data")
app.add_typer(dlq_app, name="dlq")

console = Console(stderr=True)
out = Console()

Host = Annotated[str, typer.Option(help="Interface to bind.")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


# -- stack -------------------------------------------------------------------------------------


def _stack() -> Stack:
    from ingest.stack import Stack, StackConfig

    return Stack(StackConfig.from_env(), log=lambda msg: console.print(f"[dim]·[/] {msg}"))


def _status_table(statuses: list[ServiceStatus]) -> Table:
    table = Table(title="ingest stack")
    for column in ("service", "origin", "url", "answers", "detail"):
        table.add_column(column)
    for s in statuses:
        table.add_row(s.name, s.origin, s.url, "[green]yes[/]" if s.ok else "[red]no[/]", s.detail)
    return table


@stack_app.command("up")
def stack_up() -> None:
    """Start what is not already reachable; write the URLs to .ingest/stack.env; migrate."""
    from ingest.settings import Settings
    from ingest.state.migrate import migrate

    stack = _stack()
    try:
        statuses = stack.up()
        settings = Settings()
        applied = migrate(stack.urls()["postgres"], schema=settings.db_schema)
    except IngestError as exc:
        raise _fail(str(exc)) from exc
    if applied:
        console.print(
            f"[dim]·[/] migrated schema {settings.db_schema!r}: {', '.join(m.name for m in applied)}"
        )
    out.print(_status_table(statuses))
    out.print(f"URLs written to {stack.env_file}")
    if not all(s.ok for s in statuses):
        raise typer.Exit(1)


@stack_app.command("down")
def stack_down() -> None:
    """Stop exactly what `stack up` started."""
    stack = _stack()
    stopped = stack.down()
    out.print(
        "stopped: "
        + (", ".join(stopped) if stopped else "nothing (no embedded service was running)")
    )


@stack_app.command("status")
def stack_status() -> None:
    """Probe every service; exit 0 only when all of them answer."""
    stack = _stack()
    statuses = stack.status()
    out.print(_status_table(statuses))
    if not all(s.ok for s in statuses):
        raise typer.Exit(1)


# -- db ----------------------------------------------------------------------------------------


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply the state migrations to INGEST_DB_SCHEMA (idempotent)."""
    from ingest.state.migrate import migrate

    settings = _settings_with_database()
    assert settings.database_url is not None
    try:
        applied = migrate(settings.database_url, schema=settings.db_schema)
    except IngestError as exc:
        raise _fail(str(exc)) from exc
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "nothing to do"
    out.print(f"schema {settings.db_schema!r}: {names}")


@db_app.command("prune")
def db_prune() -> None:
    """Delete idempotency keys whose retention has expired."""
    from ingest.state.idempotency import IdempotencyStore

    settings = _settings_with_database()
    assert settings.database_url is not None
    removed = IdempotencyStore(settings.database_url, schema=settings.db_schema).prune()
    out.print(f"pruned {removed} expired idempotency key(s) from schema {settings.db_schema!r}")


def _settings_with_database() -> Settings:
    from ingest.settings import get_settings

    settings = get_settings()
    if not settings.database_url:
        raise _fail("no database: set INGEST_DATABASE_URL or run `ingest stack up` first")
    # Source YAML names its URLs by variable (`base_url_env: INGEST_MOCK_API_URL`); the ones the
    # stack wrote to stack.env count as set, as they do for the settings themselves.
    for name, value in settings.model_dump().items():
        if name.endswith("_url") and value:
            os.environ.setdefault(f"INGEST_{name.upper()}", str(value))
    return settings


# -- run ---------------------------------------------------------------------------------------


@app.command("run")
def run(
    sources: Annotated[
        list[str] | None, typer.Argument(help="Names of the sources to run.")
    ] = None,
    all_sources: Annotated[
        bool, typer.Option("--all", help="Run every configured source.")
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Processes. Several sources run side by side; one source has its pages split"
            " across the processes (offset and page-number pagination; others run in one)."
            " All share each source's Redis bucket.",
        ),
    ] = 1,
) -> None:
    """Pull sources into their landing tables (resumable; safe to re-run)."""
    from ingest.sources.spec import load_sources
    from ingest.state.migrate import migrate

    settings = _settings_with_database()
    assert settings.database_url is not None
    try:
        specs = load_sources(settings.sources_dir)
    except IngestError as exc:
        raise _fail(str(exc), code=2) from exc
    if all_sources == bool(sources):
        raise _fail("name one or more sources, or give --all", code=2)
    # Only sources that are pulled can be run; webhook sources are received (`ingest serve receiver`).
    pulled = {name: spec for name, spec in specs.items() if spec.kind != "webhook"}
    names = sorted(pulled) if all_sources else list(sources or [])
    unknown = [n for n in names if n not in pulled]
    if unknown:
        received = [n for n in unknown if n in specs]
        if received:
            raise _fail(
                f"{', '.join(received)}: webhook source(s) are received by `ingest serve receiver`, not run",
                code=2,
            )
        raise _fail(
            f"unknown source(s) {', '.join(unknown)}; configured: {', '.join(sorted(pulled)) or 'none'}",
            code=2,
        )
    migrate(settings.database_url, schema=settings.db_schema)
    if workers > 1 and len(names) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: a forked child would inherit the parent's sockets (Redis, PostgreSQL).
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            results = list(pool.map(_run_source, names))
    else:
        try:
            results = [_run_source(name, show_progress=True, workers=workers) for name in names]
        except IngestError as exc:  # a source that cannot even start: its config or environment
            raise _fail(str(exc), code=2) from exc
    out.print(_results_table(results))
    if any(r.status != "succeeded" for r in results):
        for r in results:
            if r.error:
                console.print(f"[red]{r.source}:[/] {r.error}")
        raise typer.Exit(1)


def _run_source(
    name: str, show_progress: bool = False, workers: int = 1
) -> RunResult | S3RunResult:
    """Run one source; with ``workers > 1``, a REST source's pages split across the processes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ingest.sources.rest import run_rest_source
    from ingest.sources.spec import RestSourceSpec, S3SourceSpec, load_sources

    settings = _settings_with_database()
    spec = load_sources(settings.sources_dir)[name]
    assert settings.database_url is not None
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    if isinstance(spec, S3SourceSpec):
        from functools import partial

        from rich.markup import escape

        from ingest.s3.loader import run_s3_source

        if workers > 1:
            console.print(
                f"[yellow]{name}: an s3 source runs one loader per process; run `ingest run"
                f" {name}` in more processes to share its objects[/]"
            )
        run_s3 = partial(
            run_s3_source,
            spec,
            database_url=settings.database_url,
            state_schema=settings.db_schema,
            landing_schema=settings.landing_schema,
        )
        if not show_progress:
            s3_result = run_s3()
        else:
            with Progress(*columns, console=console, transient=True) as progress:
                objects = progress.add_task(f"{name}: objects", total=None)
                rows = progress.add_task(f"{name}: rows", total=None)

                def on_s3_progress(partial: S3RunResult) -> None:
                    progress.update(
                        objects, total=partial.pending or None, completed=partial.objects
                    )
                    progress.update(rows, completed=partial.rows + partial.rows_in_progress)

                s3_result = run_s3(on_progress=on_s3_progress)
        for key, reason in s3_result.quarantined_files:
            console.print(f"[yellow]{name}: quarantined {escape(key)}:[/] {escape(reason)}")
        return s3_result
    assert isinstance(spec, RestSourceSpec), spec.kind
    kwargs = {
        "database_url": settings.database_url,
        "state_schema": settings.db_schema,
        "landing_schema": settings.landing_schema,
        "redis_url": settings.redis_url,
    }
    if not show_progress:
        return run_rest_source(spec, **kwargs)  # type: ignore[arg-type]
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(f"{name}: records", total=None)

        def on_page(page: object, partial: RunResult) -> None:
            progress.update(
                task,
                completed=partial.records,
                description=f"{name}: page {partial.pages}, records",
            )

        if workers > 1:
            from ingest.sources.parallel import run_parallel

            # One bar for all the workers: each of their batches reports the summed totals.
            return run_parallel(
                spec,
                workers=workers,
                on_progress=lambda partial: on_page(None, partial),
                on_notice=lambda notice: console.print(f"[yellow]{notice}[/]"),
                **kwargs,  # type: ignore[arg-type]
            )
        return run_rest_source(spec, on_page=on_page, **kwargs)  # type: ignore[arg-type]


def _results_table(results: list[RunResult | S3RunResult]) -> RenderableType:
    from rich.console import Group

    from ingest.s3.loader import S3RunResult

    rest = [r for r in results if not isinstance(r, S3RunResult)]
    s3 = [r for r in results if isinstance(r, S3RunResult)]
    tables = ([_rest_table(rest)] if rest else []) + ([_s3_table(s3)] if s3 else [])
    return Group(*tables)


def _rest_table(results: list[RunResult]) -> Table:
    table = Table(title="ingest run")
    headers = (
        "source",
        "status",
        "pages",
        "records",
        "new",
        "changed",
        "retries",
        "dead letters",
        "watermark",
        "seconds",
    )
    for header in headers:
        table.add_column(
            header, justify="left" if header in {"source", "status", "watermark"} else "right"
        )
    for r in results:
        colour = "green" if r.status == "succeeded" else "red"
        table.add_row(
            r.source,
            f"[{colour}]{r.status}[/]",
            str(r.pages),
            str(r.records),
            str(r.inserted),
            str(r.updated),
            str(r.retries),
            str(r.dead_letters),
            r.watermark or "-",
            f"{r.seconds:.2f}",
        )
    return table


def _s3_table(results: list[S3RunResult]) -> Table:
    table = Table(title="ingest run: s3 sources")
    headers = (
        "source",
        "status",
        "objects loaded",
        "quarantined",
        "failed",
        "rows",
        "bad rows",
        "drops ready",
        "waiting",
        "overdue",
        "seconds",
    )
    for header in headers:
        table.add_column(header, justify="left" if header in {"source", "status"} else "right")
    for r in results:
        colour = "green" if r.status == "succeeded" else "red"
        table.add_row(
            r.source,
            f"[{colour}]{r.status}[/]",
            str(r.loaded),
            f"[yellow]{r.quarantined}[/]" if r.quarantined else "0",
            str(r.failed),
            str(r.rows),
            str(r.bad_rows),
            str(r.drops_ready),
            str(r.drops_waiting),
            f"[yellow]{r.drops_overdue}[/]" if r.drops_overdue else "0",
            f"{r.seconds:.2f}",
        )
    return table


# -- dlq ---------------------------------------------------------------------------------------


def _dlq() -> DeadLetterQueue:
    from ingest.state.dlq import DeadLetterQueue

    settings = _settings_with_database()
    assert settings.database_url is not None
    return DeadLetterQueue(settings.database_url, schema=settings.db_schema)


@dlq_app.command("list")
def dlq_list(
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    include_resolved: Annotated[
        bool, typer.Option("--all", help="Include resolved dead letters.")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many rows.")] = 100,
) -> None:
    """Dead letters, oldest first (unresolved only unless --all)."""
    letters = _dlq().list(source=source, unresolved_only=not include_resolved, limit=limit)
    table = Table(title=f"dead letters ({len(letters)})")
    for header in ("id", "source", "kind", "error", "attempts", "created", "state", "reason"):
        table.add_column(header)
    for d in letters:
        state = "resolved" if d.resolved_at else ("replayed, failing" if d.replayed_at else "new")
        table.add_row(
            str(d.id),
            d.source,
            d.kind,
            d.error_class or "-",
            str(d.attempts),
            d.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            state,
            d.reason[:80],
        )
    out.print(table)


@dlq_app.command("replay")
def dlq_replay(
    ids: Annotated[list[int] | None, typer.Argument(help="Dead-letter ids to replay.")] = None,
    source: Annotated[
        str | None, typer.Option(help="Replay every unresolved request of this source.")
    ] = None,
) -> None:
    """Send dead-lettered requests again through the source's policy stack; a 2xx resolves them."""
    from ingest.sources.rest import client_for
    from ingest.sources.spec import RestSourceSpec, load_sources
    from ingest.state.dlq import replay

    if bool(ids) == bool(source):
        raise _fail("give dead-letter ids, or --source", code=2)
    dlq = _dlq()
    letters = (
        [d for d in (dlq.get(i) for i in ids or []) if d is not None]
        if ids
        else dlq.list(source=source)
    )
    if ids and len(letters) != len(ids):
        found = {d.id for d in letters}
        raise _fail(
            f"no dead letter with id {', '.join(str(i) for i in ids if i not in found)}", code=2
        )
    settings = _settings_with_database()
    specs = load_sources(settings.sources_dir) if settings.sources_dir.exists() else {}
    failed = 0
    for letter in letters:
        spec = specs.get(letter.source)
        if not isinstance(spec, RestSourceSpec):
            why = (
                "is not configured" if spec is None else f"is a {spec.kind} source, not replayable"
            )
            console.print(f"[yellow]{letter.id}:[/] source {letter.source!r} {why}; skipped")
            failed += 1
            continue
        with client_for(spec, redis_url=settings.redis_url) as client:
            ok = replay(dlq, letter.id, client)
        failed += not ok
        out.print(
            f"{letter.id} ({letter.source}): {'[green]resolved[/]' if ok else '[red]still failing[/]'}"
        )
    if failed:
        raise typer.Exit(1)


# -- serve -------------------------------------------------------------------------------------


@serve_app.command("mock-api")
def serve_mock_api(
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    records: Annotated[int, typer.Option(help="Size of the fixture data set.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the fixtures and of fault injection.")] = 0,
) -> None:
    """The mock SaaS/REST API: paginated fixtures, fault injection, server-side counters."""
    from ingest.mockapi import MockConfig, serve

    serve(host, port, MockConfig(records=records, seed=seed))


@serve_app.command("receiver")
def serve_receiver(
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, help="uvicorn worker processes (each with its own inbox writer).")
    ] = 1,
) -> None:
    """The webhook receiver: POST /webhooks/{source}, /healthz, /readyz, /metrics.

    Sources are the `kind: webhook` entries of INGEST_SOURCES_DIR; their secrets come from the
    variables they name. A delivery is answered 2xx only once it is committed in PostgreSQL.
    """
    import uvicorn

    from ingest.webhooks.app import webhook_sources

    settings = _settings_with_database()
    try:
        sources = webhook_sources(settings)
    except IngestError as exc:
        raise _fail(str(exc), code=2) from exc
    names = ", ".join(sorted(sources)) or "none (add kind: webhook sources)"
    console.print(f"receiver on http://{host}:{port} — webhook sources: {names}")
    uvicorn.run(
        "ingest.webhooks.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
    )


@app.command("relay")
def relay(
    workers: Annotated[
        int, typer.Option(min=1, help="Relay threads; they share the outbox (SKIP LOCKED).")
    ] = 2,
    drain: Annotated[
        bool, typer.Option("--drain", help="Stop once nothing is due instead of polling forever.")
    ] = False,
) -> None:
    """Move committed webhook events from the outbox to their landing tables (at least once, idempotent)."""
    import signal
    import threading

    import psycopg

    from ingest.state.migrate import migrate
    from ingest.webhooks.inbox import run_relay

    settings = _settings_with_database()
    assert settings.database_url is not None
    migrate(settings.database_url, schema=settings.db_schema)
    stop = threading.Event()
    if not drain:
        # SIGTERM (docker stop, Kubernetes) ends the loop after the batch in flight.
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        console.print(f"relay: {workers} workers on {settings.db_schema}.outbox; Ctrl-C stops")
    try:
        delivered = run_relay(
            settings.database_url,
            schema=settings.db_schema,
            landing_schema=settings.landing_schema,
            workers=workers,
            stop=None if drain else stop,
            drain=drain,
        )
    except KeyboardInterrupt:
        stop.set()
        raise typer.Exit(130) from None
    except (psycopg.Error, IngestError) as exc:
        raise _fail(f"relay failed: {exc}") from exc
    out.print(f"relayed {delivered} event(s) to {settings.landing_schema}")


@serve_app.command("metrics")
def serve_metrics(
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9108,
) -> None:
    """Prometheus exporter: service reachability and the last successful load per source."""
    import uvicorn

    from ingest.metrics_app import create_app

    uvicorn.run(create_app(), host=host, port=port, log_level="warning")


# -- data --------------------------------------------------------------------------------------


@data_app.command("generate")
def data_generate(
    rows: Annotated[
        int, typer.Option(help="Rows in the REST set; the S3 drops hold about as many.")
    ] = 100_000,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write to.")] = Path(
        "data/generated"
    ),
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same files.")] = 0,
) -> None:
    """Write a large deterministic data set (REST, webhooks, S3 drops, SaaS) and its expected.json."""
    from rich.progress import Progress

    from ingest.datagen import generate, progress_total

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("generating", total=progress_total(rows))
        summary = generate(
            out_dir, rows=rows, seed=seed, progress=lambda n: progress.advance(task, n)
        )
    out.print(
        f"wrote {out_dir} ({summary.get('total_rows', rows)} rows); expected counts in {out_dir}/expected.json"
    )


# -- notebooks ---------------------------------------------------------------------------------


@app.command("export")
def export(
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Change nothing; exit 1 if src/ingest differs from a fresh export."
        ),
    ] = False,
) -> None:
    """Export the notebooks into src/ingest (nbdev)."""
    try:
        from nbdev.doclinks import nbdev_export
    except ImportError as exc:
        raise _fail("nbdev is not installed (it is a dev dependency: `make venv`)") from exc
    from ingest.checkpoint import export_drift, project_root

    if check:
        drift = export_drift()
        if drift:
            for line in drift:
                console.print(f"[red]drift:[/] {line}")
            raise _fail(
                "generated modules differ from the notebooks: edit the notebook, then `make export`"
            )
        out.print("src/ingest matches the notebooks")
        return
    os.chdir(project_root())
    nbdev_export()
    out.print("exported notebooks → src/ingest")


@app.command("check")
def check(
    notebooks: Annotated[
        list[Path], typer.Argument(help="Notebooks (e.g. a starter-kit scaffold) to check.")
    ],
    tb: Annotated[
        str, typer.Option(help="pytest traceback style: no, line, short or long.")
    ] = "no",
) -> None:
    """Check a notebook's primitive in a scratch copy of the package: export it, run its tests."""
    from ingest.checkpoint import main as check_main

    code = check_main([*map(str, notebooks), "--tb", tb])
    if code:
        raise typer.Exit(code)


@app.command("checkpoint")
def checkpoint(
    phase: Annotated[int, typer.Argument(help="The phase: 1 = modules 01-02.")],
    from_: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="A starter kit (e.g. starter-kit): check its scaffolds in a scratch copy.",
        ),
    ] = None,
    list_: Annotated[
        bool, typer.Option("--list", help="Print the phase's notebooks and tests; run nothing.")
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(help="Only this notebook (MODULE/NOTEBOOK) and its tests; repeatable."),
    ] = None,
) -> None:
    """Run exactly one phase's checks: papermill, nbval and the tests of its notebooks."""
    from ingest.checkpoint import phase_main

    argv = [str(phase), *(["--from", str(from_)] if from_ else []), *(["--list"] if list_ else [])]
    argv += [arg for name in only or [] for arg in ("--only", name)]
    code = phase_main(argv)
    if code:
        raise typer.Exit(code)


# -- demo --------------------------------------------------------------------------------------


@app.command("demo")
def demo(
    bucket: Annotated[
        str,
        typer.Option(
            envvar="INGEST_DEMO_BUCKET", help="S3 bucket the sample drops are uploaded to."
        ),
    ] = "ingest-demo",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON object.")
    ] = False,
) -> None:
    """Phase 1 end to end on the local stack: REST with faults, S3 drops, signed webhooks.

    Starts what is not running, lands the sample data once (safe to re-run) and prints one summary
    set beside what the data generators say should land. Exit 1 if the two differ.
    """
    import json

    from ingest.demo import run_phase1

    try:
        summary = run_phase1(console=console, bucket=bucket)
    except IngestError as exc:
        raise _fail(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps(summary.as_json()))
    else:
        out.print(summary.table())
    if not summary.ok:
        raise _fail("the landing tables do not hold what the data generators say should land")


# -- s3 ----------------------------------------------------------------------------------------

if TYPE_CHECKING:
    import pyarrow as pa

    from ingest.s3.parsers import BadRow, Parsed

s3_app = typer.Typer(help="S3 batch drops: the files partners drop.", no_args_is_help=True)
app.add_typer(s3_app, name="s3")

_BAD_ROW_SAMPLES = 5


@s3_app.command("parse")
def s3_parse(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="The data file to parse.")
    ],
    file_format: Annotated[
        str | None,
        typer.Option(
            "--format", help="csv, json, ndjson or parquet (default: by extension, else sniffed)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    max_bad_fraction: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Share of bad rows above which the file is refused."),
    ] = 0.01,
    delimiter: Annotated[str | None, typer.Option(help="CSV delimiter (default: sniffed).")] = None,
    encoding: Annotated[
        str | None, typer.Option(help="CSV encoding (default: UTF-8, or UTF-16 by its BOM).")
    ] = None,
) -> None:
    """Parse a data file as the S3 loader would: its format, columns, rows and bad rows.

    Exit 0 when it parses, 1 when it is unreadable or has too many bad rows, 2 on bad usage.
    """
    import json

    from rich.markup import escape

    from ingest.errors import ConfigError
    from ingest.s3.parsers import FORMATS, ParseError, ParseOptions, parse

    if file_format is not None and file_format not in FORMATS:
        raise _fail(f"unknown format {file_format!r}; known: {', '.join(FORMATS)}", code=2)
    try:
        options = ParseOptions(
            delimiter=delimiter, encoding=encoding, max_bad_fraction=max_bad_fraction
        )
    except ConfigError as exc:
        raise _fail(str(exc), code=2) from exc
    parsed: Parsed | None = None
    samples: list[BadRow] = []
    error: str | None = None
    try:
        parsed = parse(file, format=file_format, options=options)
        with parsed:
            for _ in parsed:
                # Keep a few for the report and let the rest go, as a loader would.
                samples += parsed.pop_bad_rows()[: _BAD_ROW_SAMPLES - len(samples)]
    except ParseError as exc:
        error = exc.reason
    if parsed is not None:
        samples += parsed.pop_bad_rows()[: _BAD_ROW_SAMPLES - len(samples)]
    if as_json:
        typer.echo(json.dumps(_parse_summary(file, parsed, samples, error)))
    elif parsed is not None:
        _print_parse_summary(file, parsed, samples)
    if error is not None:
        raise _fail(escape(error))


def _fields(parsed: Parsed | None) -> list[pa.Field]:
    return list(parsed.schema) if parsed is not None and parsed.schema is not None else []


def _is_json_text(field: pa.Field) -> bool:
    from ingest.s3.parsers import JSONB

    return bool(field.metadata) and field.metadata.items() >= JSONB.items()


def _parse_summary(
    file: Path, parsed: Parsed | None, samples: list[BadRow], error: str | None
) -> dict[str, object]:
    fields = _fields(parsed)
    return {
        "file": file.name,
        "format": parsed.format if parsed else None,
        "compression": parsed.compression if parsed else None,
        "rows": parsed.rows if parsed else 0,
        "columns": [f.name for f in fields],
        "types": [str(f.type) for f in fields],
        "json_columns": [f.name for f in fields if _is_json_text(f)],
        "bad_rows": parsed.bad_row_count if parsed else 0,
        "bad_row_samples": [
            {"line": b.line, "raw": b.raw.decode("utf-8", "replace"), "reason": b.reason}
            for b in samples
        ],
        "error": error,
    }


def _print_parse_summary(file: Path, parsed: Parsed, samples: list[BadRow]) -> None:
    fields = _fields(parsed)
    described = parsed.format + (f" ({parsed.compression})" if parsed.compression else "")
    typer.echo(
        f"{file.name}: {described}, {len(fields)} columns, "
        f"{parsed.rows} rows, {parsed.bad_row_count} bad rows"
    )
    width = max((len(f.name) for f in fields), default=0)
    for f in fields:
        typer.echo(f"  {f.name:{width}}  {f.type}{' (json)' if _is_json_text(f) else ''}")
    if samples:
        typer.echo(f"bad rows (first {len(samples)} of {parsed.bad_row_count}):")
        for bad in samples:
            typer.echo(f"  line {bad.line}: {bad.reason}: {bad.raw[:120]!r}")


def main() -> None:
    """Entry point of the ``ingest`` script."""
    # Rich wraps at the terminal width; in CI logs that is 80 columns and tables become unreadable.
    if not sys.stdout.isatty():
        os.environ.setdefault("COLUMNS", "160")
    app()
