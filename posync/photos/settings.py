"""``PhotoSettings``: from arguments or ``POSYNC_*`` environment variables (read when built, never at import).

HO's address and credentials are the core's variables (``POSYNC_HO_URL``, ``POSYNC_USERNAME``,
``POSYNC_PASSWORD`` or ``POSYNC_API_KEY``, ``POSYNC_COMPANY_ID``, ``POSYNC_STORE_ID``, ``POSYNC_DB_URL``);
the photo-specific ones start ``POSYNC_PHOTO_``. Secrets are ``SecretStr`` and never shown.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from posync.settings import StrictSettings

__all__ = ["PhotoSettings"]


class PhotoSettings(StrictSettings):

    ho_url: str = "http://127.0.0.1:8002"
    outlet_id: str = "outlet-1"
    company_id: str = "company-1"
    store_id: str | None = None  # defaults to outlet_id
    username: str | None = None
    password: SecretStr | None = None
    api_key: SecretStr | None = None
    token_path: str = "/api/v1/token/"
    db_url: str | None = None  # the outlet database, when posync builds the engine (the CLI)
    request_timeout: float = Field(30.0, gt=0)

    photo_api: Literal["v1", "legacy"] = "v1"
    photo_store: str = "fs:./photos"  # fs:PATH | s3://BUCKET | db | db:table=T,key=K,column=C[,max_mb=N]
    photo_s3_endpoint: str | None = None  # host:port
    photo_s3_access_key: str | None = None
    photo_s3_secret_key: SecretStr | None = None
    photo_s3_secure: bool = False
    photo_s3_region: str | None = None
    photo_s3_public_read: bool = False  # seed 001's policy on a bucket posync creates
    photo_staging_dir: str | None = None  # partial downloads of the s3 and db stores (fs: inside the root)

    photo_engine: Literal["auto", "curl", "urllib3"] = "auto"
    photo_workers: int = Field(8, ge=1, le=64)
    photo_page_size: int = Field(100, ge=1, le=1000)
    photo_attempts: int = Field(4, ge=1, le=20)
    photo_stall_timeout: float = Field(30.0, gt=0)
    photo_transfer_timeout: float = Field(600.0, gt=0)
    photo_deadline_seconds: float = Field(3600.0, gt=0)
    photo_max_deletes: int = Field(100, ge=0)

    # products the outlet has: photos of others wait (seed 001 looks the product up first)
    photo_product_table: str | None = None
    photo_product_id_column: str = "id"

    # serving (posync.photos.serve)
    photo_local_base_url: str = "/photos"
    photo_placeholder_url: str = "/static/images/no-image.png"

    # scheduler jobs (posync.photos.jobs)
    photo_incremental_minute: int = Field(0, ge=0, le=59)  # hourly, at this minute
    photo_full_hour: int = Field(2, ge=0, le=23)  # nightly full check, at this hour (seed 001: 2 AM)

    @model_validator(mode="after")
    def _auth_is_configured(self) -> PhotoSettings:
        if self.api_key is None and not (self.username and self.password):
            raise ValueError("configure username and password (or api_key) for head office")
        return self

    @property
    def effective_store_id(self) -> str:
        return self.store_id or self.outlet_id
