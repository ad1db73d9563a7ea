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
    from ingest.stack import ServiceStatus, Stack

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
app.add_typer(stack_app, name="stack")
app.add_typer(db_app, name="db")
app.add_typer(serve_app, name="serve")
app.add_typer(data_app, name="data")

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
    from ingest.settings import get_settings
    from ingest.state.migrate import migrate

    settings = get_settings()
    if not settings.database_url:
        raise _fail("no database: set INGEST_DATABASE_URL or run `ingest stack up` first")
    try:
        applied = migrate(settings.database_url, schema=settings.db_schema)
    except IngestError as exc:
        raise _fail(str(exc)) from exc
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "nothing to do"
    out.print(f"schema {settings.db_schema!r}: {names}")


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
) -> None:
    """The webhook receiver: POST /webhooks/{source}, /healthz, /readyz, /metrics."""
    import uvicorn

    from ingest.webhooks.app import create_app

    uvicorn.run(create_app(), host=host, port=port, log_level="warning")


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


# -- demo --------------------------------------------------------------------------------------


@app.command("demo")
def demo() -> None:
    """Start the stack, migrate, pull a REST source into a landing table, print a summary."""
    from ingest.demo import run_demo

    try:
        summary = run_demo(console=console)
    except IngestError as exc:
        raise _fail(str(exc)) from exc
    out.print(summary)


def main() -> None:
    """Entry point of the ``ingest`` script."""
    # Rich wraps at the terminal width; in CI logs that is 80 columns and tables become unreadable.
    if not sys.stdout.isatty():
        os.environ.setdefault("COLUMNS", "160")
    app()
