"""`ingest.workbook` (exported from notebooks/01-retry-client/00-local-stack.ipynb)."""

from __future__ import annotations

import os

import pytest

from ingest.stack import probe
from ingest.workbook import StackURLs, stack_urls


def test_stack_urls_uses_the_given_services(service_urls: dict[str, str]) -> None:
    urls = stack_urls()
    assert urls == StackURLs(
        database_url=service_urls["INGEST_DATABASE_URL"],
        redis_url=service_urls["INGEST_REDIS_URL"],
        s3_endpoint_url=service_urls["INGEST_S3_ENDPOINT_URL"],
        mock_api_url=service_urls["INGEST_MOCK_API_URL"],
    )
    assert probe("postgres", urls.database_url)[0]
    assert probe("mock-api", urls.mock_api_url)[0]


def test_parameters_override_the_environment(
    service_urls: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bogus environment value loses to the parameter, and the parameter is exported for later cells.
    monkeypatch.setenv("INGEST_REDIS_URL", "redis://127.0.0.1:1/0")
    urls = stack_urls(redis_url=service_urls["INGEST_REDIS_URL"])
    assert urls.redis_url == service_urls["INGEST_REDIS_URL"]
    assert os.environ["INGEST_REDIS_URL"] == service_urls["INGEST_REDIS_URL"]
