"""Connections to the state database, scoped to one schema.

Every connection sets ``search_path`` to the state schema, so SQL stays unqualified and a test run
can use a schema of its own without touching anybody else's tables.
"""

from __future__ import annotations

import re

import psycopg
from psycopg import sql

from ingest.errors import ConfigError, StackError

__all__ = ["check_identifier", "connect"]

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
