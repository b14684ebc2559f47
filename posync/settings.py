"""Settings, from arguments or ``POSYNC_*`` environment variables (read only when asked, never at import)."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from posync.services.retry import OutagePolicy, RetryPolicy

__all__ = ["PosyncSettings"]


class PosyncSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POSYNC_", extra="ignore")

    ho_url: str = "http://127.0.0.1:8002"
    outlet_id: str = "outlet-1"
    company_id: str = "company-1"
    store_id: str | None = None  # defaults to outlet_id
    # auth: an API key (seed 003) or username/password for the JWT token endpoint (seeds 001/004)
    api_key: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    token_path: str = "/api/v1/token/"

    push_batch_size: int = Field(500, ge=1, le=5000)
    pull_page_size: int = Field(500, ge=1, le=1000)
    lease_seconds: float = Field(60.0, gt=0)
    request_timeout: float = Field(30.0, gt=0)
    sync_interval_seconds: float = Field(30.0, gt=0)
    # hold the cyclic GC off while a push drains or a pull applies pages (posync/_gc.py)
    pause_gc: bool = True

    # while HO is unreachable the whole queue waits, backing off from the first to the second figure
    outage_initial_backoff_seconds: float = Field(2.0, gt=0)
    outage_max_backoff_seconds: float = Field(300.0, gt=0)

    max_retries: int = 3
    initial_backoff_seconds: float = 60.0
    max_backoff_seconds: float = 1800.0
    backoff_multiplier: float = 2.0

    @model_validator(mode="after")
    def _auth_is_configured(self) -> PosyncSettings:
        if self.api_key is None and not (self.username and self.password):
            raise ValueError("configure api_key, or username and password, for head office")
        if self.request_timeout >= self.lease_seconds:
            raise ValueError("request_timeout must be shorter than lease_seconds")
        return self

    @property
    def effective_store_id(self) -> str:
        return self.store_id or self.outlet_id

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_retries, self.initial_backoff_seconds, self.max_backoff_seconds,
                           self.backoff_multiplier)

    def outage_policy(self) -> OutagePolicy:
        return OutagePolicy(self.outage_initial_backoff_seconds,
                            max(self.outage_initial_backoff_seconds, self.outage_max_backoff_seconds))
