"""The database knows its outlet (issue 18, item 9): the first start binds it to the outlet, company, store
and HO its settings name; a worker started with another is refused with the fields that differ, in its own
process, until the host re-binds on purpose. Workers starting together bind once. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import sqlmodel

import posync
from posync.demo.models import pos_registry
from posync.migrations import upgrade
from tests.processes import finish

ROOT = Path(__file__).resolve().parent.parent
BASE = {"api_key": "k", "outlet_id": "outlet-1", "company_id": "c-1", "store_id": "s-1",
        "ho_url": "http://127.0.0.1:9/"}

WORKER = """
import sys, time
import posync
from posync.demo.models import pos_registry
url, start_at = sys.argv[1], float(sys.argv[2])
engine = posync.create_engine(url)
while time.time() < start_at:
    time.sleep(0.0005)
try:
    posync.Posync(engine, pos_registry(), posync.PosyncSettings(api_key="k")).close()
except posync.OutletMismatchError as exc:
    print(exc, file=sys.stderr)
    sys.exit(3)
print("started")
"""


def _migrated(url: str) -> sa.Engine:
    engine = posync.create_engine(url)
    upgrade(engine)
    sqlmodel.SQLModel.metadata.create_all(engine)
    return engine


def _start(engine: sa.Engine, **changes: Any) -> None:
    posync.Posync(engine, pos_registry(), posync.PosyncSettings(**{**BASE, **changes})).close()


def _bound(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT outlet_id, company_id, store_id, ho_url FROM posync_outlet"))]


@pytest.mark.parametrize(("field", "other"), [("outlet_id", "outlet-2"), ("company_id", "c-2"),
                                              ("store_id", "s-2"), ("ho_url", "http://ho.elsewhere:8002")])
def test_a_start_with_another_outlet_is_refused_naming_what_differs(db_url: str, field: str, other: str) -> None:
    engine = _migrated(db_url)
    try:
        _start(engine)
        _start(engine, ho_url="http://127.0.0.1:9")  # the same HO, without the trailing slash
        with pytest.raises(posync.OutletMismatchError) as refused:
            _start(engine, **{field: other})
        assert list(refused.value.given) == [field] and refused.value.given[field] == other
        assert "posync.rebind_outlet" in str(refused.value)
        assert _bound(engine) == [("outlet-1", "c-1", "s-1", "http://127.0.0.1:9")]
        before = posync.rebind_outlet(engine, posync.PosyncSettings(**{**BASE, field: other}))
        assert before is not None and before.outlet_id == "outlet-1"
        _start(engine, **{field: other})
        with pytest.raises(posync.OutletMismatchError):
            _start(engine)
    finally:
        engine.dispose()


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSYNC_")}
    env.update({f"POSYNC_{k.upper()}": v for k, v in settings.items()})
    env["PYTHONPATH"] = str(ROOT)
    return env


def _start_together(url: str, tmp_path: Path, outlets: list[str]) -> list[subprocess.CompletedProcess[str]]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    start_at = time.time() + 4.0  # every interpreter has imported posync by then
    procs = [subprocess.Popen([sys.executable, str(script), url, str(start_at)], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(outlet_id=o))
             for o in outlets]
    return finish(procs)


def test_workers_started_together_bind_once_and_one_with_another_outlet_is_refused(db_url: str,
                                                                                   tmp_path: Path) -> None:
    engine = _migrated(db_url)
    try:
        outlets = ["outlet-a", "outlet-b", "outlet-a", "outlet-b"]
        results = _start_together(db_url, tmp_path, outlets)
        [(winner, *_)] = _bound(engine)
        for outlet, result in zip(outlets, results, strict=True):
            if outlet == winner:
                assert result.returncode == 0 and "started" in result.stdout, result.stderr[-500:]
            else:
                assert result.returncode == 3, result.stderr[-500:]
                assert f"outlet_id {winner!r} (settings: {outlet!r})" in result.stderr
    finally:
        engine.dispose()


def test_the_cli_rebinds_only_when_told_to(db_url: str, tmp_path: Path) -> None:
    engine = _migrated(db_url)
    try:
        _start(engine)

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "posync.cli", "db", "rebind", "--url", db_url, *args],
                                  cwd=ROOT, capture_output=True, text=True, timeout=120,
                                  env=_env(api_key="k", outlet_id="outlet-9", company_id="c-1", store_id="s-1",
                                           ho_url="http://127.0.0.1:9"))
        refused = cli()
        assert refused.returncode != 0 and "--yes" in refused.stderr
        assert _bound(engine) == [("outlet-1", "c-1", "s-1", "http://127.0.0.1:9")]
        done = cli("--yes", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["now"]["outlet_id"] == "outlet-9"
        assert _bound(engine) == [("outlet-9", "c-1", "s-1", "http://127.0.0.1:9")]
        table = cli("--yes")  # by default a short table: a line per field, before and now
        lines = [line.split() for line in table.stdout.splitlines() if line.strip()]
        assert table.returncode == 0 and len(lines) <= 8, table.stdout
        assert ["outlet_id", "outlet-9", "outlet-9"] in lines, table.stdout
    finally:
        engine.dispose()
