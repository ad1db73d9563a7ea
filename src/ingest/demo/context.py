"""What every step of the demo needs: the services' URLs, the schemas, the sample data, a console."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from ingest.errors import ConfigError
from ingest.state.db import connect

__all__ = ["DemoContext", "find_data_dir"]

# The files the demo reads; all of them are written by `python -m ingest.datagen data --sample`.
_DATA_FILES = ("expected.json", "s3/expected.json", "webhooks/expected.json", "s3/drops")


def _candidates(start: Path | None) -> Iterator[Path]:
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and 'name = "ingest"' in pyproject.read_text():
            yield folder / "data"
            break
    # An editable install runs the checkout's own src/ingest: data/ is next to src/.
    yield Path(__file__).resolve().parents[3] / "data"


def find_data_dir(start: Path | None = None) -> Path:
    """The sample data shipped with the repository: ``data/`` in the project root.

    The project root is found from the working directory (as ``.ingest`` is), then from where the
    package itself lives, so ``ingest demo`` works from any folder of a checkout.
    """
    looked = []
    for candidate in _candidates(start):
        if all((candidate / name).exists() for name in _DATA_FILES):
            return candidate
        looked.append(str(candidate))
    raise ConfigError(
        "the demo's sample data is missing: it ships with the repository as data/"
        f" ({', '.join(_DATA_FILES)}); looked in {', '.join(dict.fromkeys(looked))}."
        " Run `ingest demo` from a checkout, or rewrite it with"
        " `python -m ingest.datagen data --sample`."
    )


@dataclass
class DemoContext:
    """The stack's URLs, the state and landing schemas, the sample data and where to talk."""

    database_url: str
    redis_url: str
    s3_endpoint_url: str
    mock_api_url: str
    state_schema: str
    landing_schema: str
    data_dir: Path
    console: Console

    @property
    def environ(self) -> dict[str, str]:
        """The process environment, with the stack's URLs where source specs look for them."""
        return {
            **os.environ,
            "INGEST_DATABASE_URL": self.database_url,
            "INGEST_REDIS_URL": self.redis_url,
            "INGEST_S3_ENDPOINT_URL": self.s3_endpoint_url,
            "INGEST_MOCK_API_URL": self.mock_api_url,
        }

    def expected(self, name: str = "expected.json") -> dict[str, Any]:
        """One of the generators' ``expected.json`` files, relative to ``data/``."""
        document: dict[str, Any] = json.loads((self.data_dir / name).read_text())
        return document

    def connect(self) -> psycopg.Connection[Any]:
        """An autocommit connection to the state schema."""
        return connect(self.database_url, schema=self.state_schema, autocommit=True)

    @contextmanager
    def progress(self) -> Iterator[Progress]:
        """Progress bars on the console (stderr); they vanish once the step is done."""
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        # Off when stderr is not a terminal: a log or a pipe gets no redrawn bars.
        with Progress(
            *columns,
            console=self.console,
            transient=True,
            disable=not self.console.is_terminal,
        ) as progress:
            yield progress

    def say(self, message: str) -> None:
        """One line of what the demo is doing."""
        self.console.print(f"[dim]·[/] {message}")
