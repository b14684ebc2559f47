"""The config key: what encrypts the outlet's credentials at rest (``posync_outlet.credentials``).

An authenticated cipher, Fernet (AES-128-CBC + HMAC-SHA256), through ``MultiFernet`` so a key can be
rotated: the first key encrypts, every key listed may decrypt. The keys come from the environment, never
from the database: ``POSYNC_CONFIG_KEY`` (one or more Fernet keys, comma-separated, newest first) or else
``POSYNC_CONFIG_KEY_FILE`` (a file with one key per line, newest first; blank lines and ``#`` comments are
skipped). Make a key with ``python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"``.

Nothing here puts a key or a decrypted value in a message, a log or a repr.
"""

from __future__ import annotations

import binascii
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from posync.errors import ConfigKeyError

__all__ = ["CREDENTIAL_FIELDS", "KEY_FILE_VARIABLE", "KEY_VARIABLE", "ConfigKey"]

KEY_VARIABLE = "POSYNC_CONFIG_KEY"
KEY_FILE_VARIABLE = "POSYNC_CONFIG_KEY_FILE"
# what the one encrypted token holds: {"api_key": ...} or {"username": ..., "password": ...}
CREDENTIAL_FIELDS = ("api_key", "username", "password")

CANNOT_DECRYPT = "the config key cannot decrypt the stored credentials: "


class ConfigKey:
    """One or more Fernet keys, newest first: the first encrypts, all of them decrypt."""

    def __init__(self, keys: Iterable[str | bytes]) -> None:
        given = [k for k in (k.strip() for k in keys) if k]
        if not given:
            raise ConfigKeyError(f"no config key given: set {KEY_VARIABLE} or {KEY_FILE_VARIABLE}")
        self._keys: list[Fernet] = []
        for n, key in enumerate(given, 1):
            fernet = _fernet(key)
            if fernet is None:  # raised outside the except: nothing about the key is chained
                raise ConfigKeyError(f"config key {n} of {len(given)} is not a Fernet key (32 url-safe "
                                     "base64-encoded bytes, as Fernet.generate_key() makes)")
            self._keys.append(fernet)
        self._fernet = MultiFernet(self._keys)

    @property
    def count(self) -> int:
        return len(self._keys)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ConfigKey | None:
        """The key ``POSYNC_CONFIG_KEY`` gives, else the key file ``POSYNC_CONFIG_KEY_FILE`` names; ``None``
        when neither is set."""
        environ = os.environ if environ is None else environ
        if environ.get(KEY_VARIABLE, "").strip():
            return cls(environ[KEY_VARIABLE].split(","))
        if environ.get(KEY_FILE_VARIABLE, "").strip():
            return cls.from_file(environ[KEY_FILE_VARIABLE])
        return None

    @classmethod
    def from_file(cls, path: str | Path) -> ConfigKey:
        """A key file: one key per line, newest first."""
        try:
            text = Path(path).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigKeyError(f"cannot read the config key file {str(path)!r}: {type(exc).__name__}") from None
        return cls(line for line in text.splitlines() if not line.lstrip().startswith("#"))

    def then(self, older: ConfigKey) -> ConfigKey:
        """This key first, then ``older``'s keys: to rotate from ``older`` to this one."""
        combined = ConfigKey.__new__(ConfigKey)
        combined._keys = [*self._keys, *older._keys]
        combined._fernet = MultiFernet(combined._keys)
        return combined

    def encrypt(self, credentials: Mapping[str, str]) -> bytes:
        """The credentials as one token (JSON inside), under the first key."""
        return self._fernet.encrypt(json.dumps(dict(credentials), sort_keys=True).encode())

    def decrypt(self, token: bytes) -> dict[str, str]:
        try:
            plain = self._fernet.decrypt(bytes(token))
        except InvalidToken:
            raise ConfigKeyError(CANNOT_DECRYPT + _WHY.format(n=self.count)) from None
        value = json.loads(plain)
        if not isinstance(value, dict) or set(value) - set(CREDENTIAL_FIELDS):
            raise ConfigKeyError(CANNOT_DECRYPT + "they decrypt, but are not posync's credentials")
        return {str(k): str(v) for k, v in value.items()}

    def rotate(self, token: bytes) -> bytes:
        """``token`` re-encrypted under the first key (any of the keys may have encrypted it)."""
        try:
            return self._fernet.rotate(bytes(token))
        except InvalidToken:
            raise ConfigKeyError(CANNOT_DECRYPT + _WHY.format(n=self.count)) from None

    def __repr__(self) -> str:
        return f"ConfigKey({self.count} key{'s' if self.count != 1 else ''})"


def _fernet(key: str | bytes) -> Fernet | None:
    try:
        return Fernet(key)
    except (ValueError, binascii.Error, TypeError):
        return None


_WHY = ("none of the {n} key(s) given encrypted them (a wrong key, or the key they were encrypted with was "
        "dropped before `posync config rotate-key`)")
