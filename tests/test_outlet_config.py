"""The outlet's config at rest (issue 17, item 3): seed 003's OutletConfig in ``posync_outlet``, credentials
encrypted with the config key (Fernet via MultiFernet), never readable in the database, never printed;
a wrong key is a ConfigKeyError; rotate-key re-encrypts under the new key; the settings' precedence is
keyword > ``POSYNC_*`` environment > ``.env`` file / secrets directory > the table; ``sync_enabled=false``
stops the scheduler's sync jobs and never capture. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import sqlmodel
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import posync
from posync.config_key import ConfigKey
from posync.demo.models import Order, pos_registry
from posync.errors import ConfigKeyError, ConfigurationError
from posync.services.config import rotate_key, show_config, store_config
from posync.services.outlet import SyncSwitch
from tests.support import prepare_database

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-api-key-do-not-print"
PASSWORD = "pa55-w0rd-do-not-print"
IDENTITY = {"outlet_id": "o-table", "company_id": "c-table", "store_id": "s-table",
            "ho_url": "http://table.example:8002"}


def _new_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("POSYNC_") and name != "POSYNC_PG_URL":
            monkeypatch.delenv(name)


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = prepare_database(db_url)
    yield engine
    engine.dispose()


def _stored_bytes(engine: sa.Engine) -> bytes:
    with engine.connect() as conn:
        return bytes(conn.execute(sa.text("SELECT credentials FROM posync_outlet WHERE id = 1")).scalar_one())


def test_credentials_round_trip_and_the_database_holds_only_ciphertext(engine: sa.Engine) -> None:
    key = ConfigKey([_new_key()])
    store_config(engine, {**IDENTITY, "api_key": SECRET}, config_key=key)
    stored = _stored_bytes(engine)
    assert SECRET.encode() not in stored and b"api_key" not in stored
    assert stored.startswith(b"gAAAAA")  # a Fernet token: version byte 0x80, base64url
    loaded = posync.settings_from_outlet(engine, config_key=key)
    assert loaded.api_key is not None and loaded.api_key.get_secret_value() == SECRET
    assert (loaded.outlet_id, loaded.company_id, loaded.store_id, loaded.ho_url) == tuple(IDENTITY.values())
    assert SECRET not in repr(loaded) and SECRET not in str(loaded)
    # username and password replace nothing but what they name; an empty value removes a credential
    store_config(engine, {"username": "cashier", "password": PASSWORD, "api_key": ""}, config_key=key)
    loaded = posync.settings_from_outlet(engine, config_key=key)
    assert loaded.api_key is None and loaded.username == "cashier"
    assert loaded.password is not None and loaded.password.get_secret_value() == PASSWORD
    assert PASSWORD.encode() not in _stored_bytes(engine)
    assert show_config(engine, config_key=key)["credentials"] == {"password": "********", "username": "********"}
    assert show_config(engine)["credentials"] == "********"  # no key: masked whole
    assert PASSWORD not in repr(show_config(engine, config_key=key))


def test_a_wrong_key_is_refused_with_a_config_key_error_that_tells_no_secret(engine: sa.Engine) -> None:
    right, wrong = _new_key(), _new_key()
    store_config(engine, {**IDENTITY, "api_key": SECRET}, config_key=ConfigKey([right]))
    for attempt in (lambda: posync.settings_from_outlet(engine, config_key=ConfigKey([wrong])),
                    lambda: show_config(engine, config_key=ConfigKey([wrong])),
                    lambda: store_config(engine, {"password": PASSWORD}, config_key=ConfigKey([wrong])),
                    lambda: rotate_key(engine, ConfigKey([wrong]))):
        with pytest.raises(ConfigKeyError) as refused:
            attempt()
        message = str(refused.value)
        assert message.startswith("the config key cannot decrypt the stored credentials: ")
        for secret in (SECRET, PASSWORD, right, wrong):
            assert secret not in message
        assert refused.value.__cause__ is None and refused.value.__suppress_context__
        assert isinstance(refused.value, ConfigurationError)
    assert posync.settings_from_outlet(engine, config_key=ConfigKey([right])).api_key is not None
    # no key at all: the stored credentials cannot be read (a typed error, naming the variables)
    with pytest.raises(ConfigKeyError, match="POSYNC_CONFIG_KEY"):
        posync.settings_from_outlet(engine)
    # a key that is not a Fernet key: refused without showing it
    with pytest.raises(ConfigKeyError, match="not a Fernet key") as malformed:
        ConfigKey(["not-a-fernet-key-but-a-secret"])
    assert "not-a-fernet-key-but-a-secret" not in str(malformed.value)


def test_rotation_re_encrypts_under_the_new_key(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = _new_key(), _new_key()
    store_config(engine, {**IDENTITY, "api_key": SECRET}, config_key=ConfigKey([old]))
    before = _stored_bytes(engine)
    monkeypatch.setenv("POSYNC_CONFIG_KEY", f"{new},{old}")  # the new key first, the old one still listed
    assert rotate_key(engine) is True
    after = _stored_bytes(engine)
    assert after != before and SECRET.encode() not in after
    loaded = posync.settings_from_outlet(engine, config_key=ConfigKey([new]))  # the new key alone
    assert loaded.api_key is not None and loaded.api_key.get_secret_value() == SECRET
    with pytest.raises(ConfigKeyError):  # the old key alone no longer decrypts them
        posync.settings_from_outlet(engine, config_key=ConfigKey([old]))
    monkeypatch.setenv("POSYNC_CONFIG_KEY", new)
    assert posync.settings_from_outlet(engine).api_key is not None  # the environment's key, by default


def test_precedence_keyword_then_environment_then_files_then_the_table(engine: sa.Engine, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    key = _new_key()
    monkeypatch.setenv("POSYNC_CONFIG_KEY", key)
    store_config(engine, {**IDENTITY, "brand_id": "b-table", "outlet_code": "OC-table", "api_key": SECRET,
                          "sync_enabled": "false"})
    env_file = tmp_path / "posync.env"
    env_file.write_text("POSYNC_BRAND_ID=b-file\nPOSYNC_OUTLET_CODE=OC-file\nPOSYNC_PHOTO_STORE=db\n")
    monkeypatch.setenv("POSYNC_ENV_FILE", str(env_file))
    monkeypatch.setenv("POSYNC_COMPANY_ID", "c-env")
    monkeypatch.setenv("POSYNC_STORE_ID", "s-env")
    monkeypatch.setenv("POSYNC_BRAND_ID", "b-env")

    s = posync.settings_from_outlet(engine, store_id="s-kw")
    assert s.store_id == "s-kw"  # keyword > environment > table
    assert s.company_id == "c-env"  # environment > table
    assert s.brand_id == "b-env"  # environment > .env file > table
    assert s.outlet_code == "OC-file"  # .env file > table
    assert s.photos.store == "db"  # the photo options' flat variables, from the .env file too
    assert (s.outlet_id, s.ho_url) == ("o-table", "http://table.example:8002")  # only the table gave them
    assert s.api_key is not None and s.api_key.get_secret_value() == SECRET
    assert s.sync_enabled is False and s.sync_enabled_given is None  # the table's switch: followed live
    assert s.stored_fields == {"outlet_id", "ho_url", "api_key", "sync_enabled"}
    assert posync.settings_from_outlet(engine, sync_enabled=True).sync_enabled_given is True

    # a secrets directory: one file per setting, below the environment, above the table
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "posync_api_key").write_text("from-the-secrets-dir")
    (secrets / "posync_outlet_id").write_text("o-secret")
    (secrets / "posync_photo_s3_secret_key").write_text("minio-secret\n")  # a photo option, by its flat name
    s = posync.settings_from_outlet(engine, _secrets_dir=secrets)
    assert s.api_key is not None and s.api_key.get_secret_value() == "from-the-secrets-dir"
    assert s.outlet_id == "o-secret" and s.photos.store == "db"  # the .env file's photo option is kept
    assert s.photos.s3_secret_key is not None and s.photos.s3_secret_key.get_secret_value() == "minio-secret"

    # the credentials are one unit: a higher source's username and password leave the stored ones unread,
    # so no key is needed then
    monkeypatch.delenv("POSYNC_CONFIG_KEY")
    monkeypatch.setenv("POSYNC_USERNAME", "u-env")
    monkeypatch.setenv("POSYNC_PASSWORD", PASSWORD)
    s = posync.settings_from_outlet(engine)
    assert s.api_key is None and s.username == "u-env"

    # the constructor never reads the table, and the files stay opt-in and checked
    monkeypatch.delenv("POSYNC_ENV_FILE")
    plain = posync.PosyncSettings()
    assert plain.outlet_id == "outlet-1" and plain.brand_id == "b-env" and plain.outlet_code is None
    with pytest.raises(ConfigurationError, match="does not exist"):
        posync.PosyncSettings(_env_file=tmp_path / "missing.env")
    with pytest.raises(ConfigurationError, match="has no setting 'outlet_cod'"):
        posync.settings_from_outlet(engine, outlet_cod="x")


def test_a_bound_databases_identity_changes_only_with_rebind(engine: sa.Engine) -> None:
    with pytest.raises(ConfigurationError, match="bound to no outlet yet: give company_id, ho_url"):
        store_config(engine, {"outlet_id": "o-1"})
    store_config(engine, IDENTITY)
    with pytest.raises(ConfigurationError, match="--rebind"):
        store_config(engine, {"outlet_id": "o-2"})
    store_config(engine, {"outlet_id": "o-2", "outlet_code": "OC-2"}, rebind=True)
    assert show_config(engine)["outlet_id"] == "o-2"
    with pytest.raises(ConfigurationError, match="did you mean 'outlet_code'"):
        store_config(engine, {"outlet_cod": "x"})
    with pytest.raises(ConfigKeyError, match="needs the config key"):
        store_config(engine, {"api_key": SECRET})


def _cli(db_url: str, *args: str, key: str | None = None, stdin: str | None = None,
         ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSYNC_")}
    env["PYTHONPATH"] = str(ROOT)
    if key is not None:
        env["POSYNC_CONFIG_KEY"] = key
    return subprocess.run([sys.executable, "-m", "posync.cli", "config", *args, "--url", db_url], cwd=ROOT,
                          env=env, input=stdin, capture_output=True, text=True, timeout=120)


def test_the_cli_shows_the_config_with_its_secrets_masked(db_url: str, engine: sa.Engine, tmp_path: Path) -> None:
    old, new = _new_key(), _new_key()
    done = _cli(db_url, "set", *(f"{k}={v}" for k, v in IDENTITY.items()), "username=cashier", "password=-",
                "sync_enabled=false", key=old, stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    shown = _cli(db_url, "show", "--json", key=old)
    assert shown.returncode == 0, shown.stderr
    config = json.loads(shown.stdout)
    assert config["credentials"] == {"password": "********", "username": "********"}
    assert config["outlet_id"] == "o-table" and config["sync_enabled"] is False
    assert PASSWORD not in shown.stdout + shown.stderr and "cashier" not in shown.stdout
    assert json.loads(_cli(db_url, "show", "--json").stdout)["credentials"] == "********"  # without the key

    refused = _cli(db_url, "show", key=new)  # a wrong key: exit 2, the typed error's message
    assert refused.returncode == 2
    assert "the config key cannot decrypt the stored credentials" in refused.stderr
    assert new not in refused.stderr and PASSWORD not in refused.stderr

    (tmp_path / "new.key").write_text(new + "\n")
    rotated = _cli(db_url, "rotate-key", "--new-key-file", str(tmp_path / "new.key"), "--json", key=old)
    assert rotated.returncode == 0 and json.loads(rotated.stdout) == {"rotated": True}, rotated.stderr
    assert new not in rotated.stdout + rotated.stderr
    assert _cli(db_url, "show", key=new).returncode == 0
    assert _cli(db_url, "show", key=old).returncode == 2
    loaded = posync.settings_from_outlet(engine, config_key=ConfigKey([new]))
    assert loaded.password is not None and loaded.password.get_secret_value() == PASSWORD


def test_the_cli_prints_short_tables_by_default_with_the_secrets_masked(
        db_url: str, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """In this process (``posync.cli.main``): set, show and rotate-key print lines for people; a wrong key
    is still exit 2."""
    from posync.cli import main

    old, new = _new_key(), _new_key()

    def cli(*args: str, key: str) -> tuple[int, str, str]:
        monkeypatch.setenv("POSYNC_CONFIG_KEY", key)
        capsys.readouterr()
        with pytest.raises(SystemExit) as ended:
            main(["config", *args, "--url", db_url])
        out = capsys.readouterr()
        return int(ended.value.code or 0), out.out, out.err

    code, out, _ = cli("set", *(f"{k}={v}" for k, v in IDENTITY.items()), f"api_key={SECRET}", key=old)
    assert code == 0 and out.strip() == "stored: api_key, company_id, ho_url, outlet_id, store_id", out
    code, out, err = cli("show", key=old)
    lines = [line.split() for line in out.splitlines() if line.strip()]
    assert code == 0 and 3 <= len(lines) <= 15, out  # a title and one line per field (indented JSON was more)
    assert ["outlet_id", "o-table"] in lines and ["credentials", "api", "key", "********"] in lines, out
    assert SECRET not in out + err and "{" not in out
    code, out, err = cli("show", key=new)
    assert code == 2 and "cannot decrypt" in err and new not in out + err
    code, out, _ = cli("rotate-key", key=f"{new},{old}")
    assert code == 0 and out.strip() == "credentials re-encrypted under the new key", out


def test_config_set_on_a_new_database_makes_posyncs_tables_and_says_what_it_removed(
        db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A new-user trial: the README's first ``posync config set`` on a new outlet database exited 2
    ("posync's tables are missing") until ``posync db upgrade``; and ``api_key=`` (a removal) printed
    ``stored: api_key``."""
    from posync.cli import main

    monkeypatch.setenv("POSYNC_CONFIG_KEY", _new_key())

    def cli(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as ended:
            main(["config", *args, "--url", db_url])
        return int(ended.value.code or 0), capsys.readouterr().out.strip()

    assert cli("set", *(f"{k}={v}" for k, v in IDENTITY.items()), f"api_key={SECRET}") == (
        0, "stored: api_key, company_id, ho_url, outlet_id, store_id")
    assert cli("set", "username=edge", "api_key=") == (0, "stored: username; removed: api_key")
    code, out = cli("set", "api_key=", "brand_id=", "--json")
    assert code == 0 and json.loads(out) == {"removed": ["api_key", "brand_id"], "stored": []}


def test_config_set_refuses_a_newer_schema_and_a_bad_field_before_touching_a_database(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A review: ``set`` upgraded any database first: a newer schema gave Alembic's traceback (exit 1), and
    a mistyped --url with a bad field still made a database with posync's tables."""
    from posync.cli import main

    monkeypatch.setenv("POSYNC_CONFIG_KEY", _new_key())
    engine = prepare_database(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE posync_alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(SystemExit) as ended:
        main(["config", "set", "ho_url=https://ho.example.com", "--url", db_url])
    assert ended.value.code == 2 and "revision 9999" in capsys.readouterr().err
    mistyped = tmp_path / "mistyped.db"
    with pytest.raises(SystemExit) as ended:
        main(["config", "set", "brandid=b-1", "--url", f"sqlite:///{mistyped}"])
    assert ended.value.code == 2 and "did you mean 'brand_id'" in capsys.readouterr().err
    assert not mistyped.exists()


class CountingHO(httpx.BaseTransport):
    """Every request HO gets, counted; HO answers 503 (down) to each: the cycle's attempt is what counts."""

    def __init__(self) -> None:
        self.requests = 0
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests += 1
        return httpx.Response(503, json={"status": "error", "code": "DOWN", "message": "down"})


def _outbox(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT COUNT(*) FROM posync_outbox")).scalar_one())


def test_sync_switched_off_stops_the_sync_jobs_never_capture(engine: sa.Engine) -> None:
    key = ConfigKey([_new_key()])
    store_config(engine, {**IDENTITY, "api_key": SECRET, "sync_enabled": "false"}, config_key=key)
    ho = CountingHO()
    sync = posync.Posync(engine, pos_registry(),
                         posync.settings_from_outlet(engine, config_key=key, sync_interval_seconds=0.1),
                         transport=ho)
    try:
        sync.start()
        with sqlmodel.Session(engine) as session:
            for n in range(3):
                session.add(Order(id=f"order-{n}", total=n))
                session.commit()
        sync.trigger()  # asked for, still off: the switch is the operator's
        time.sleep(2.0)
        assert ho.requests == 0  # no cycle ran: not one request to HO
        assert _outbox(engine) == 3  # every sale was captured
        store_config(engine, {"sync_enabled": "true"})  # switched back on: within the switch's few seconds
        deadline = time.monotonic() + 20
        while ho.requests == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ho.requests > 0
    finally:
        sync.close()
    assert _outbox(engine) == 3  # HO was down: the sales wait in the outbox


def test_the_sync_switch_reads_the_table_at_most_every_few_seconds(engine: sa.Engine) -> None:
    store_config(engine, {**IDENTITY, "sync_enabled": "false"})
    now = [0.0]
    reads: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _count(conn: object, cursor: object, statement: str, *rest: object) -> None:
        if re.match(r"SELECT posync_outlet\.sync_enabled\s+FROM", statement):  # the switch's own read
            reads.append(statement)

    switch = SyncSwitch(engine, every=5.0, clock=lambda: now[0])
    assert switch() is False and switch() is False and len(reads) == 1
    store_config(engine, {"sync_enabled": "true"})
    now[0] = 4.9
    assert switch() is False  # not read again yet
    now[0] = 5.0
    assert switch() is True and len(reads) == 2
    assert SyncSwitch(engine, fixed=False)() is False  # a higher source's sync_enabled wins, without a read
    assert len(reads) == 2


ONE_KEY = ConfigKey([Fernet.generate_key()])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=st.text(min_size=8, max_size=300), field=st.sampled_from(["api_key", "password"]))
def test_any_credential_round_trips_and_never_appears_in_the_stored_bytes(engine: sa.Engine, secret: str,
                                                                          field: str) -> None:
    key = ONE_KEY
    values = {field: secret, **({"username": "cashier"} if field == "password" else {})}
    store_config(engine, {**IDENTITY, **values}, config_key=key, rebind=True)
    stored = _stored_bytes(engine)
    for form in (secret.encode(), json.dumps(secret).encode(), json.dumps(secret, ensure_ascii=False).encode()):
        assert form not in stored
    loaded = posync.settings_from_outlet(engine, config_key=key)
    value = getattr(loaded, field)
    assert value is not None and value.get_secret_value() == secret
