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


# every keyword (and POSYNC_* variable) PhotoSettings took before issue 16 nested its photo options
_PHOTO_NAMES_BEFORE = (
    "photo_api", "photo_store", "photo_s3_endpoint", "photo_s3_access_key", "photo_s3_secret_key", "photo_s3_secure",
    "photo_s3_region", "photo_s3_public_read", "photo_staging_dir", "photo_engine", "photo_workers",
    "photo_page_size", "photo_attempts", "photo_stall_timeout", "photo_transfer_timeout", "photo_deadline_seconds",
    "photo_max_deletes", "photo_product_table", "photo_product_id_column", "photo_local_base_url",
    "photo_placeholder_url", "photo_incremental_minute", "photo_full_hour")


def test_the_photo_options_keep_their_names_and_each_setting_is_declared_once() -> None:
    from posync.photos import PhotoOptions

    defaults = PhotoOptions()
    for name in _PHOTO_NAMES_BEFORE:
        option = name.removeprefix("photo_")
        value = getattr(defaults, option)
        assert getattr(PhotoSettings(api_key="k", **{name: value}).photos, option) == value
    shared = {"ho_url", "outlet_id", "company_id", "store_id", "username", "password", "api_key", "token_path",
              "db_url", "request_timeout"}
    assert shared <= set(PosyncSettings.model_fields) and not shared & set(PhotoOptions.model_fields)
    assert PhotoSettings is PosyncSettings


def test_the_photo_variables_still_set_the_nested_photo_options(monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    for name, value in {"HO_URL": "http://ho.example:8002", "API_KEY": SECRET, "COMPANY_ID": "c-9",
                        "DB_URL": "sqlite:///pos.db", "REQUEST_TIMEOUT": "12", "PHOTO_STORE": "db",
                        "PHOTO_WORKERS": "3", "PHOTO_API": "legacy", "PHOTO_S3_SECRET_KEY": "s3-" + SECRET,
                        "PHOTO_S3_SECURE": "true", "PHOTO_INCREMENTAL_MINUTE": "17", "PHOTO_FULL_HOUR": "3",
                        "PHOTO_PRODUCT_TABLE": "product"}.items():
        monkeypatch.setenv(f"POSYNC_{name}", value)
    monkeypatch.setenv("posync_photo_page_size", "50")  # case-insensitive, as the core's variables
    with caplog.at_level("WARNING", logger="posync.settings"):
        for settings in (PosyncSettings(), PhotoSettings(photo_workers=5)):
            assert (settings.ho_url, settings.company_id, settings.db_url) == ("http://ho.example:8002", "c-9",
                                                                             "sqlite:///pos.db")
            assert settings.api_key is not None and settings.request_timeout == 12
            p = settings.photos
            assert (p.store, p.api, p.s3_secure, p.page_size, p.product_table) == ("db", "legacy", True, 50, "product")
            assert (p.incremental_minute, p.full_hour) == (17, 3)
            assert p.s3_secret_key is not None and p.s3_secret_key.get_secret_value() == "s3-" + SECRET
            assert SECRET not in repr(settings) + str(settings.model_dump())
    assert PosyncSettings().photos.workers == 3
    assert PhotoSettings(photo_workers=5).photos.workers == 5  # a keyword goes before its variable
    assert "not a posync setting" not in caplog.text
    monkeypatch.setenv("POSYNC_PHOTO_WORKERS", "0")
    with pytest.raises(posync.ConfigurationError, match="workers"):
        PosyncSettings()
