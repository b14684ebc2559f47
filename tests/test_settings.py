"""Settings: a typo is an error that names the setting meant; no secret ever appears in an error, a repr
or a log, on any path (issue #10 item 21, issue #11 item 7)."""

from __future__ import annotations

import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest

import posync
from posync import PosyncSettings
from posync.photos import PhotoSettings

SECRET = "pw-sekrit-0xdeadbeef"


def _all_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)


@pytest.mark.parametrize("kwargs", [
    {"username": "u", "password": SECRET, "request_timeout": -1},
    {"username": "u", "password": SECRET, "push_batch_size": "many"},
    {"api_key": SECRET, "lease_seconds": 1.0, "request_timeout": 5.0},
    {"password": SECRET},  # no username: the model validator sees the whole input
    {"api_key": SECRET, "ho_profile": "seed"},
])
def test_a_validation_error_never_shows_the_secret(kwargs: dict[str, object]) -> None:
    with pytest.raises(posync.ConfigurationError) as info:
        PosyncSettings(**kwargs)
    assert SECRET not in _all_text(info.value)


def test_an_unknown_keyword_is_an_error_naming_the_closest_setting() -> None:
    with pytest.raises(posync.ConfigurationError, match="'brandid' \\(did you mean 'brand_id'\\?\\)"):
        PosyncSettings(api_key="k", brandid="b-1")
    assert PosyncSettings(api_key="k", brand_id="b-1").brand_id == "b-1"  # before: silently ignored


def test_secrets_are_masked_in_reprs_and_dumps() -> None:
    s = PosyncSettings(api_key=SECRET, password=SECRET, username="u")
    assert SECRET not in repr(s) and SECRET not in str(s.model_dump())


def test_the_cli_never_prints_the_secret(tmp_path: Path) -> None:
    """``posync status --app ...`` with settings that do not validate: a clear error on stderr, no secret."""
    (tmp_path / "badapp.py").write_text(
        "import posync\n"
        f"def build():\n    return posync.PosyncSettings(username='u', password={SECRET!r}, request_timeout=-1)\n")
    done = subprocess.run([sys.executable, "-m", "posync.cli", "status", "--app", "badapp:build"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2, done.stderr
    assert "request_timeout" in done.stderr and SECRET not in done.stderr + done.stdout


@pytest.mark.parametrize(("make", "typo", "meant"), [
    (lambda **kw: PosyncSettings(api_key=SECRET, **kw), "brandid", "brand_id"),
    (lambda **kw: PhotoSettings(username="u", password=SECRET, **kw), "photo_stor", "photo_store"),
], ids=["core", "photos"])
def test_both_settings_refuse_a_misspelt_keyword_and_an_ho_url_without_a_scheme(make: Any, typo: str,
                                                                               meant: str) -> None:
    with pytest.raises(posync.ConfigurationError, match=f"did you mean '{meant}'") as misspelt:
        make(**{typo: "db"})  # before: PhotoSettings ignored it and used its default store
    assert SECRET not in _all_text(misspelt.value)
    for url in ("127.0.0.1:8002", "ho.example", "ftp://ho.example/", "http://"):
        with pytest.raises(posync.ConfigurationError, match="ho_url") as bad:
            make(ho_url=url)
        assert SECRET not in _all_text(bad.value)
    assert make(ho_url="https://ho.example:8443/base").ho_url == "https://ho.example:8443/base"


def test_a_misspelt_photo_variable_is_named_in_the_log(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("POSYNC_PHOTO_STOR", "db")
    with caplog.at_level("WARNING", logger="posync.settings"):
        PhotoSettings(username="u", password=SECRET)
    assert "POSYNC_PHOTO_STOR is not a posync setting (did you mean POSYNC_PHOTO_STORE?)" in caplog.text
