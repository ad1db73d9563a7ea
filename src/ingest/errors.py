"""One exception tree for the whole package.

```
IngestError
├── ConfigError                  bad YAML, unknown names, missing secrets        (terminal)
├── StackError                   the local stack cannot start or reach a service
├── TransportError               the network failed us                          (transient)
│   ├── ConnectError
│   └── ReadTimeout
├── HTTPStatusError              the server answered with an error status
│   ├── RateLimited              429, with the server's wait hint               (transient)
│   ├── ServerError              5xx, 408, 425                                  (transient)
│   └── ClientError              other 4xx                                      (terminal)
├── CircuitOpen                  the breaker refuses to call a failing host     (transient)
├── DecodeError                  a body that is not what it claims to be        (transient)
└── DataError                    a record or file we cannot accept              (terminal)
    └── SchemaViolation
```

Whether to retry is decided by two marker classes, not by the error's type: the retry policy
retries ``Transient`` and gives up on ``Terminal`` (which then goes to the dead-letter table).
Third-party exceptions are mapped to these classes at the boundary, with ``raise … from exc``.
"""

from __future__ import annotations

__all__ = [
    "CircuitOpen",
    "ClientError",
    "ConfigError",
    "ConnectError",
    "DataError",
    "DecodeError",
    "HTTPStatusError",
    "IngestError",
    "RateLimited",
    "ReadTimeout",
    "SchemaViolation",
    "ServerError",
    "StackError",
    "Terminal",
    "Transient",
    "TransportError",
    "is_transient",
]


class Transient:
    """Marker: trying again later may succeed."""


class Terminal:
    """Marker: trying again cannot succeed; keep the input and move on."""


class IngestError(Exception):
    """Base of every error this package raises."""


class ConfigError(IngestError, Terminal):
    """Configuration is invalid; the message says which field and why."""


class StackError(IngestError):
    """A local-stack service could not be started, stopped or reached."""


class TransportError(IngestError, Transient):
    """The request did not get a complete response."""


class ConnectError(TransportError):
    """The connection could not be opened or was dropped."""


class ReadTimeout(TransportError):
    """The server did not answer in time."""


class HTTPStatusError(IngestError):
    """The server answered with an error status."""

    def __init__(self, message: str, *, status_code: int, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after


class RateLimited(HTTPStatusError, Transient):
    """429: the server asks us to slow down."""


class ServerError(HTTPStatusError, Transient):
    """5xx, 408 or 425: the server may answer later."""


class ClientError(HTTPStatusError, Terminal):
    """Another 4xx: the request itself is wrong."""


class CircuitOpen(IngestError, Transient):
    """The circuit breaker for this host is open; the call was not made."""


class DecodeError(IngestError, Transient):
    """The body could not be decoded (e.g. truncated JSON); a retry may get a whole one."""


class DataError(IngestError, Terminal):
    """A record or file cannot be accepted as it is."""


class SchemaViolation(DataError):
    """A record does not satisfy its schema contract."""


def is_transient(exc: BaseException) -> bool:
    """True when the error is marked ``Transient``."""
    return isinstance(exc, Transient)
