"""Settings, read from ``INGEST_*`` environment variables and ``.ingest/stack.env``.

Library code never builds ``Settings()`` at import time: it asks ``get_settings()`` at the edge
(CLI, app factory, DAG task) so that notebooks and DAG parsing import modules without side effects.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = ["Settings", "default_home", "get_settings", "stack_env_file"]


def default_home(start: Path | None = None) -> Path:
    """``.ingest`` in the project root, so a notebook (whose working directory is its own folder)
    finds the stack that ``ingest stack up`` started at the top; ``./.ingest`` outside a checkout."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and 'name = "ingest"' in pyproject.read_text():
            return folder / ".ingest"
    return here / ".ingest"


def stack_env_file(home: Path | None = None) -> Path:
    """The file ``ingest stack up`` writes its service URLs to."""
    if home is None:
        home = Path(os.environ["INGEST_HOME"]) if os.environ.get("INGEST_HOME") else default_home()
    return home / "stack.env"


class Settings(BaseSettings):
    """Everything configurable. Environment variables win over ``.ingest/stack.env``."""

    model_config = SettingsConfigDict(env_prefix="INGEST_", extra="ignore")

    home: Path = Field(
        default_factory=default_home,
        description="Working directory of the local stack (data, logs, stack.env).",
    )
    database_url: str | None = Field(None, description="PostgreSQL URL (libpq form).")
    redis_url: str | None = Field(None, description="Redis URL.")
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint (moto, MinIO or AWS).")
    mock_api_url: str | None = Field(None, description="Base URL of the mock SaaS/REST API.")
    schema_registry_url: str | None = Field(
        None, description="Confluent-compatible schema registry URL."
    )
    db_schema: str = Field("ingest", description="PostgreSQL schema for state tables.")
    landing_schema: str = Field("landing", description="PostgreSQL schema for landing tables.")
    sources_dir: Path = Field(Path("sources"), description="Directory of source YAML files.")
    aws_region: str = Field("us-east-1", description="Region for the S3 client.")
    aws_access_key_id: str = Field("testing", description="S3 access key (moto accepts any).")
    aws_secret_access_key: str = Field("testing", description="S3 secret key.")
    stack_postgres_port: int = Field(55432, description="Port of the embedded PostgreSQL.")
    stack_redis_port: int = Field(56379, description="Port of the embedded Redis.")
    stack_s3_port: int = Field(55000, description="Port of the embedded moto S3 server.")
    stack_mock_api_port: int = Field(58080, description="Port of the mock API.")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """Settings from ``environ`` alone: not the process environment, not ``stack.env``."""
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            key = f"INGEST_{name.upper()}"
            if key in environ:
                values[name] = environ[key]
        return _MappingOnly(**values)


class _MappingOnly(Settings):
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, reading ``stack.env`` when the stack wrote one."""
    env_file = stack_env_file()
    if env_file.exists():
        return Settings(_env_file=env_file)
    return Settings()
