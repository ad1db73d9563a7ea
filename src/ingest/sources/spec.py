"""Source specifications: the YAML a platform engineer writes to add a source.

A source says what to pull and how the shared policies apply to it (rate limit, retry budget,
incremental cursor, primary key); it never holds a secret — it names the environment variable that
does. The whole file is validated before anything runs, and every error names the file and the field.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ingest.errors import ConfigError

if TYPE_CHECKING:
    from ingest.webhooks.signature import SignatureScheme

__all__ = [
    "AuthSpec",
    "ConnectionSpec",
    "DestinationSpec",
    "IncrementalSpec",
    "RateLimitSpec",
    "RestSourceSpec",
    "RetrySpec",
    "S3SourceSpec",
    "SignatureSpec",
    "SourceSpec",
    "WebhookEventIdSpec",
    "WebhookSourceSpec",
    "load_sources",
    "parse_duration",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """``90``, ``"90s"``, ``"15m"``, ``"2h"``, ``"3d"`` → timedelta (bare numbers are seconds)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float):
        return timedelta(seconds=float(value))
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 15m, 2h, 3d)")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2]])


Duration = Annotated[timedelta, Field(description="seconds, or a number with ms/s/m/h/d")]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConnectionSpec(_Spec):
    base_url: str | None = None
    base_url_env: str | None = Field(None, description="Environment variable holding the base URL.")
    path: str = "/"
    method: Literal["GET", "POST"] = "GET"
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = 10.0

    def resolved_base_url(self, environ: dict[str, str] | None = None) -> str:
        env = os.environ if environ is None else environ
        if self.base_url_env:
            value = env.get(self.base_url_env)
            if not value:
                raise ConfigError(f"connection.base_url_env: ${self.base_url_env} is not set")
            return value
        if not self.base_url:
            raise ConfigError("connection: give base_url or base_url_env")
        return self.base_url


class AuthSpec(_Spec):
    type: Literal["none", "bearer", "api_key", "basic"] = "none"
    token_env: str | None = Field(
        None, description="Variable holding the token, API key or password."
    )
    username_env: str | None = None
    header: str = "X-Api-Key"

    def headers(self, environ: dict[str, str] | None = None) -> dict[str, str]:
        """The auth headers, read from the environment now (never stored in the spec)."""
        if self.type == "none":
            return {}
        env = os.environ if environ is None else environ
        if not self.token_env or not env.get(self.token_env):
            raise ConfigError(f"auth: ${self.token_env or '<token_env>'} is not set")
        secret = env[self.token_env]
        if self.type == "bearer":
            return {"Authorization": f"Bearer {secret}"}
        if self.type == "api_key":
            return {self.header: secret}
        import base64

        user = env.get(self.username_env or "", "")
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


class IncrementalSpec(_Spec):
    cursor_field: str
    param: str = Field(
        description="Query parameter that takes the lower bound, e.g. updated_since."
    )
    initial: str | None = None
    lookback: Duration = timedelta(0)
    ordered: bool = Field(
        True,
        description="Pages come in ascending cursor order, so the watermark may advance page by page. "
        "If false it advances only when the run completes.",
    )

    @field_validator("lookback", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        return parse_duration(value)


class RateLimitSpec(_Spec):
    rate: float = Field(gt=0, description="Requests per second, shared by every worker.")
    capacity: float = Field(gt=0, description="Burst size.")
    key: str | None = Field(
        None, description="Bucket name; sources sharing an API quota share a key."
    )


class RetrySpec(_Spec):
    max_attempts: int = Field(8, ge=1)
    budget_seconds: float = Field(120.0, gt=0)
    initial_wait: float = Field(0.25, ge=0)
    max_wait: float = Field(30.0, ge=0)
    retry_after_cap: float = Field(60.0, ge=0)


class DestinationSpec(_Spec):
    table: str

    @field_validator("table")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"table {value!r} must match {_NAME.pattern}")
        return value


class _SourceBase(_Spec):
    """What every kind of source has: a name, a landing table and a freshness promise."""

    name: str
    destination: DestinationSpec | None = None
    freshness_sla: Duration | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"name {value!r} must match {_NAME.pattern}")
        return value

    @field_validator("freshness_sla", mode="before")
    @classmethod
    def _sla(cls, value: Any) -> timedelta | None:
        return None if value is None else parse_duration(value)

    @property
    def table(self) -> str:
        return self.destination.table if self.destination else self.name


class RestSourceSpec(_SourceBase):
    kind: Literal["rest"]
    connection: ConnectionSpec
    auth: AuthSpec = AuthSpec()
    pagination: str | dict[str, Any] = "single_page"
    data_selector: str | None = None
    incremental: IncrementalSpec | None = None
    primary_key: list[str] = Field(min_length=1)
    rate_limit: RateLimitSpec | None = None
    retry: RetrySpec = RetrySpec()
    schema_contract: str | None = None


class WebhookEventIdSpec(_Spec):
    """Where an ``hmac-sha256`` delivery carries its event id; SHA-256 of the body otherwise."""

    header: str | None = None
    pointer: str | None = Field(None, description="JSON pointer into the body, e.g. /id")

    @field_validator("pointer")
    @classmethod
    def _pointer(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"pointer {value!r} must be a JSON pointer such as /id")
        return value


class SignatureSpec(_Spec):
    """The signature header of an ``hmac-sha256`` source (GitHub: hex with ``sha256=``; Shopify: base64)."""

    header: str
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""
    timestamp_header: str | None = None


class WebhookSourceSpec(_SourceBase):
    """A sender that POSTs signed events to ``/webhooks/{name}``."""

    kind: Literal["webhook"]
    scheme: Literal["stripe", "standard-webhooks", "hmac-sha256"]
    secrets_env: str = Field(
        description="Environment variable holding the secrets, comma-separated, newest first."
    )
    tolerance_seconds: int = Field(300, gt=0)
    signature: SignatureSpec | None = None
    event_id: WebhookEventIdSpec | None = None
    event_type: str | None = Field(
        None,
        description="JSON pointer to the event type (default /type for stripe and standard-webhooks).",
    )

    @field_validator("event_id", mode="before")
    @classmethod
    def _event_id(cls, value: Any) -> Any:
        # Shorthand: a string is a JSON pointer when it starts with "/", else a header name.
        if isinstance(value, str):
            return {"pointer": value} if value.startswith("/") else {"header": value}
        return value

    @model_validator(mode="after")
    def _scheme_options(self) -> WebhookSourceSpec:
        if self.scheme == "hmac-sha256" and self.signature is None:
            raise ValueError("scheme hmac-sha256 needs `signature: {header: ...}`")
        if self.scheme != "hmac-sha256" and (self.signature or self.event_id):
            raise ValueError(
                f"`signature` and `event_id` apply to hmac-sha256 only, not {self.scheme}"
            )
        return self

    @property
    def event_type_pointer(self) -> str | None:
        if self.event_type is not None:
            return self.event_type
        return "/type" if self.scheme in ("stripe", "standard-webhooks") else None

    def secrets(self, environ: dict[str, str] | None = None) -> list[str]:
        """The active secrets, newest first; a missing or empty variable is a configuration error."""
        env = os.environ if environ is None else environ
        raw = env.get(self.secrets_env, "")
        secrets = [s.strip() for s in raw.split(",") if s.strip()]
        if not secrets:
            raise ConfigError(
                f"webhook source {self.name!r}: environment variable {self.secrets_env} holds no secret"
            )
        return secrets

    def create_scheme(self, environ: dict[str, str] | None = None) -> SignatureScheme:
        """The signature scheme with its secrets from the environment."""
        from ingest.webhooks.signature import create_scheme

        options: dict[str, Any] = {
            "secrets": self.secrets(environ),
            "tolerance_seconds": self.tolerance_seconds,
        }
        if self.signature is not None:
            options |= self.signature.model_dump()
        if self.event_id is not None:
            options |= {
                "event_id_header": self.event_id.header,
                "event_id_pointer": self.event_id.pointer,
            }
        return create_scheme(self.scheme, **options)


class S3SourceSpec(_SourceBase):
    """Batch drops in a bucket: ``<prefix><drop id>/`` with ``_manifest.json`` or ``_SUCCESS``."""

    kind: Literal["s3"]
    bucket: str
    prefix: str = ""
    format: Literal["csv", "json", "ndjson", "parquet"] | None = Field(
        None, description="Default: by extension, else sniffed from the first bytes."
    )
    delimiter: str | None = Field(None, description="CSV delimiter; default: sniffed.")
    encoding: str | None = Field(None, description="CSV text encoding; default UTF-8.")
    primary_key: list[str] = Field(min_length=1)
    max_bad_fraction: float = Field(0.01, ge=0.0, le=1.0)
    overdue_after: Duration = timedelta(hours=6)
    lease_seconds: float = Field(60.0, gt=0)
    endpoint_url_env: str = Field(
        "INGEST_S3_ENDPOINT_URL", description="Variable holding the S3 endpoint (unset: AWS)."
    )

    @field_validator("overdue_after", mode="before")
    @classmethod
    def _overdue(cls, value: Any) -> timedelta:
        return parse_duration(value)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        # A drop is one path segment under the prefix, so the prefix names a folder.
        return value if not value or value.endswith("/") else value + "/"


# Other kinds (stripe, salesforce) join this union as their modules land.
SourceSpec = RestSourceSpec | WebhookSourceSpec | S3SourceSpec
_KINDS: dict[str, type[SourceSpec]] = {
    "rest": RestSourceSpec,
    "webhook": WebhookSourceSpec,
    "s3": S3SourceSpec,
}


def _documents(path: Path) -> list[tuple[Path, dict[str, Any]]]:
    files = (
        sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml"})
        if path.is_dir()
        else [path]
    )
    out = []
    for file in files:
        try:
            loaded = yaml.safe_load(file.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
        items = loaded.get("sources", [loaded]) if isinstance(loaded, dict) else loaded
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ConfigError(
                f"{file}: expected a source mapping, a list of them, or `sources: [...]`"
            )
        out += [(file, item) for item in items]
    return out


def load_sources(path: Path) -> dict[str, SourceSpec]:
    """Every source in ``path`` (a YAML file or a directory of them), validated as a whole."""
    if not path.exists():
        raise ConfigError(f"no sources at {path} (set INGEST_SOURCES_DIR)")
    specs: dict[str, SourceSpec] = {}
    problems: list[str] = []
    for file, item in _documents(path):
        kind = item.get("kind")
        model = _KINDS.get(kind) if isinstance(kind, str) else None
        if model is None:
            problems.append(
                f"{file}: source {item.get('name', '?')!r}: unknown kind {kind!r} "
                f"(known: {', '.join(_KINDS)})"
            )
            continue
        try:
            spec = model.model_validate(item)
        except ValidationError as exc:
            for error in exc.errors():
                where = ".".join(str(p) for p in error["loc"])
                problems.append(
                    f"{file}: source {item.get('name', '?')!r}: {where}: {error['msg']}"
                )
            continue
        if spec.name in specs:
            problems.append(f"{file}: source {spec.name!r} is defined twice")
        specs[spec.name] = spec
    if problems:
        raise ConfigError("invalid source configuration:\n  " + "\n  ".join(problems))
    return specs
