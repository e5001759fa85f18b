"""One typed, frozen settings object parsed once from the environment.

Every variable is prefixed ``HERALD_``. Bad values fail loudly at start-up
(pydantic raises), never later in a request. The embedded backend is the
default so ``make run`` needs no environment at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERALD_", frozen=True, extra="ignore")

    backend: Literal["embedded", "gcp"] = "embedded"
    data_dir: Path = Path("var")
    host: str = "127.0.0.1"
    port: int = 8080
    base_url: str = ""  # public URL used in links; defaults to http://host:port
    api_token: str = ""  # bearer token for /api; empty = open on loopback only
    secret_key: str = ""  # HMAC key for blob links and internal calls; generated per data dir if empty
    log_level: str = "INFO"

    # Scheduling
    tick_seconds: float = 60.0
    misfire_seconds: int = 600  # a slot later than this when the tick sees it is recorded missed
    tick_batch: int = 500

    # Delivery
    retry_delays: Annotated[tuple[float, ...], NoDecode] = (120.0, 480.0, 1920.0)  # seconds: 2, 8, 32 minutes
    max_retries: int = 3
    lease_seconds: float = 120.0
    link_ttl_seconds: int = 7 * 24 * 3600
    worker_threads: int = 8
    http_timeout_seconds: float = 10.0

    # Mail / chat (outbox files unless credentials are set)
    mail_from: str = "reports@herald.local"
    mail_from_name: str = "Herald Reports"
    reply_to: str = ""

    @field_validator("retry_delays", mode="before")
    @classmethod
    def _split_delays(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(float(part) for part in value.split(",") if part.strip())
        return value

    @field_validator("retry_delays")
    @classmethod
    def _delays_cover_retries(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(delay < 0 for delay in value):
            raise ValueError("retry_delays must be a non-empty list of non-negative seconds")
        return value

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def public_url(self) -> str:
        return (self.base_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def is_loopback(self) -> bool:
        return self.host in {"127.0.0.1", "localhost", "::1"}


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]

