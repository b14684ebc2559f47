"""Migrations, the management HTTP router, the embedded scheduler, the CLI and the demo."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

import posync
from posync.demo.models import Order, Product, pos_registry
from posync.demo.run import run_demo
from posync.http import management_app
from posync.migrations import alembic_config, current, downgrade, upgrade
from posync.models import posync_tables
from posync.testing import ReferenceHO, Rejection, serve_in_thread
from tests.support import API_KEY, Outlet, make_outlet


def test_migrations_produce_the_schema_the_models_describe(db_url: str) -> None:
    engine = posync.create_engine(db_url)
    try:
        upgrade(engine)
        upgrade(engine)  # idempotent
        assert current(engine) is not None
        md = sa.MetaData()
        for table in posync_tables():
            table.to_metadata(md)
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True,
                                                         "version_table": "posync_alembic_version"})
            diff = [d for d in compare_metadata(ctx, md)
                    if not (d[0] == "remove_table" and d[1].name == "posync_alembic_version")]
        assert diff == []
        downgrade(engine, "base")
        assert not any(n.startswith("posync_") and n != "posync_alembic_version"
                       for n in sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_an_outbox_queued_under_0001_survives_the_upgrade(db_url: str) -> None:
    """0002 rebuilds the outbox's entity index, 0003 widens its versions: the queued changes stay as they
    were, and the index is keyed as the model says (no status), both ways."""
    engine = posync.create_engine(db_url)

    def entity_index() -> list[str | None]:
        indexes = {ix["name"]: ix["column_names"] for ix in sa.inspect(engine).get_indexes("posync_outbox")}
        return indexes["ix_posync_outbox_entity"]

    try:
        upgrade(engine, "0001")
        assert entity_index() == ["resource", "entity_id", "status", "id"]
        with engine.begin() as conn:
            for key in ("a", "b"):
                conn.execute(sa.text("INSERT INTO posync_outbox (resource, entity_id, op, entity_version, "
                                     "base_version, status, attempts, available_at, changed_at) VALUES ('orders', "
                                     ":k, 'update', 3, 2, 'pending', 0, 0, :at)"),
                             {"k": key, "at": datetime(2026, 1, 1, tzinfo=UTC)})
            queued = conn.exec_driver_sql("SELECT * FROM posync_outbox ORDER BY id").fetchall()
        upgrade(engine)
        assert current(engine) == ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert entity_index() == ["resource", "entity_id", "id"]
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT * FROM posync_outbox ORDER BY id").fetchall() == queued
        downgrade(engine, "0001")
        assert entity_index() == ["resource", "entity_id", "status", "id"]
    finally:
        engine.dispose()


def test_posync_migrations_leave_the_hosts_alembic_alone(sqlite_url: str) -> None:
    engine = posync.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('host_rev_1')")
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "host_rev_1"
    engine.dispose()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Outlet, ReferenceHO, str]]:
    ho = ReferenceHO(f"sqlite:///{tmp_path / 'ho.db'}", api_keys={API_KEY: None},
                     validators={"orders": lambda c: Rejection("BAD", "no") if c.data["total"] < 0 else None})
    ho_server = serve_in_thread(ho.app)
    outlet = make_outlet(f"sqlite:///{tmp_path / 'o.db'}", ho_server.url,
                         registry=pos_registry(posync.ConflictStrategy.MANUAL))
    admin_tokens = {"Bearer admin"}
    mgmt = serve_in_thread(management_app(outlet.sync, authorize=lambda r: r.headers.get("authorization")
                                          in admin_tokens))
    try:
        yield outlet, ho, mgmt.url
    finally:
        mgmt.stop()
        outlet.close()
        ho_server.stop()
        ho.close()


def test_management_router_over_http(served: tuple[Outlet, ReferenceHO, str]) -> None:
    outlet, ho, url = served
    with outlet.Session() as s:
        s.add_all([Order(id="bad", total=-1), Order(id="ok", total=1)])
        s.commit()
    ho.put("products", "p1", {"id": "p1", "name": "Tea", "price": 1})
    admin = {"Authorization": "Bearer admin"}
    with httpx.Client(base_url=url, headers=admin) as http:
        assert httpx.get(url + "/status").status_code == 403  # not an administrator
        assert http.post("/trigger").json()["pushed"] == 1
        status = http.get("/status").json()
        assert status["queue"] == {"dead": 1}
        [dead] = http.get("/queue", params={"status": "dead"}).json()
        assert http.get("/queue", params={"status": "nope"}).status_code == 400
        assert http.get("/logs", params={"limit": "x"}).status_code == 400
        assert http.post("/retry/999999").status_code == 404
        with outlet.Session() as s:
            s.get(Order, "bad").total = 3
            s.commit()
        assert http.post(f"/retry/{dead['id']}").json() == {"retried": 1}
        http.post("/trigger")
        assert set(ho.records("orders")) == {"bad", "ok"}
        with outlet.Session() as s:  # a manual conflict, resolved over HTTP
            s.get(Product, "p1").price = 5
            s.commit()
        ho.put("products", "p1", {"id": "p1", "name": "Tea", "price": 9})
        http.post("/trigger")
        [conflict] = http.get("/conflicts").json()
        assert http.post(f"/resolve/{conflict['id']}", content=b"{not json").status_code == 400
        assert http.post(f"/resolve/{conflict['id']}", json={"choice": "both"}).status_code == 400
        assert http.post(f"/resolve/{conflict['id']}", json={"merged": {"id": "p1", "name": "Tea",
                                                                        "price": 7}}).status_code == 200
        assert http.post(f"/resolve/{conflict['id']}", json={"choice": "local"}).status_code == 409
        http.post("/trigger")
        assert ho.get("products", "p1").data["price"] == 7


def test_embedded_scheduler_syncs_by_itself(tmp_path: Path) -> None:
    ho = ReferenceHO(f"sqlite:///{tmp_path / 'ho.db'}", api_keys={API_KEY: None})
    server = serve_in_thread(ho.app)
    outlet = make_outlet(f"sqlite:///{tmp_path / 'o.db'}", server.url, sync_interval_seconds=0.2)
    try:
        outlet.sync.start()
        with outlet.Session() as s:
            s.add(Order(id="o1", total=1))
            s.commit()
        deadline = time.monotonic() + 20
        while "o1" not in ho.records("orders") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "o1" in ho.records("orders")
        outlet.sync.trigger()
    finally:
        outlet.close()
        server.stop()
        ho.close()


def test_cli_db_upgrade_and_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    done = subprocess.run([sys.executable, "-m", "posync.cli", "db", "upgrade", "--url", url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert f"posync tables at revision {head}" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "posync.cli", "status"], capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert bad.returncode != 0 and "--app" in bad.stderr


def test_demo_tells_the_whole_story(tmp_path: Path) -> None:
    lines: list[str] = []
    figures = run_demo(tmp_path, say=lines.append)
    assert figures["offline_pending"] == 6 and figures["pushed"] == 6
    assert figures["converged"] and figures["final_pending"] == 0 and figures["open_conflicts"] == 0
    assert set(figures["conflicts"]) == {"cloud_wins", "local_wins", "newest_wins", "manual"}
    assert figures["photos"]["converged"] and figures["photos"]["noop_requests"] == 1
    assert json.dumps(figures)  # plain data


def test_settings_never_show_secrets() -> None:
    s = posync.PosyncSettings(api_key="sekrit-key", password="pw-sekrit", username="u")
    assert "sekrit" not in repr(s) and "sekrit" not in str(s.model_dump())
    with pytest.raises(posync.ConfigurationError, match="api_key, or username and password"):
        posync.PosyncSettings()


def test_head_is_alembics_head() -> None:
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == posync.migrations.HEAD


UP_TO_DATE = """
import sys
import sqlalchemy as sa
import posync
assert "alembic" not in sys.modules, "import posync loaded alembic"
engine = sa.create_engine(sys.argv[1])
posync.migrations.upgrade(engine)
print("alembic" in sys.modules)
"""


def test_an_up_to_date_database_skips_alembic_and_an_old_one_is_upgraded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fast.db'}"

    def run() -> str:
        done = subprocess.run([sys.executable, "-c", UP_TO_DATE, url], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert run() == "True"  # an empty database: Alembic builds the tables
    assert run() == "False"  # at head: one read of the version table, no Alembic
    engine = sa.create_engine(url)
    downgrade(engine, "0003")
    assert current(engine) == "0003"
    assert run() == "True" and current(engine) == posync.migrations.HEAD
    engine.dispose()


class _SlowWorker:
    """A cycle that outlasts several scheduler intervals (HO stalling)."""

    def __init__(self) -> None:
        self.started = 0
        self.release = threading.Event()

    def run_cycle(self) -> None:
        self.started += 1
        self.release.wait(10)


def test_a_cycle_that_outlasts_the_interval_runs_alone_and_apscheduler_stays_quiet(
        caplog: pytest.LogCaptureFixture) -> None:
    from posync.workers.scheduler import EmbeddedScheduler

    worker = _SlowWorker()
    scheduler = EmbeddedScheduler(worker, 0.1)  # type: ignore[arg-type]
    with caplog.at_level("WARNING"):
        scheduler.start()
        try:
            time.sleep(1.0)
            assert worker.started == 1  # ticks meanwhile joined the running cycle
        finally:
            worker.release.set()
            scheduler.stop()
    assert "maximum number of running instances" not in caplog.text


def test_the_photo_jobs_run_at_the_minute_and_hour_the_one_settings_give(sqlite_url: str, tmp_path: Path) -> None:
    """One PosyncSettings, photo options flat as POSYNC_PHOTO_* names them (issue 16): Posync schedules the
    photo jobs at its photo_incremental_minute and photo_full_hour."""
    from apscheduler.schedulers.background import BackgroundScheduler

    from posync.photos import build_photo_sync
    from posync.workers.photo_jobs import FULL_JOB_ID, INCREMENTAL_JOB_ID

    settings = posync.PosyncSettings(api_key="k", photo_incremental_minute=17, photo_full_hour=3,
                                     photo_store=f"fs:{tmp_path / 'photos'}",  # no per-outlet spread here:
                                     photo_incremental_spread_minutes=0, photo_full_spread_minutes=0)
    engine = posync.create_engine(sqlite_url)
    upgrade(engine)
    photos = build_photo_sync(settings, engine=engine)
    pos = posync.Posync(engine, posync.Registry([]), settings, photos=photos)
    host = BackgroundScheduler(timezone="UTC")  # the host's, not started: the jobs wait in it
    try:
        pos.start(host)
        jobs = {j.id: j for j in host.get_jobs()}
        five = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)
        assert jobs[INCREMENTAL_JOB_ID].trigger.get_next_fire_time(None, five) == five.replace(minute=17)
        assert jobs[FULL_JOB_ID].trigger.get_next_fire_time(None, five) == datetime(2026, 12, 8, 3, 0, tzinfo=UTC)
    finally:
        pos.close()
        photos.close()
        engine.dispose()
