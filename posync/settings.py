"""Settings, from arguments or ``POSYNC_*`` environment variables (read only when asked, never at import).

A keyword posync does not know is an error naming the closest one it does (a typo must not be ignored
silently); unknown ``POSYNC_*`` variables are left alone (the CLI and hosts keep their own there).
Validation errors never show the values given: a password must not reach a log through one.

Where a setting comes from, first source first (each fills only what the ones before it left unset):

1. keyword arguments (code): ``PosyncSettings(api_key=...)``;
2. ``POSYNC_*`` environment variables;
3. a ``.env`` file, then a secrets directory (one file per setting, named ``posync_<setting>``), both opt-in:
   ``POSYNC_ENV_FILE`` / ``POSYNC_SECRETS_DIR``, or the constructor's ``_env_file`` / ``_secrets_dir``;
4. the outlet database's config table, ``posync_outlet`` (HO URL, outlet id and code, company, store, brand,
   sync switch, the encrypted credentials), only through ``posync.settings_from_outlet(engine)``: a
   ``PosyncSettings(...)`` never connects to a database.

One class declares each setting: :class:`PosyncSettings` holds HO's address, the outlet and the
credentials for everything posync does; photo replication's own options are :class:`PhotoOptions`, nested
as ``settings.photos``. Outside, a photo option keeps its flat name ``photo_<option>``: the keyword
(``PosyncSettings(photo_store="db")``, the same as ``photos={"store": "db"}``) and the variable
(``POSYNC_PHOTO_STORE``). ``PhotoSettings`` is PosyncSettings' name in photo code from before issue 16.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from posync.errors import ConfigurationError
from posync.retry import IdlePolling, OutagePolicy, RetryPolicy, phase

__all__ = ["PhotoOptions", "PhotoSettings", "PosyncSettings", "Stored", "StrictSettings"]

log = logging.getLogger("posync.settings")


class StrictSettings(BaseSettings):
    """posync's settings classes: an unknown keyword is an error naming the closest setting, a validation
    error is a ``ConfigurationError`` without the values given, and a misspelt ``POSYNC_*`` variable is
    named in the log."""

    model_config = SettingsConfigDict(env_prefix="POSYNC_", extra="ignore", hide_input_in_errors=True)

    def __init__(self, *, _env_file: str | Path | None = None, _secrets_dir: str | Path | None = None,
                 **values: Any) -> None:
        name = type(self).__name__
        known = type(self)._keywords()
        unknown = sorted(set(values) - known)
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, known, n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigurationError(f"{name} has no setting {', '.join(hints)}")
        files = _files(_env_file, _secrets_dir)
        error: str | None = None
        try:
            super().__init__(**files, **type(self)._nested(values))
        except ValidationError as exc:  # reported without the input values, outside the except block
            error = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                              for e in exc.errors(include_input=False, include_url=False))
        if error is not None:
            raise ConfigurationError(f"invalid {'posync' if name == 'PosyncSettings' else name} settings: {error}")
        _warn_unknown_environment()

    @classmethod
    def _keywords(cls) -> set[str]:
        """The keywords the constructor takes."""
        return set(cls.model_fields)

    @classmethod
    def _nested(cls, values: dict[str, Any]) -> dict[str, Any]:
        """The keywords as the fields take them."""
        return values

    @field_validator("timezone", check_fields=False)
    @classmethod
    def _timezone_is_known(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone; give an IANA name such as 'Asia/Jakarta' or 'UTC'") \
                from None
        return value

    @field_validator("ho_url", check_fields=False)
    @classmethod
    def _ho_url_is_http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("ho_url must be an http:// or https:// URL with a host, e.g. http://ho.example:8002")
        return value


class PhotoOptions(BaseModel):
    """Photo replication's own options (``posync.photos``): ``PosyncSettings.photos``. Each is given flat
    as ``photo_<option>`` (keyword or ``POSYNC_PHOTO_<OPTION>``); HO, outlet and credentials are
    PosyncSettings' own."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    api: Literal["v1", "legacy"] = "v1"
    store: str = "fs:./photos"  # fs:PATH | s3://BUCKET | db | db:table=T,key=K,column=C[,max_mb=N]
    s3_endpoint: str | None = None  # host:port
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None
    s3_secure: bool = False
    s3_region: str | None = None
    s3_public_read: bool = False  # seed 001's policy on a bucket posync creates
    staging_dir: str | None = None  # partial downloads of the s3 and db stores (fs: inside the root)

    engine: Literal["auto", "curl", "urllib3"] = "auto"
    workers: int = Field(8, ge=1, le=64)
    page_size: int = Field(100, ge=1, le=1000)
    attempts: int = Field(4, ge=1, le=20)
    stall_timeout: float = Field(30.0, gt=0)
    transfer_timeout: float = Field(600.0, gt=0)
    deadline_seconds: float = Field(3600.0, gt=0)
    max_deletes: int = Field(100, ge=0)

    # products the outlet has: photos of others wait (seed 001 looks the product up first)
    product_table: str | None = None
    product_id_column: str = "id"

    # serving (posync.http.photos)
    local_base_url: str = "/photos"
    placeholder_url: str = "/static/images/no-image.png"

    # scheduler jobs (posync.workers.photo_jobs)
    incremental_minute: int = Field(0, ge=0, le=59)  # hourly, at this minute
    full_hour: int = Field(2, ge=0, le=23)  # nightly full check, at this hour (seed 001: 2 AM)
    # each outlet runs them at its own offset (from its outlet id) within these minutes after that time
    incremental_spread_minutes: int = Field(15, ge=0, le=45)
    full_spread_minutes: int = Field(60, ge=0, le=180)

    @classmethod
    def flat_names(cls) -> dict[str, str]:
        """``photo_<option>`` -> option: the keywords and (upper-cased, after ``POSYNC_``) the variables."""
        return {f"photo_{name}": name for name in cls.model_fields}


class _PhotoVariables(PydanticBaseSettingsSource):
    """``POSYNC_PHOTO_STORE``, ``POSYNC_PHOTO_WORKERS``, ...: the nested photo options from their flat
    variables (case-insensitive, as pydantic-settings reads the others), in the environment or (``variables``)
    the ``.env`` file's. Keywords given go first: sources are merged key by key, so ``photos`` from the
    keywords keeps the variables it does not set, unless it is a whole PhotoOptions."""

    def __init__(self, settings_cls: type[BaseSettings],
                 variables: Callable[[], Mapping[str, str | None]] = lambda: os.environ) -> None:
        super().__init__(settings_cls)
        self._variables = variables

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # not per field: __call__ builds ``photos`` whole

    def __call__(self) -> dict[str, Any]:
        options = {f"POSYNC_{flat}".upper(): name for flat, name in PhotoOptions.flat_names().items()}
        found = {options[k.upper()]: v for k, v in self._variables().items() if k.upper() in options}
        return {"photos": found} if found else {}


class Stored:
    """What ``posync_outlet`` holds for the settings (``posync.settings_from_outlet``): plain ``values``, and
    ``credentials``, a function decrypting the stored ones (called only when no higher source gives any)."""

    def __init__(self, values: Mapping[str, Any], credentials: Callable[[], Mapping[str, str]] | None) -> None:
        self.values = dict(values)
        self.credentials = credentials
        self.used: set[str] = set()  # the fields the table gave

    def __repr__(self) -> str:
        return f"Stored({sorted(self.values)}, credentials={'stored' if self.credentials else None})"


_STORED: ContextVar[Stored | None] = ContextVar("posync_stored_settings", default=None)
CREDENTIALS = frozenset({"api_key", "username", "password"})


class _StoredValues(PydanticBaseSettingsSource):
    """The last source: the config table's values, for the fields no higher source gave. The credentials
    are one unit: when a higher source gives any of api_key, username, password, the stored ones are not
    read (nor decrypted)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        stored = _STORED.get()
        if stored is None:
            return {}
        given = set(self.current_state)
        values = {k: v for k, v in stored.values.items() if k not in given and v is not None}
        if stored.credentials is not None and not given & CREDENTIALS:
            values.update(stored.credentials())  # a wrong key: ConfigKeyError, before any validation
        stored.used = set(values)
        return values


class PosyncSettings(StrictSettings):
    ho_url: str = "http://127.0.0.1:8002"
    # which dialect HO speaks: "posync" (docs/protocol.md) or "seed" (the HO of seeds 004/001:
    # docs/seed-profile.md)
    ho_profile: Literal["posync", "seed"] = "posync"
    outlet_id: str = "outlet-1"
    outlet_code: str | None = None  # seed 003's outlet code (informational: HO knows the outlet by outlet_id)
    company_id: str = "company-1"
    store_id: str | None = None  # defaults to outlet_id
    brand_id: str | None = None  # seed 004: products are served per brand (MISSING_BRAND_ID without it)
    # auth: an API key (seed 003) or username/password for the JWT token endpoint (seeds 001/004)
    api_key: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    token_path: str = "/api/v1/token/"
    # the seed HO does not deduplicate usages: posync sends this field with a stable id HO can key on
    usage_id_field: str = "usage_id"
    db_url: str | None = None  # the outlet database, when posync builds the engine (``posync photos``)
    photos: PhotoOptions = Field(default_factory=PhotoOptions)  # given flat too: photo_store=..., POSYNC_PHOTO_*

    push_batch_size: int = Field(500, ge=1, le=5000)
    pull_page_size: int = Field(1000, ge=1, le=10_000)
    # a page HO sends is applied in transactions of at most this many records (an HO may ignore limit)
    apply_chunk_size: int = Field(500, ge=1, le=5000)
    lease_seconds: float = Field(60.0, gt=0)
    # every HTTP call's whole budget (connect, send, wait, read), not a per-read timeout
    request_timeout: float = Field(30.0, gt=0)
    # the largest answer posync reads (a bigger one is a ProtocolError: lower pull_page_size)
    max_response_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    sync_interval_seconds: float = Field(30.0, gt=0)
    # the outlet's IANA time zone (POSYNC_TIMEZONE=Asia/Jakarta): the photo passes' minute and hour are local
    timezone: str = "UTC"
    # False: the scheduler runs no sync job (capture goes on). Unless a higher source gives it, the scheduler
    # follows posync_outlet.sync_enabled live (`posync config set sync_enabled=false`), read every few seconds
    sync_enabled: bool = True
    # a committed change is pushed at once (push only, no pull), not at the next interval: the syncer hears
    # this process's commits at once and other processes' within push_watch_interval_seconds (a local read)
    push_on_commit: bool = True
    push_watch_interval_seconds: float = Field(0.25, gt=0)
    # several worker processes on one outlet database: one of them (the syncer lease's holder) runs the sync
    # jobs; after its death another takes over within syncer_lease_seconds + syncer_renew_seconds
    single_syncer: bool = True
    syncer_lease_seconds: float = Field(6.0, gt=2)
    syncer_renew_seconds: float = Field(1.5, gt=0)
    # how long close() waits for a running cycle before it returns anyway
    close_timeout: float = Field(10.0, ge=0)
    # the id reconciliation (deletes HO never reports): how often, and the most it may delete in one run
    reconcile_interval_seconds: float = Field(3600.0, gt=0)
    reconcile_max_delete_fraction: float = Field(0.5, gt=0, le=1)
    # offset paging (seed HO): the next pass starts this long before the last pass's start (HO's clock)
    since_overlap_seconds: float = Field(300.0, ge=0)
    # opt-in: hold Python's cyclic GC off during posync's claim/settle/apply database work (posync/_gc.py)
    pause_gc: bool = False
    # SQLite: the till's writes in this process go before posync's next write transaction (posync/db.py)
    yield_to_host: bool = True

    # while HO is unreachable the whole queue waits, backing off from the first to the second figure
    outage_initial_backoff_seconds: float = Field(2.0, gt=0)
    outage_max_backoff_seconds: float = Field(300.0, gt=0)
    # HO's Retry-After is obeyed up to this (a longer one is HO's mistake, not a reason to stop selling to it)
    max_retry_after_seconds: float = Field(900.0, ge=0)
    # after an outage HO is probed (its version endpoint, one small GET) at most this far apart, jittered;
    # the first answer ends the outage and the cycle runs at once
    outage_probe_seconds: float = Field(20.0, gt=0)
    # an outlet that moved nothing for 2 minutes polls HO less the longer it is idle, at most this far
    # apart (posync.retry.IdlePolling); a sale, a trigger or a change from HO ends it. 0: poll every interval
    idle_poll_max_seconds: float = Field(1200.0, ge=0)

    max_retries: int = Field(3, ge=0)
    initial_backoff_seconds: float = Field(60.0, ge=0)
    max_backoff_seconds: float = Field(1800.0, ge=0)
    backoff_multiplier: float = Field(2.0, ge=1)

    # status and health (seed 003's metrics and alert thresholds): rates and durations over the last
    # health_window_seconds; unhealthy when more than health_max_failure_rate of its cycles failed, or no
    # cycle completed for health_max_silence_seconds
    health_window_seconds: int = Field(3600, ge=60)
    health_max_failure_rate: float = Field(0.10, ge=0, le=1)
    health_max_silence_seconds: float = Field(3600.0, gt=0)
    # posync_sync_log rows older than this are removed by the hourly housekeeping (the metrics' counters
    # keep their totals)
    log_retention_days: float = Field(14.0, gt=0)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        def dotenv_variables() -> Mapping[str, str | None]:
            return getattr(dotenv_settings, "env_vars", {})

        def secret_files() -> Mapping[str, str | None]:  # posync_photo_s3_secret_key, ...: one file each
            found = getattr(file_secret_settings, "secrets_dir", None)
            folders = [Path(d) for d in (found if isinstance(found, (list, tuple)) else [found]) if d]
            return {f.name: f.read_text().strip() for d in folders if d.is_dir()
                    for f in d.iterdir() if f.name.lower().startswith("posync_photo_") and f.is_file()}

        return (init_settings, env_settings, _PhotoVariables(settings_cls), dotenv_settings,
                _PhotoVariables(settings_cls, dotenv_variables), file_secret_settings,
                _PhotoVariables(settings_cls, secret_files), _StoredValues(settings_cls))

    _stored_fields: frozenset[str] = PrivateAttr(default=frozenset())

    @classmethod
    def from_stored(cls, stored: Stored, **values: Any) -> PosyncSettings:
        """Settings whose lowest source is ``stored`` (the config table's values): what
        ``posync.settings_from_outlet`` builds. ``values`` are keywords, as for the constructor."""
        token = _STORED.set(stored)
        try:
            settings = cls(**values)
        finally:
            _STORED.reset(token)
        settings._stored_fields = frozenset(stored.used)
        return settings

    @property
    def stored_fields(self) -> frozenset[str]:
        """The fields the config table gave (``posync.settings_from_outlet``); empty otherwise."""
        return self._stored_fields

    @property
    def sync_enabled_given(self) -> bool | None:
        """``sync_enabled`` when code, the environment or a file gave it (it then wins over the table's
        switch), else ``None``: the scheduler follows ``posync_outlet.sync_enabled``."""
        if "sync_enabled" in self.model_fields_set - self._stored_fields:
            return self.sync_enabled
        return None

    @classmethod
    def _keywords(cls) -> set[str]:
        return set(cls.model_fields) | set(PhotoOptions.flat_names())

    @classmethod
    def _nested(cls, values: dict[str, Any]) -> dict[str, Any]:
        """``photo_store="db"`` -> ``photos={"store": "db"}``."""
        names = PhotoOptions.flat_names()
        flat = {names[k]: v for k, v in values.items() if k in names}
        if not flat:
            return values
        if "photos" in values:
            raise ConfigurationError("give the photo options flat (photo_store=...) or as photos=..., not both")
        return {**{k: v for k, v in values.items() if k not in names}, "photos": flat}

    @model_validator(mode="after")
    def _auth_is_configured(self) -> PosyncSettings:
        if self.api_key is None and not (self.username and self.password):
            raise ValueError("configure api_key, or username and password, for head office")
        if self.ho_profile == "seed" and not (self.username and self.password):
            raise ValueError("the seed HO authenticates with JWT: configure username and password")
        if self.ho_profile == "seed" and not {"company_id", "store_id"} <= self.model_fields_set:
            # the defaults are for the demo: against a real HO they would pull an empty catalogue, silently
            raise ValueError("the seed HO serves a company's and a store's data: configure company_id and store_id")
        if self.request_timeout >= self.lease_seconds:
            raise ValueError("request_timeout must be shorter than lease_seconds")
        if self.max_backoff_seconds < self.initial_backoff_seconds:
            raise ValueError("max_backoff_seconds must be at least initial_backoff_seconds")
        if self.syncer_renew_seconds * 2 > self.syncer_lease_seconds:
            raise ValueError("syncer_renew_seconds must be at most half of syncer_lease_seconds")
        return self

    @property
    def effective_store_id(self) -> str:
        return self.store_id or self.outlet_id

    @property
    def schedule_key(self) -> str:
        """What sets the outlet's place in time (its schedules' phases, where its idle polls land): its
        store and its outlet id. A seed-profile fleet names its stores and may leave ``outlet_id`` at its
        default; several tills of one store differ by outlet id: keyed on either alone, they would run in
        step."""
        return f"{self.store_id}/{self.outlet_id}" if self.store_id else self.outlet_id

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_retries, self.initial_backoff_seconds, self.max_backoff_seconds,
                           self.backoff_multiplier)

    def idle_polling(self) -> IdlePolling:
        return IdlePolling(self.idle_poll_max_seconds, phase=phase(self.schedule_key, "idle"))

    def outage_policy(self) -> OutagePolicy:
        return OutagePolicy(self.outage_initial_backoff_seconds,
                            max(self.outage_initial_backoff_seconds, self.outage_max_backoff_seconds),
                            max_retry_after=self.max_retry_after_seconds, probe_cap=self.outage_probe_seconds)


# PhotoSettings(...): photo code's name for PosyncSettings from before issue 16 (README, the CLI, hosts)
PhotoSettings = PosyncSettings

# POSYNC_* variables read elsewhere: the CLI's app, the tests' server, the settings' files, the config key
_OTHER_VARIABLES = frozenset({"APP", "PG_URL", "CONVERGENCE_EXAMPLES", "NO_SHRINK", "ENV_FILE", "SECRETS_DIR",
                              "CONFIG_KEY", "CONFIG_KEY_FILE"})


def _files(env_file: str | Path | None, secrets_dir: str | Path | None) -> dict[str, Any]:
    """The ``.env`` file and the secrets directory to read, if any was asked for (argument, else
    ``POSYNC_ENV_FILE`` / ``POSYNC_SECRETS_DIR``): a path that does not exist is an error, not silence."""
    env_file = env_file or os.environ.get("POSYNC_ENV_FILE") or None
    secrets_dir = secrets_dir or os.environ.get("POSYNC_SECRETS_DIR") or None
    if env_file is not None and not Path(env_file).is_file():
        raise ConfigurationError(f"the settings' .env file {str(env_file)!r} does not exist (POSYNC_ENV_FILE)")
    if secrets_dir is not None and not Path(secrets_dir).is_dir():
        raise ConfigurationError(f"the settings' secrets directory {str(secrets_dir)!r} does not exist "
                                 "(POSYNC_SECRETS_DIR)")
    return {"_env_file": env_file, "_secrets_dir": secrets_dir}



def _warn_unknown_environment() -> None:
    """A misspelt ``POSYNC_*`` variable is named in the log (it cannot be an error: hosts and posync's
    other parts keep variables of their own under the prefix)."""
    names = {k[len("POSYNC_"):] for k in os.environ if k.startswith("POSYNC_")}
    if not names:
        return
    everything = {n.upper() for n in PosyncSettings._keywords()} | _OTHER_VARIABLES
    for name in sorted(names - everything):
        close = difflib.get_close_matches(name, everything, n=1)
        log.warning("POSYNC_%s is not a posync setting%s; it is ignored", name,
                    f" (did you mean POSYNC_{close[0]}?)" if close else "")
