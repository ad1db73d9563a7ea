"""FastAPI dependencies shared by the mock API's routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ingest.mockapi.state import MockState

__all__ = ["StateDep", "get_state"]


def get_state(request: Request) -> MockState:
    """The app's per-run state (set by ``create_app``)."""
    state = request.app.state.mock
    assert isinstance(state, MockState)
    return state


StateDep = Annotated[MockState, Depends(get_state)]
