"""`ingest run` against the committed example source, and its errors."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.support.cli import ingest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(database_url: str) -> Iterator[dict[str, str]]:
    run = uuid.uuid4().hex[:10]
    environ = dict(os.environ, INGEST_DB_SCHEMA=f"t_{run}", INGEST_LANDING_SCHEMA=f"t_{run}_l")
    environ["INGEST_SOURCES_DIR"] = str(ROOT / "sources")
    yield environ
    with psycopg.connect(database_url, autocommit=True) as conn:
        for key in ("INGEST_DB_SCHEMA", "INGEST_LANDING_SCHEMA"):
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(environ[key]))
            )


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return ingest("run", *args, env=env)


def test_run_the_example_source(env: dict[str, str], database_url: str) -> None:
    result = _run(env, "customers")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded" in result.stdout
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(env["INGEST_LANDING_SCHEMA"], "customers")
            )
        ).fetchone()
    assert row is not None and row[0] > 0
    assert _run(env, "--all").returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nope",), "unknown source(s) nope; configured: customers"),
        ((), "name one or more sources, or give --all"),
    ],
)
def test_bad_usage_exits_2_with_a_clear_message(
    env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    result = _run(env, *args)
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def test_urls_from_the_stack_count_as_set_and_missing_ones_are_a_clear_error(
    env: dict[str, str], tmp_path: Path
) -> None:
    # Only stack.env knows the mock API (as after `ingest stack up`): the source's base_url_env resolves.
    home = tmp_path / "home"
    home.mkdir()
    mock_url = env.pop("INGEST_MOCK_API_URL")
    (home / "stack.env").write_text(f"INGEST_MOCK_API_URL={mock_url}\n")
    env["INGEST_HOME"] = str(home)
    assert _run(env, "customers").returncode == 0

    (home / "stack.env").write_text("")
    result = _run(env, "customers")
    assert result.returncode == 2
    assert "$INGEST_MOCK_API_URL is not set" in result.stderr
    assert "Traceback" not in result.stderr
