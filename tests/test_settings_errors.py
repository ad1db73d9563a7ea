"""Settings precedence and the error tree's retry markers."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest import errors
from ingest.settings import Settings


def test_environment_beats_stack_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / "stack.env"
    env_file.write_text(
        "INGEST_DATABASE_URL=postgresql://from-file/db\nINGEST_REDIS_URL=redis://from-file\n"
    )
    monkeypatch.setenv("INGEST_REDIS_URL", "redis://from-env")
    monkeypatch.delenv("INGEST_DATABASE_URL", raising=False)
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert settings.database_url == "postgresql://from-file/db"
    assert settings.redis_url == "redis://from-env"


def test_defaults_without_anything_given(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("INGEST_DATABASE_URL", "INGEST_DB_SCHEMA", "INGEST_LANDING_SCHEMA"):
        monkeypatch.delenv(var, raising=False)
    settings = Settings()
    assert settings.database_url is None
    assert (settings.db_schema, settings.landing_schema) == ("ingest", "landing")


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (errors.RateLimited("slow down", status_code=429, retry_after=2.0), True),
        (errors.ServerError("boom", status_code=503), True),
        (errors.ConnectError("refused"), True),
        (errors.ReadTimeout("slow"), True),
        (errors.CircuitOpen("open"), True),
        (errors.DecodeError("truncated"), True),
        (errors.ClientError("bad", status_code=400), False),
        (errors.SchemaViolation("renamed field"), False),
        (errors.ConfigError("unknown paginator"), False),
    ],
)
def test_markers_decide_retry(exc: errors.IngestError, transient: bool) -> None:
    assert errors.is_transient(exc) is transient
    assert isinstance(exc, errors.Terminal) is (not transient)
    assert isinstance(exc, errors.IngestError)


def test_status_errors_keep_their_status() -> None:
    exc = errors.RateLimited("slow down", status_code=429, retry_after=1.5)
    assert (exc.status_code, exc.retry_after) == (429, 1.5)
