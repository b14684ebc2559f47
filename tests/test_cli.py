"""The ``posync`` command people read (issue 17, item 2): tables by default, one JSON document with
``--json``, ``posync sync``, and exit codes that mean something (0 healthy, 3 HO unreachable, 4 credentials
refused, 5 unhealthy). Through the real entry point (``posync.cli.main``, and once ``python -m
posync.cli`` in a subprocess), against the reference HO over loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posync.cli import main
from posync.cli.render import print_json, print_rows
from posync.demo.models import Order
from posync.testing import ReferenceHO, Rejection, ServerHandle, serve_in_thread
from tests import cli_host
from tests.support import API_KEY, make_outlet, prepare_database

ROOT = Path(__file__).resolve().parents[1]
APP = "tests.cli_host:build"


@dataclass
class Done:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.out.count("\n") == 1, self.out  # one document, on one line
        return json.loads(self.out)


@dataclass
class Outlet:
    db_url: str
    ho: ReferenceHO
    server: ServerHandle
    run: Callable[..., Done]

    def sell(self, *totals: int) -> None:
        """Orders written at the till (captured, queued for HO)."""
        outlet = make_outlet(self.db_url, self.server.url)
        try:
            with outlet.Session() as s:
                for n, total in enumerate(totals, 1):
                    s.add(Order(id=f"o{n}", table_no=f"T{n}", total=total))
                s.commit()
        finally:
            outlet.close()


def refuse_negative(change: Any) -> Rejection | None:
    return Rejection("NEGATIVE_TOTAL", "a total below zero") if (change.data or {}).get("total", 0) < 0 else None


@pytest.fixture
def outlet(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           capsys: pytest.CaptureFixture[str]) -> Iterator[Outlet]:
    yield from _outlet(db_url, tmp_path, monkeypatch, capsys)


@pytest.fixture
def sqlite_outlet(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  capsys: pytest.CaptureFixture[str]) -> Iterator[Outlet]:
    yield from _outlet(sqlite_url, tmp_path, monkeypatch, capsys)


def _outlet(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> Iterator[Outlet]:
    ho = ReferenceHO(f"sqlite:///{tmp_path / 'ho.db'}", api_keys={API_KEY: None},
                     validators={"orders": refuse_negative})
    server = serve_in_thread(ho.app)
    prepare_database(db_url).dispose()
    monkeypatch.setenv("CLI_TEST_DB", db_url)
    monkeypatch.setenv("CLI_TEST_HO", server.url)
    monkeypatch.setenv("CLI_TEST_KEY", API_KEY)

    def run(*args: str) -> Done:
        capsys.readouterr()
        with pytest.raises(SystemExit) as ended:
            main([*args, "--app", APP])
        out = capsys.readouterr()
        return Done(int(ended.value.code or 0), out.out, out.err)

    try:
        yield Outlet(db_url, ho, server, run)
    finally:
        for engine in cli_host.ENGINES:
            engine.dispose()
        cli_host.ENGINES.clear()
        server.stop()
        ho.close()


def test_queue_is_a_short_table_and_its_json_parses(outlet: Outlet) -> None:
    outlet.sell(51000, 52000, 53000)
    table = outlet.run("queue")
    assert table.code == 0, table.err
    lines = [line for line in table.out.splitlines() if line.strip()]
    assert len(lines) <= 6, table.out  # a title, a header, its rule and 3 rows (indented JSON was 60 lines)
    assert sum("orders" in line and "pending" in line for line in lines) == 3
    rows = outlet.run("queue", "--json").json()
    assert [(r["resource"], r["entity_id"], r["status"]) for r in rows] == [
        ("orders", "o1", "pending"), ("orders", "o2", "pending"), ("orders", "o3", "pending")]
    assert outlet.run("queue", "--status", "dead", "--json").json() == []


def test_sync_pushes_a_queued_change_and_the_tables_show_what_happened(outlet: Outlet) -> None:
    outlet.sell(51000)
    outlet.ho.put("products", "p1", {"id": "p1", "sku": "P1", "name": "Salmon bowl", "price": 42000})
    done = outlet.run("sync", "--json")
    assert done.code == 0, done.err
    result = done.json()
    assert result["pushed"] == 1 and result["pulled"] >= 1 and result["error"] is None
    assert result["where"] == "here" and result["failed"] == {}
    assert "o1" in outlet.ho.records("orders")
    assert outlet.run("queue", "--json").json() == []
    table = outlet.run("sync")
    assert table.code == 0 and "pushed" in table.out and "pulled" in table.out
    assert "posync sync" in table.out and "settings" not in table.out  # run here, with this process's settings
    trigger = outlet.run("trigger")
    assert trigger.code == 0 and "posync trigger" in trigger.out and "posync sync" not in trigger.out
    logs = outlet.run("logs")
    assert logs.code == 0 and "push" in logs.out and "pull" in logs.out
    assert len(logs.out.splitlines()) < 20, logs.out
    kinds = {row["kind"] for row in outlet.run("logs", "--json").json()}
    assert {"push", "pull"} <= kinds
    checkpoints = outlet.run("checkpoints", "--json").json()
    assert "products" in {c["resource"] for c in checkpoints}
    assert "products" in outlet.run("checkpoints").out
    assert outlet.run("conflicts", "--json").json() == []
    assert "none open" in outlet.run("conflicts").out


def test_status_is_healthy_and_its_table_leads_with_the_verdict(outlet: Outlet) -> None:
    assert outlet.run("sync", "--json").code == 0
    table = outlet.run("status")
    assert table.code == 0, table.out + table.err
    lines = [line.strip() for line in table.out.splitlines() if line.strip()]
    assert lines[1].split() == ["healthy", "yes"], table.out  # after the title
    assert "reachable" in table.out
    report = outlet.run("status", "--json").json()
    assert report["healthy"] is True and report["reasons"] == []
    assert report["ho"]["reachable"] is True and report["ho"]["auth_ok"] is True


def test_ho_down_is_exit_3_for_status_sync_and_trigger(outlet: Outlet) -> None:
    outlet.sell(51000)
    outlet.server.stop()
    status = outlet.run("status", "--json")
    assert status.code == 3, status.out + status.err
    report = status.json()
    assert report["ho"]["reachable"] is False and report["healthy"] is False and report["reasons"]
    for command in ("sync", "trigger"):
        done = outlet.run(command, "--json")
        assert done.code == 3, done.out + done.err
        assert done.json()["error"] and done.json()["pushed"] == 0
    assert "unreachable" in outlet.run("status").out


@pytest.mark.parametrize("fault", [{"error_rate": 1.0, "error_status": 503},
                                   {"burst": {"status": 429, "count": 50, "retry_after": 0}}], ids=["503", "429"])
def test_ho_failing_the_push_is_exit_3_though_it_answers_a_check_at_once(outlet: Outlet,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         fault: dict[str, Any]) -> None:
    """HO answers its version endpoint but fails the push: the cycle failed because HO was unavailable,
    which its error says (a live check afterwards would find HO up and call it a posync error, 1)."""
    monkeypatch.setenv("POSYNC_MAX_RETRIES", "0")  # one answer is enough to judge
    outlet.sell(51000)
    outlet.ho.faults.update(paths=["/api/v1/sync/push/"], **fault)
    done = outlet.run("sync", "--json")
    assert done.code == 3, done.out + done.err
    result = done.json()
    assert result["error_kind"] == "unavailable" and result["error"] and result["pushed"] == 0
    assert outlet.ho.records("orders") == {}
    table = outlet.run("sync")
    assert table.code == 3 and "HO unavailable" in table.out, table.out
    outlet.ho.faults.reset()
    assert outlet.run("trigger", "--json").code == 0 and "o1" in outlet.ho.records("orders")


def test_logs_go_to_stderr_so_the_json_on_stdout_parses(outlet: Outlet) -> None:
    """Run as a command, posync logs on stderr (``posync: <message>``, warnings; ``-v``: INFO too)."""
    outlet.sell(51000)
    quiet = outlet.run("sync", "--json")
    assert quiet.code == 0 and quiet.json()["pushed"] == 1 and quiet.err == "", quiet.err
    verbose = outlet.run("-v", "sync", "--json")
    assert verbose.code == 0 and verbose.json()["error"] is None
    assert "posync: httpx: HTTP Request: " in verbose.err, verbose.err
    outlet.server.stop()
    down = outlet.run("sync", "--json")
    assert down.code == 3 and down.json()["error_kind"] == "unavailable"
    assert down.err.startswith("posync: head office unreachable"), down.err


def test_a_wrong_api_key_is_exit_4_and_status_says_so(outlet: Outlet, monkeypatch: pytest.MonkeyPatch) -> None:
    outlet.sell(51000)
    monkeypatch.setenv("CLI_TEST_KEY", "not-the-key-0123456789")
    for command in ("sync", "trigger"):
        done = outlet.run(command, "--json")
        assert done.code == 4, done.out + done.err
    status = outlet.run("status", "--json")
    assert status.code == 4
    report = status.json()
    assert report["ho"]["auth_ok"] is False and report["auth_error"]
    assert "not-the-key" not in status.out + status.err
    assert "refused" in outlet.run("status").out


def test_a_dead_letter_makes_the_outlet_unhealthy_exit_5(outlet: Outlet) -> None:
    outlet.sell(-1)  # HO refuses it for good: a dead letter
    done = outlet.run("sync", "--json")
    assert done.code == 0, done.out + done.err  # the cycle itself ran fine
    status = outlet.run("status", "--json")
    assert status.code == 5, status.out
    report = status.json()
    assert report["healthy"] is False and report["dead_letters"][0]["entity_id"] == "o1"
    table = outlet.run("status")
    assert table.code == 5 and "NO" in table.out and "dead letters" in table.out and "o1" in table.out
    [dead] = outlet.run("queue", "--status", "dead", "--json").json()
    retried = outlet.run("retry", str(dead["id"]))
    assert retried.code == 0 and f"queue item {dead['id']} was dead: put back in line" in retried.out, retried.out
    assert outlet.run("sync", "--json").code == 0  # refused again: dead again
    assert outlet.run("retry", "--all", "--json").json() == {"retried": 1}


def test_retrying_a_pending_change_says_it_was_already_in_line(outlet: Outlet) -> None:
    outlet.sell(51000)
    [item] = outlet.run("queue", "--json").json()
    done = outlet.run("retry", str(item["id"]))
    assert done.code == 0, done.out + done.err
    assert f"queue item {item['id']} was pending (already in line)" in done.out, done.out
    assert "put back in line" not in done.out
    assert outlet.run("retry", str(item["id"]), "--json").json() == {"retried": 1, "was": "pending"}


def test_logs_of_an_unknown_kind_is_a_usage_error_naming_the_kinds(outlet: Outlet) -> None:
    assert outlet.run("sync", "--json").code == 0
    bad = outlet.run("logs", "--kind", "nope")
    assert bad.code == 2, bad.out + bad.err
    assert "kind must be one of" in bad.err and "cycle_failed" in bad.err, bad.err
    cycles = outlet.run("logs", "--kind", "cycle", "--json").json()
    assert cycles and {row["kind"] for row in cycles} == {"cycle"}


def test_the_real_command_in_a_process_gives_the_same_exit_code(sqlite_outlet: Outlet) -> None:
    """``python -m posync.cli`` (what the console script runs): HO down is 3, and stdout is the JSON (the
    entry point is the same on both databases: the in-process tests cover PostgreSQL)."""
    sqlite_outlet.server.stop()
    done = subprocess.run([sys.executable, "-m", "posync.cli", "status", "--json", "--app", APP], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert json.loads(done.stdout)["ho"]["reachable"] is False


@pytest.mark.parametrize("args", [["retry"], ["resolve", "1", "--choice", "{not json"], ["queue", "--status", "x"],
                                  ["status", "--app", "no_such_module:build"], ["status"]],
                         ids=["retry-what", "resolve-bad-json", "queue-bad-status", "app-not-found", "no-app"])
def test_usage_errors_are_exit_2(args: list[str], monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("POSYNC_APP", raising=False)
    with pytest.raises(SystemExit) as ended:
        main([*args, "--app", APP] if "--app" not in args and args != ["status"] else args)
    assert ended.value.code == 2
    assert capsys.readouterr().err


def _pos_syncing(outlet: Outlet, **settings: Any) -> Outlet:
    """The POS's server: it holds the syncer lease and runs the scheduler (an hour's interval, no push on
    commit, one answer per request: a 503 fails the push at once); its first cycle has run."""
    pos = make_outlet(outlet.db_url, outlet.server.url, sync_interval_seconds=3600, push_on_commit=False,
                      max_retries=0, **settings)
    pos.sync.start()
    deadline = time.monotonic() + 30
    while pos.sync.manager.status().last_cycle_at is None and time.monotonic() < deadline:
        time.sleep(0.05)  # its first cycle runs at start
    with pos.Session() as s:
        s.add(Order(id="o9", table_no="T9", total=59000))
        s.commit()
    return pos


def test_sync_asks_the_outlets_syncer_when_another_process_holds_the_lease(outlet: Outlet,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """One syncer per outlet: ``posync sync`` asks the POS's server for the cycle through the database and
    reports the cycle it ran from its record (changes moved, duration). The syncer runs with its own
    settings: a wrong API key here changes nothing, and the table says whose settings ran the cycle."""
    pos = _pos_syncing(outlet)
    try:
        monkeypatch.setenv("CLI_TEST_KEY", "not-the-key-0123456789")
        done = outlet.run("sync", "--json", "--wait", "30")
        assert done.code == 0, done.out + done.err
        result = done.json()
        assert result["where"] == "syncer" and result["ran"] is True and result["syncer"]
        assert result["moved"] == 1 and result["seconds"] is not None and result["error_kind"] is None
        assert "o9" in outlet.ho.records("orders")
        table = outlet.run("trigger", "--wait", "30")
        assert table.code == 0, table.out + table.err
        rows = {line.split()[0]: line.split()[1:] for line in table.out.splitlines()[1:] if line.strip()}
        assert rows["moved"] == ["0"] and rows["took"][0].endswith("s"), table.out
        assert "the syncer's own" in " ".join(rows["settings"]), table.out
        assert "posync trigger" in table.out
    finally:
        pos.close()


def test_the_syncers_cycle_failed_by_a_503_is_exit_3_though_ho_answers_a_check(outlet: Outlet) -> None:
    """HO answers the syncer's push with 503: the syncer records the failure's kind with the cycle, and
    ``posync sync`` judges the cycle by it (3), not by asking HO afterwards (it answers: that said 1)."""
    pos = _pos_syncing(outlet)
    try:
        outlet.ho.faults.update(paths=["/api/v1/sync/push/"], error_rate=1.0, error_status=503)
        done = outlet.run("sync", "--json", "--wait", "30")
        assert done.code == 3, done.out + done.err
        result = done.json()
        assert result["where"] == "syncer" and result["ran"] is True
        assert result["error_kind"] == "unavailable" and "503" in result["error"], result
        table = outlet.run("sync", "--wait", "30")
        assert table.code == 3 and "HO unavailable" in table.out, table.out
        assert outlet.ho.records("orders") == {}
        outlet.ho.faults.reset()
        again = outlet.run("sync", "--json", "--wait", "30")
        assert again.code == 0, again.out + again.err
        # the order went in this cycle, or a moment before it with a push on commit's own probe of HO
        assert again.json()["error_kind"] is None and again.json()["moved"] <= 1
        assert "o9" in outlet.ho.records("orders")
    finally:
        pos.close()


def test_the_demo_shows_the_outage_unhealthy_and_ends_healthy(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ended:
        main(["demo", "--data-dir", str(tmp_path)])
    assert ended.value.code == 0
    out = capsys.readouterr().out
    outage, tail = out[out.index("-- 1."):out.index("-- 2.")], out[out.index("-- 6."):]
    rows = [line.split() for line in outage.splitlines()]
    assert ["healthy", "NO"] in rows and "reason" in outage and "head office unreachable" in outage, outage
    assert "posync status" in tail and "head office" in tail and "reachable" in tail
    assert ["healthy", "yes"] in [line.split() for line in tail.splitlines()], tail  # thresholds unchanged
    assert "1 of 1" in outage and "failed attempt is now 1 of" in tail


_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=200),
                    st.dictionaries(st.text(max_size=10), st.text(max_size=50), max_size=3),
                    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.fixed_dictionaries({"id": st.integers(), "a": _values, "b": _values}), min_size=1,
                     max_size=6))
def test_a_table_has_one_line_per_row_and_json_round_trips(rows: list[dict[str, Any]],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Whatever a cell holds (newlines, long JSON, wide text), a row is one line; --json is one document."""
    capsys.readouterr()
    print_rows(rows, ["id", "a", "b"], title="t")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 3 + len(rows), lines  # the title, the header, its rule, one line per row
    print_json(rows)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and json.loads(out) == rows


def test_the_syncers_refused_credentials_are_exit_4_whatever_this_process_holds(outlet: Outlet) -> None:
    """The syncer runs with its own key: refused, ``posync sync`` exits 4 though this process's key is right."""
    pos = _pos_syncing(outlet, api_key="not-the-key-0123456789")
    try:
        done = outlet.run("sync", "--json", "--wait", "30")
        assert done.code == 4, done.out + done.err
        result = done.json()
        assert result["where"] == "syncer" and result["error_kind"] == "auth" and result["moved"] == 0
        assert "not-the-key" not in done.out + done.err
        assert outlet.ho.records("orders") == {}
    finally:
        pos.close()
