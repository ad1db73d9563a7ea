"""What the demo reports: one line per source, counted from the tables, and the summary table.

Every number is measured, never assumed: rows are counted in the landing tables before and after
each step, dead letters in ``dead_letters``, retries by the policy stack's own hook. The expected
numbers come from the data generators' ``expected.json`` files and from the mock API's config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from rich.table import Table

__all__ = ["DemoSummary", "SourceLine", "count_rows", "dead_letter_counts"]


@dataclass
class SourceLine:
    """One source's outcome in this run; ``None`` where a number does not apply to its kind."""

    source: str
    kind: str  # rest | s3 | webhook
    expected: int  # rows the generators say should be in its landing table(s)
    landed: int  # rows new in the landing table(s) this run
    already_there: int  # rows in the landing table(s) before this run
    in_tables: int  # rows in the landing table(s) after this run
    duplicates: int  # records seen again and not stored twice (merge on key, webhook dedup)
    retries: int | None  # requests the policy stack retried
    dead_letters: int  # dead-letter rows written this run
    quarantined: int | None  # files set aside this run

    @property
    def ok(self) -> bool:
        """The landing table(s) hold exactly what the generators say should land."""
        return self.in_tables == self.expected


@dataclass
class DemoSummary:
    """The whole run: the sources, the steps' timings and a few facts worth a sentence."""

    lines: list[SourceLine] = field(default_factory=list)
    steps: dict[str, float] = field(default_factory=dict)  # step → seconds, in run order
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)  # machine-readable extras (--json)

    @property
    def ok(self) -> bool:
        return all(line.ok for line in self.lines)

    @property
    def landed(self) -> int:
        return sum(line.landed for line in self.lines)

    @property
    def already_there(self) -> int:
        return sum(line.already_there for line in self.lines)

    def headline(self) -> str:
        """The sentence that says whether anything landed twice."""
        if not self.ok:
            wrong = ", ".join(
                f"{line.source} holds {line.in_tables} rows, expected {line.expected}"
                for line in self.lines
                if not line.ok
            )
            return f"[red]mismatch:[/] {wrong}"
        if self.landed == 0:
            return f"second run: {self.already_there} rows were already there, nothing landed twice"
        if self.already_there:
            return (
                f"{self.landed} rows landed, {self.already_there} were already there;"
                " nothing landed twice"
            )
        return f"first run: {self.landed} rows landed, each exactly once"

    def table(self) -> Table:
        """The one summary table ``ingest demo`` prints."""
        table = Table(
            title="ingest demo: phase 1 end to end", show_footer=True, caption_justify="left"
        )
        headers = (
            ("source", "total"),
            ("expected", str(sum(line.expected for line in self.lines))),
            ("landed", str(self.landed)),
            ("already there", str(self.already_there)),
            ("duplicates dropped", str(sum(line.duplicates for line in self.lines))),
            ("retries", str(sum(line.retries or 0 for line in self.lines))),
            ("dead letters", str(sum(line.dead_letters for line in self.lines))),
            ("quarantined files", str(sum(line.quarantined or 0 for line in self.lines))),
        )
        for header, footer in headers:
            table.add_column(header, footer, justify="left" if header == "source" else "right")
        for line in self.lines:
            mark = "[green]✓[/]" if line.ok else "[red]✗[/]"
            table.add_row(
                f"{line.kind}: {line.source}",
                f"{line.expected} {mark}",
                str(line.landed),
                str(line.already_there),
                str(line.duplicates),
                "-" if line.retries is None else str(line.retries),
                str(line.dead_letters),
                "-" if line.quarantined is None else str(line.quarantined),
            )
        steps = " · ".join(f"{name} {seconds:.1f} s" for name, seconds in self.steps.items())
        table.caption = "\n".join(
            [self.headline(), *self.notes, f"elapsed: {steps} · total {self.seconds:.1f} s"]
        )
        return table

    def as_json(self) -> dict[str, Any]:
        """The same numbers as one JSON-ready document."""
        return {
            "ok": self.ok,
            "landed": self.landed,
            "already_there": self.already_there,
            "sources": [asdict(line) for line in self.lines],
            "steps": {name: round(s, 3) for name, s in self.steps.items()},
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
            **self.facts,
        }


def count_rows(conn: psycopg.Connection[Any], schema: str, table: str) -> int:
    """Rows in ``schema.table``; 0 while the table does not exist yet."""
    exists = conn.execute(
        "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s", (schema, table)
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
    ).fetchone()
    return int(row[0]) if row else 0


def dead_letter_counts(conn: psycopg.Connection[Any], source: str) -> dict[str, int]:
    """The source's dead letters by kind; ``conn``'s search_path leads to the state schema."""
    rows = conn.execute(
        "SELECT kind, count(*) FROM dead_letters WHERE source = %s GROUP BY kind", (source,)
    ).fetchall()
    return {str(kind): int(n) for kind, n in rows}
