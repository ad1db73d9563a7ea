"""The README's commands that other tests do not already run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from tests.support.cli import ingest


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return ingest(*args, env=env)


def test_data_generate_writes_what_expected_json_says(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    result = _cli("data", "generate", "--rows", "500", "--out", str(out), "--seed", "7")
    assert result.returncode == 0, result.stderr
    expected = json.loads((out / "expected.json").read_text())
    assert expected["generator"]["rows"] == 500 and expected["generator"]["seed"] == 7
    customers = json.loads((out / "rest" / "customers.json").read_text())
    assert len(customers) == expected["rest"]["records"] == 500


def test_db_migrate_is_idempotent(database_url: str) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    env = dict(os.environ, INGEST_DB_SCHEMA=schema)
    try:
        first = _cli("db", "migrate", env=env)
        assert first.returncode == 0, first.stderr
        assert "0001_state" in first.stdout
        second = _cli("db", "migrate", env=env)
        assert second.returncode == 0 and "nothing to do" in second.stdout
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_db_migrate_without_a_database_says_what_to_do(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    env["INGEST_HOME"] = str(tmp_path)
    result = _cli("db", "migrate", env=env)
    assert result.returncode == 1
    assert "INGEST_DATABASE_URL" in result.stderr and "ingest stack up" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_reports_a_missing_notebook_and_fails(tmp_path: Path) -> None:
    result = _cli("check", str(tmp_path / "nope.ipynb"))
    assert result.returncode == 1
    assert "nope.ipynb" in result.stdout
    assert "Traceback" not in result.stderr
