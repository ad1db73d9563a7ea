"""The test session's services: the ones given by URL, the rest started embedded.

The stack is brought up in ``pytest_sessionstart`` rather than in a fixture so that notebook items
(nbval), which take no fixtures, see the same services through the environment. Every run gets its
own state and landing schemas, so concurrent runs against one PostgreSQL never collide.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ingest.netutil import free_port
from ingest.stack import ENV_VARS, SERVICES, Stack, StackConfig
from ingest.state.migrate import migrate

ROOT = Path(__file__).resolve().parents[1]
_session: dict[str, object] = {}


def pytest_sessionstart(session: pytest.Session) -> None:
    if hasattr(
        session.config, "workerinput"
    ):  # pragma: no cover - xdist workers share the controller's
        return
    home = Path(tempfile.mkdtemp(prefix="ingest-test-"))
    config = StackConfig.from_env()
    config.home = home
    config.ports = {name: free_port() for name in SERVICES}
    stack = Stack(config)
    statuses = stack.up()
    broken = [f"{s.name}: {s.detail}" for s in statuses if not s.ok]
    if broken:
        stack.down()
        raise pytest.UsageError("test services do not answer: " + "; ".join(broken))
    run = uuid.uuid4().hex[:10]
    env = {
        **stack.env(),
        "INGEST_HOME": str(home),
        "INGEST_DB_SCHEMA": f"t_{run}",
        "INGEST_LANDING_SCHEMA": f"t_{run}_landing",
    }
    _session.update(stack=stack, home=home, env=env, saved={k: os.environ.get(k) for k in env})
    os.environ.update(env)
    migrate(env["INGEST_DATABASE_URL"], schema=env["INGEST_DB_SCHEMA"])


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stack = _session.get("stack")
    if not isinstance(stack, Stack):
        return
    env = _session["env"]
    assert isinstance(env, dict)
    try:
        with psycopg.connect(env["INGEST_DATABASE_URL"], autocommit=True) as conn:
            for key in ("INGEST_DB_SCHEMA", "INGEST_LANDING_SCHEMA"):
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(env[key]))
                )
    finally:
        stack.down()
        saved = _session["saved"]
        assert isinstance(saved, dict)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        home = _session["home"]
        assert isinstance(home, Path)
        shutil.rmtree(home, ignore_errors=True)


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def service_urls() -> dict[str, str]:
    """``INGEST_*`` URL variables of the session's services."""
    env = _session["env"]
    assert isinstance(env, dict)
    return {key: env[key] for key in ENV_VARS.values()}


@pytest.fixture(scope="session")
def database_url(service_urls: dict[str, str]) -> str:
    return service_urls["INGEST_DATABASE_URL"]


@pytest.fixture(scope="session")
def redis_url(service_urls: dict[str, str]) -> str:
    return service_urls["INGEST_REDIS_URL"]


@pytest.fixture(scope="session")
def s3_endpoint_url(service_urls: dict[str, str]) -> str:
    return service_urls["INGEST_S3_ENDPOINT_URL"]


@pytest.fixture(scope="session")
def mock_api_url(service_urls: dict[str, str]) -> str:
    return service_urls["INGEST_MOCK_API_URL"]


@pytest.fixture
def fresh_schema(database_url: str) -> Iterator[str]:
    """A state schema of this test's own, migrated, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    migrate(database_url, schema=schema)
    yield schema
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
