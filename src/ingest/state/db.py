"""Connections to the state database, scoped to one schema.

Every connection sets ``search_path`` to the state schema, so SQL stays unqualified and a test run
can use a schema of its own without touching anybody else's tables.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from typing import Any

import psycopg
from psycopg import sql

from ingest.errors import ConfigError, StackError

__all__ = ["ConnectionFactory", "StateStore", "check_identifier", "connect"]

# Anything that gives a connection in a `with` block: `connect`, a pool's `connection`, …
ConnectionFactory = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_identifier(name: str, what: str = "schema") -> str:
    """Return ``name`` if it is a plain lower-case SQL identifier, else raise ``ConfigError``."""
    if not _IDENTIFIER.match(name):
        raise ConfigError(f"{what} name {name!r} must match {_IDENTIFIER.pattern}")
    return name


def connect(url: str, *, schema: str, autocommit: bool = False) -> psycopg.Connection:
    """Open a connection whose ``search_path`` is ``schema`` then ``public``."""
    check_identifier(schema)
    try:
        conn = psycopg.connect(url, autocommit=autocommit, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise StackError(f"cannot connect to PostgreSQL: {exc}".strip()) from exc
    conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema)))
    if not autocommit:
        conn.commit()
    return conn


class StateStore:
    """Base of the stores kept in the state schema (idempotency keys, dead letters, …).

    Give either ``database_url`` (and the state ``schema``) or ``connect``, a factory of
    connections whose ``search_path`` already points at the state schema. Every method takes an
    optional ``conn``: given, it works inside the caller's transaction (the caller commits, so the
    write lands together with whatever else the caller writes); else in a transaction of its own.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        schema: str = "ingest",
        connect: ConnectionFactory | None = None,
    ) -> None:
        if connect is None:
            if database_url is None:
                raise ValueError(f"{type(self).__name__} needs a database_url or a connect factory")
            connect = partial(_connect_to, database_url, schema)
        self._connect = connect

    @contextmanager
    def _use(self, conn: psycopg.Connection[Any] | None) -> Iterator[psycopg.Connection[Any]]:
        if conn is not None:
            yield conn  # the caller's transaction: the caller commits
            return
        with self._connect() as own, own.transaction():
            yield own


def _connect_to(database_url: str, schema: str) -> psycopg.Connection[Any]:
    return connect(database_url, schema=schema)
