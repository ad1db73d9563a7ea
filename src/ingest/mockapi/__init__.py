"""A mock REST API with deterministic fixtures, seeded fault injection and server-side counters.

Tests of HTTP clients run it as a real server (``python -m ingest.mockapi --port P``) and measure
the client from the server's side through ``/_admin/stats`` and ``/_admin/requests``.
"""

from __future__ import annotations

import logging

import uvicorn

from ingest.mockapi.app import create_app
from ingest.mockapi.config import MockConfig

__all__ = ["MockConfig", "create_app", "serve"]


class _HideDropNoise(logging.Filter):
    """Drop uvicorn's error line for the connections the `drop` fault cuts on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()


def serve(
    host: str,
    port: int,
    config: MockConfig | None = None,
    *,
    log_level: str = "warning",
    access_log: bool = False,
) -> None:
    """Run the mock API with uvicorn until interrupted (blocking)."""
    server_config = uvicorn.Config(
        create_app(config), host=host, port=port, log_level=log_level, access_log=access_log
    )
    # Added after uvicorn.Config, which (re)configures logging when it is built.
    logging.getLogger("uvicorn.error").addFilter(_HideDropNoise())
    uvicorn.Server(server_config).run()
