"""``posync config show | set | rotate-key``: the outlet's config at rest, in ``posync_outlet``.

The credentials are encrypted with the config key (``POSYNC_CONFIG_KEY``: Fernet keys, comma-separated,
newest first; or ``POSYNC_CONFIG_KEY_FILE``: one key per line). Secrets are never printed: ``show`` masks
them, in the table (the default) and in the JSON document (``--json``). A secret given as ``-``
(``posync config set password=-``) is read from standard input, so it stays out of the shell's history
and the process list.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from sqlalchemy.engine import Engine

from posync.cli.render import JsonOption, counts, print_fields, print_json

__all__ = ["config_app"]

config_app = typer.Typer(help="The outlet's config in its database (posync_outlet); credentials encrypted.",
                         no_args_is_help=True)

UrlOption = typer.Option(..., "--url", envvar="POSYNC_DB_URL", help="SQLAlchemy URL of the outlet database")
KeyFileOption = typer.Option(None, "--key-file", help="the config key file (default: POSYNC_CONFIG_KEY, "
                                                      "else POSYNC_CONFIG_KEY_FILE)")


@contextmanager
def _engine(url: str, *, new_ok: bool = False) -> Iterator[Engine]:
    """The outlet database at posync's schema; ``new_ok``: a database posync never touched gets its tables
    (``set`` on a new outlet's database). An older, newer or foreign schema is refused with the fix."""
    from posync.db import create_engine
    from posync.migrations import is_new, require_current, upgrade

    engine = create_engine(url)
    try:
        if new_ok and is_new(engine):
            upgrade(engine)
        require_current(engine)
        yield engine
    finally:
        engine.dispose()


def _key(key_file: Path | None) -> Any:
    from posync.config_key import ConfigKey

    return ConfigKey.from_file(key_file) if key_file is not None else None


@config_app.command("show")
def show(url: str = UrlOption, key_file: Path | None = KeyFileOption, as_json: bool = JsonOption) -> None:
    """The stored config, secrets masked (which credentials are stored shows only with the config key)."""
    from posync.services.config import show_config

    with _engine(url) as engine:
        shown = show_config(engine, config_key=_key(key_file))
    if as_json:
        print_json(shown)
    elif shown is None:
        typer.echo("no outlet config stored (posync config set ...)")
    else:
        print_fields([(name, _credentials(value) if name == "credentials" else value)
                      for name, value in shown.items()], title="outlet config")


def _credentials(value: Any) -> str:
    """The masked credentials on one line: ``password ********, username ********``."""
    if value is None:
        return "none"
    return counts(value) if isinstance(value, dict) else str(value)


@config_app.command("set")
def set_(pairs: list[str] = typer.Argument(..., help="field=value ... (ho_url, outlet_id, outlet_code, company_id, "
                                                     "store_id, brand_id, sync_enabled, api_key, username, "
                                                     "password); a secret given as - is read from stdin"),
         url: str = UrlOption, key_file: Path | None = KeyFileOption,
         rebind: bool = typer.Option(False, "--rebind", help="confirm a change of outlet_id, company_id, store_id "
                                                             "or ho_url: queued changes go to HO as that outlet"),
         as_json: bool = JsonOption) -> None:
    """Store config fields; credentials are encrypted under the config key's first key."""
    from posync.config_key import CREDENTIAL_FIELDS
    from posync.services.config import check_config, store_config

    values: dict[str, str] = {}
    for pair in pairs:
        field, sep, value = pair.partition("=")
        if not sep or not field.strip():  # the pair itself is not shown: it may be a secret
            raise typer.BadParameter("expected field=value pairs")
        field = field.strip()
        if field in CREDENTIAL_FIELDS and value == "-":
            value = sys.stdin.readline().rstrip("\r\n")
        values[field] = value
    config_key = _key(key_file)
    check_config(values, config_key=config_key)  # before any database is opened (a mistyped --url makes one)
    with _engine(url, new_ok=True) as engine:
        store_config(engine, values, config_key=config_key, rebind=rebind)
    removed = sorted(k for k, v in values.items() if not v)  # an empty value clears a field
    stored = sorted(k for k in values if k not in removed)
    if as_json:
        print_json({"stored": stored, "removed": removed})
    else:
        typer.echo("; ".join(f"{what}: {', '.join(names)}" for what, names in (("stored", stored),
                                                                               ("removed", removed)) if names))


@config_app.command("rotate-key")
def rotate_key(url: str = UrlOption, key_file: Path | None = KeyFileOption,
               new_key_file: Path | None = typer.Option(None, "--new-key-file", help="the new key (file, one key "
                                                        "a line); without it, the config key's first key is "
                                                        "the new one"),
               as_json: bool = JsonOption) -> None:
    """Re-encrypt the stored credentials under the new key (the current key must still decrypt them)."""
    from posync.config_key import ConfigKey
    from posync.errors import ConfigKeyError
    from posync.services.config import rotate_key as rotate

    current = _key(key_file) or ConfigKey.from_environment()
    if new_key_file is not None:
        if current is None:
            raise ConfigKeyError("rotate-key needs the current config key too: set POSYNC_CONFIG_KEY or "
                                 "POSYNC_CONFIG_KEY_FILE (or --key-file)")
        current = ConfigKey.from_file(new_key_file).then(current)
    with _engine(url) as engine:
        rotated = rotate(engine, current)
    if as_json:
        print_json({"rotated": rotated})
    else:
        typer.echo("credentials re-encrypted under the new key" if rotated else "no credentials stored: "
                   "nothing to re-encrypt")
    if rotated and new_key_file is not None:
        typer.echo("now give posync the new key (first in POSYNC_CONFIG_KEY or the key file); the old one "
                   "can go", err=True)
