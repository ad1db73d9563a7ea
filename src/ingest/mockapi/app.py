"""The mock API application factory.

Vendor-shaped routers (Stripe, Salesforce, ...) are added to :data:`DATA_ROUTERS`; everything in
there is counted, rate-limited and fault-injected by :class:`FaultMiddleware` like ``/rest``.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from ingest.mockapi import admin, rest
from ingest.mockapi.config import MockConfig
from ingest.mockapi.errors import install_error_handlers
from ingest.mockapi.middleware import FaultMiddleware
from ingest.mockapi.state import MockState

__all__ = ["DATA_ROUTERS", "create_app"]

DATA_ROUTERS: tuple[APIRouter, ...] = (rest.router,)


def create_app(config: MockConfig | None = None) -> FastAPI:
    """A fresh mock API with its own state, configured by ``config`` (defaults if None)."""
    state = MockState(config or MockConfig())
    app = FastAPI(title="ingest mock API", version="1")
    app.state.mock = state
    install_error_handlers(app)
    app.add_middleware(FaultMiddleware, state=state)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(admin.router)
    for router in DATA_ROUTERS:
        app.include_router(router)
    return app
