"""Configuration of one mock-API run: dataset, fault injection and the server-side rate limit.

The same model is the CLI's start-up config and the body of ``PUT /_admin/config``, so a test can
describe a whole run in one JSON document::

    {
      "records": 1000, "seed": 0, "max_log_entries": 200000,
      "faults": {"rate": 0.3, "weights": {"429": 1, "503": 2, "drop": 1}, "seed": null,
                 "max_consecutive_faults": 3, "slow_seconds": 5.0, "retry_after_seconds": 1},
      "rate_limit": {"rate": 10.0, "burst": 20, "scope": "client"}
    }

Every field has a default, so ``{}`` is a valid body meaning "fault-free, no rate limit".
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["DEFAULT_WEIGHTS", "FaultConfig", "FaultKind", "MockConfig", "RateLimitConfig"]


class FaultKind(StrEnum):
    """What an injected fault looks like on the wire."""

    RATE_LIMITED = "429"  # 429 with ``Retry-After: <delta-seconds>``
    RATE_LIMITED_DATE = "429-date"  # 429 with ``Retry-After: <IMF-fixdate>``
    INTERNAL_ERROR = "500"
    BAD_GATEWAY = "502"
    UNAVAILABLE = "503"  # 503 with ``Retry-After: <delta-seconds>``
    SLOW = "slow"  # the real answer, after ``slow_seconds``
    DROP = "drop"  # headers and half the body, then the connection is closed
    TRUNCATED = "truncated"  # 200 with half the JSON body and a matching Content-Length


DEFAULT_WEIGHTS: dict[FaultKind, float] = dict.fromkeys(FaultKind, 1.0)


class FaultConfig(BaseModel):
    """Which requests fault, and how. Off (``rate=0``) by default."""

    model_config = ConfigDict(extra="forbid")

    rate: float = Field(0.0, ge=0.0, le=1.0, description="Probability that a data request faults.")
    # Kinds missing from a user-given mapping weigh 0: `{"slow": 1}` means "only slow".
    weights: dict[FaultKind, float] = Field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    seed: int | None = Field(None, description="Seed of the fault draws; null = MockConfig.seed.")
    max_consecutive_faults: int | None = Field(
        3,
        ge=0,
        description="After this many faults in a row for the same request, the next one succeeds; "
        "null = unbounded.",
    )
    slow_seconds: float = Field(5.0, ge=0.0, le=600.0, description="Delay of a `slow` fault.")
    retry_after_seconds: int = Field(1, ge=0, le=86_400, description="Wait hint of 429/503 faults.")

    @field_validator("weights")
    @classmethod
    def _some_weight(cls, weights: dict[FaultKind, float]) -> dict[FaultKind, float]:
        if any(w < 0 for w in weights.values()):
            raise ValueError("fault weights must be >= 0")
        if not any(w > 0 for w in weights.values()):
            raise ValueError("at least one fault weight must be > 0")
        return weights


class RateLimitConfig(BaseModel):
    """A token bucket: ``burst`` requests at once, refilled at ``rate`` per second."""

    model_config = ConfigDict(extra="forbid")

    rate: float = Field(10.0, gt=0.0, description="Tokens added per second.")
    burst: int = Field(10, ge=1, description="Bucket size: requests allowed back to back.")
    scope: Literal["client", "global"] = Field(
        "client", description="One bucket per client id, or one shared by everybody."
    )


class MockConfig(BaseModel):
    """Everything one run of the mock API is configured with."""

    model_config = ConfigDict(extra="forbid")

    records: int = Field(1000, ge=0, le=1_000_000, description="Size of the fixture dataset.")
    seed: int = Field(0, description="Seed of the fixture records (and of faults by default).")
    faults: FaultConfig = Field(default_factory=FaultConfig)
    rate_limit: RateLimitConfig | None = Field(None, description="null = no server-side limit.")
    max_log_entries: int = Field(200_000, ge=1, description="Request-log cap; oldest dropped.")

    @property
    def fault_seed(self) -> int:
        """The seed fault draws use."""
        return self.seed if self.faults.seed is None else self.faults.seed
