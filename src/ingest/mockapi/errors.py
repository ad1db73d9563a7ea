"""One JSON error shape for every non-2xx answer the mock API gives on purpose.

``{"error": {"type": "...", "message": "...", "details": ...}}`` — FastAPI's own 422 validation
errors are mapped to 400, because real vendors answer bad query parameters with 400.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["ApiError", "BadRequest", "NotFound", "error_body", "install_error_handlers"]


class ApiError(Exception):
    """An error answered as ``status`` with the JSON error body."""

    status = 400
    type = "invalid_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    """A parameter the client sent is invalid."""


class NotFound(ApiError):
    """The resource does not exist."""

    status = 404
    type = "not_found"


def error_body(type_: str, message: str, details: Any = None) -> dict[str, Any]:
    """The JSON error document."""
    error: dict[str, Any] = {"type": type_, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(error_body(exc.type, exc.message), status_code=exc.status)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # ctx may hold the raw exception object, which is not JSON; keep what a client can act on.
    details = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
        for e in exc.errors()
    ]
    return JSONResponse(
        error_body("invalid_request", "invalid request parameters", details), status_code=400
    )


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    type_ = "not_found" if exc.status_code == 404 else "http_error"
    return JSONResponse(
        error_body(type_, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
    )


def install_error_handlers(app: FastAPI) -> None:
    """Route every error class to the JSON error shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
