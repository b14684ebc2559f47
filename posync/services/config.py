"""The outlet's config at rest (issue 17, item 3): seed 003's ``OutletConfig`` in ``posync_outlet``.

The row holds the outlet (id, code), HO's URL, company, store and brand, the sync switch, the last sync,
and the credentials (an API key, or username and password) as one token encrypted with the config key
(``posync.config_key``: Fernet through MultiFernet; the key comes from the environment, never from the
database). :func:`settings_from_outlet` makes the table the settings' lowest source; :func:`store_config`,
:func:`show_config` and :func:`rotate_key` are what ``posync config set | show | rotate-key`` do.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import Engine

from posync.config_key import CREDENTIAL_FIELDS, KEY_FILE_VARIABLE, KEY_VARIABLE, ConfigKey
from posync.db import write_transaction
from posync.errors import ConfigKeyError, ConfigurationError
from posync.migrations import locked
from posync.repositories.outlet import CONFIG_COLUMNS, OutletConfigRow, OutletRepository
from posync.settings import PosyncSettings, Stored

__all__ = ["MASK", "SETTABLE", "check_config", "rotate_key", "settings_from_outlet", "show_config", "store_config"]

MASK = "********"
IDENTITY = ("outlet_id", "company_id", "store_id", "ho_url")  # the binding: changing one re-binds
SETTABLE = frozenset(CONFIG_COLUMNS | set(CREDENTIAL_FIELDS))
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

_repo = OutletRepository()


def _no_key() -> ConfigKeyError:
    return ConfigKeyError(f"the stored credentials need the config key: set {KEY_VARIABLE} (comma-separated "
                          f"Fernet keys, newest first) or {KEY_FILE_VARIABLE}")


def _key(config_key: ConfigKey | None) -> ConfigKey | None:
    return config_key if config_key is not None else ConfigKey.from_environment()


def _read(engine: Engine) -> OutletConfigRow | None:
    with engine.connect() as conn:
        return _repo.config(conn)


def settings_from_outlet(engine: Engine, *, config_key: ConfigKey | None = None, **overrides: Any) -> PosyncSettings:
    """``PosyncSettings`` whose lowest source is the config table: keywords (``overrides``) first, then
    ``POSYNC_*`` variables, then the ``.env`` file and secrets directory (if asked for), then what
    ``posync_outlet`` holds (HO URL, outlet id and code, company, store, brand, sync switch, credentials).

    The stored credentials are decrypted with ``config_key`` (default: ``POSYNC_CONFIG_KEY`` or
    ``POSYNC_CONFIG_KEY_FILE``) only when no higher source gives any of api_key, username, password; a key
    that cannot decrypt them is a :class:`~posync.errors.ConfigKeyError`. One read of the database, here."""
    row = _read(engine)
    if row is None:
        return PosyncSettings(**overrides)
    values = {"outlet_id": row.outlet_id, "company_id": row.company_id, "store_id": row.store_id,
              "ho_url": row.ho_url, "outlet_code": row.outlet_code, "brand_id": row.brand_id,
              "sync_enabled": row.sync_enabled}
    token = row.credentials

    def credentials() -> Mapping[str, str]:
        assert token is not None
        key = _key(config_key)
        if key is None:
            raise _no_key()
        return key.decrypt(token)

    return PosyncSettings.from_stored(Stored(values, credentials if token is not None else None), **overrides)


def show_config(engine: Engine, *, config_key: ConfigKey | None = None) -> dict[str, Any] | None:
    """The stored config, its secrets masked; ``None`` for a database bound to no outlet. Which credentials
    are stored shows only with the config key (a wrong one is a ``ConfigKeyError``); without one they show
    as one masked value."""
    row = _read(engine)
    if row is None:
        return None
    shown: dict[str, Any] = {k: v for k, v in row._asdict().items() if k != "credentials"}
    key = _key(config_key)
    if row.credentials is None:
        shown["credentials"] = None
    elif key is None:
        shown["credentials"] = MASK
    else:
        shown["credentials"] = {k: MASK for k in sorted(key.decrypt(row.credentials))}
    return shown


def _parse(field: str, value: Any) -> Any:
    if field == "sync_enabled":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in _TRUE | _FALSE:
            raise ConfigurationError("sync_enabled must be true or false")
        return text in _TRUE
    if field in CREDENTIAL_FIELDS:
        return str(value)
    text = str(value).strip()
    if field in ("outlet_code", "brand_id") and not text:
        return None  # `outlet_code=` clears it
    if not text:
        raise ConfigurationError(f"{field} cannot be empty")
    if len(text) > (500 if field == "ho_url" else 100):
        raise ConfigurationError(f"{field} is too long")
    if field == "ho_url":
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError("ho_url must be an http:// or https:// URL with a host")
        return text.rstrip("/")  # as the binding compares it
    return text


def check_config(values: Mapping[str, Any], *, config_key: ConfigKey | None = None,
                 ) -> tuple[dict[str, Any], ConfigKey | None]:
    """Config fields checked before any database is touched: each known and readable, and the config key
    there when credentials are given. Returns the parsed values and the key."""
    unknown = sorted(set(values) - SETTABLE)
    if unknown:
        hints = [f"{k!r}" + (f" (did you mean {c[0]!r}?)" if (c := difflib.get_close_matches(k, SETTABLE, n=1))
                             else "") for k in unknown]
        raise ConfigurationError(f"the outlet config has no field {', '.join(hints)}")
    parsed = {k: _parse(k, v) for k, v in values.items()}
    key = _key(config_key)
    if key is None and any(k in CREDENTIAL_FIELDS for k in parsed):
        raise ConfigKeyError(f"storing credentials needs the config key: set {KEY_VARIABLE} or {KEY_FILE_VARIABLE}")
    return parsed, key


def store_config(engine: Engine, values: Mapping[str, Any], *, config_key: ConfigKey | None = None,
                 rebind: bool = False) -> None:
    """Store config fields in ``posync_outlet``. Credentials (api_key, username, password) are merged into
    the stored ones (an empty value removes one) and encrypted under the config key's first key.

    A database bound to no outlet is bound here: give outlet_id, company_id and ho_url (store_id defaults
    to outlet_id). Changing outlet_id, company_id, store_id or ho_url of a bound database re-binds it, so
    it needs ``rebind=True`` (its queued changes then go to HO as that outlet)."""
    parsed, key = check_config(values, config_key=config_key)
    plain = {k: v for k, v in parsed.items() if k in CONFIG_COLUMNS}
    secrets = {k: v for k, v in parsed.items() if k in CREDENTIAL_FIELDS}
    with locked(engine) as conn:  # the binding's lock: a worker starting now binds before or after this
        row = _repo.config(conn)
        if row is None:
            missing = [f for f in ("outlet_id", "company_id", "ho_url") if f not in plain]
            if missing:
                raise ConfigurationError(f"this database is bound to no outlet yet: give {', '.join(missing)} "
                                         "to bind it")
            _repo.create_config(conn, {"store_id": plain["outlet_id"], **plain}, datetime.now(UTC))
        else:
            moved = [f for f in IDENTITY if f in plain and plain[f] != getattr(row, f)]
            if moved and not rebind:
                raise ConfigurationError(f"changing {', '.join(moved)} re-binds this database to another outlet "
                                         "(its queued changes go to HO as that outlet): confirm with --rebind")
            _repo.update_config(conn, plain)
        if secrets:
            assert key is not None
            stored = key.decrypt(row.credentials) if row is not None and row.credentials is not None else {}
            merged = {k: v for k, v in {**stored, **secrets}.items() if v}
            _repo.set_credentials(conn, key.encrypt(merged) if merged else None)


def rotate_key(engine: Engine, config_key: ConfigKey | None = None) -> bool:
    """Re-encrypt the stored credentials under the config key's first key (any of its keys may have
    encrypted them: list the new key first, the old one after). ``False`` when none are stored."""
    key = _key(config_key)
    if key is None:
        raise _no_key()
    with write_transaction(engine) as conn:
        row = _repo.config(conn)
        if row is None or row.credentials is None:
            return False
        _repo.set_credentials(conn, key.rotate(row.credentials))
    return True
