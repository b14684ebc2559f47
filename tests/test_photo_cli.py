"""``posync photos`` exit codes (issue 15, item 7) and what its help says of the legacy API's deletes
(item 9): the real CLI in a subprocess against the shipped PhotoHO over loopback."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from posync.testing.photos import PhotoHO

ROOT = Path(__file__).resolve().parent.parent
Run = Callable[..., subprocess.CompletedProcess[str]]


def runner(ho: PhotoHO, tmp_path: Path, **extra: str) -> Run:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "POSYNC_HO_URL": ho.base_url,
           "POSYNC_USERNAME": "posync", "POSYNC_PASSWORD": "posync-password",
           "POSYNC_DB_URL": f"sqlite:///{tmp_path / 'o.db'}", "POSYNC_PHOTO_STORE": f"fs:{tmp_path / 's'}", **extra}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "posync.cli.photos", *args], capture_output=True, text=True,
                              timeout=120, env=env, cwd=ROOT)

    return run


def summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(done.stdout[done.stdout.index("{"):])
    return out


def test_sync_exits_1_while_any_listed_photo_is_not_synced_even_in_backoff(photo_ho: PhotoHO,
                                                                           tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "o.db") as db:  # the outlet's products: photos of others wait
        db.execute("CREATE TABLE product (id TEXT PRIMARY KEY)")
        db.executemany("INSERT INTO product VALUES (?)", [(f"p{n}",) for n in range(10)])
    run = runner(photo_ho, tmp_path, POSYNC_PHOTO_PRODUCT_TABLE="product")
    for n in range(4):
        photo_ho.put_photo(f"p{n}", os.urandom(3000))
    photo_ho.put_photo("elsewhere", os.urandom(3000))  # a product this outlet does not carry

    done = run("sync", "--no-progress", "--json")
    assert done.returncode == 0, done.stdout + done.stderr  # a photo waiting for its product is not a failure

    photo_ho.put_photo("p9", os.urandom(3000))
    photo_ho.byte_faults.update(error_rate=1.0)
    failed = run("sync", "--no-progress", "--json")
    assert failed.returncode == 1 and summary(failed)["failed"] == 1
    photo_ho.byte_faults.reset()

    waiting = run("sync", "--no-progress", "--json")  # p9's retry is not due yet: this pass does not touch it
    assert waiting.returncode == 1, waiting.stdout + waiting.stderr
    report = summary(waiting)
    assert report["failed"] == 0 and report["unsynced"] == 1
    assert report["states"] == {"synced": 4, "pending": 0, "syncing": 0, "failed": 1, "waiting_product": 1}
    assert "not synced: 1 failed (waiting for their retry)" in waiting.stderr

    full = run("sync", "--full", "--no-progress", "--json")  # a full pass retries failed photos at once
    assert full.returncode == 0, full.stdout + full.stderr
    assert summary(full)["states"]["synced"] == 5 and summary(done)["states"]["waiting_product"] == 1

    bad = run("--workers", "0", "sync")
    assert bad.returncode == 2 and "bad photo settings" in bad.stderr


def test_reconcile_exit_codes(photo_ho: PhotoHO, tmp_path: Path) -> None:
    run = runner(photo_ho, tmp_path)
    for n in range(3):
        photo_ho.put_photo(f"p{n}", os.urandom(3000))
    assert run("sync", "--no-progress").returncode == 0
    (tmp_path / "s" / "products" / "p9").mkdir(parents=True)
    (tmp_path / "s" / "products" / "p9" / "orphan.jpg").write_bytes(b"orphan")
    dry = run("reconcile", "--json")
    assert dry.returncode == 0 and summary(dry)["fix_would"]["remove"] == 1  # a check: 0 whatever it found
    assert (tmp_path / "s" / "products" / "p9" / "orphan.jpg").exists()
    photo_ho.faults.update(error_rate=1.0, error_status=503)
    blind = run("reconcile", "--fix", "--json")
    assert blind.returncode == 1 and summary(blind)["listing_error"]  # HO's listing unknown: nothing removed
    assert (tmp_path / "s" / "products" / "p9" / "orphan.jpg").exists()
    photo_ho.faults.update(error_rate=0.0)
    fixed = run("reconcile", "--fix", "--json")
    assert fixed.returncode == 0 and summary(fixed)["removed"] == 1, fixed.stdout + fixed.stderr


def test_help_names_the_exit_codes_and_the_legacy_apis_deletes(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "COLUMNS": "200"}
    group = subprocess.run([sys.executable, "-m", "posync.cli", "photos", "--help"], capture_output=True,
                           text=True, timeout=60, env=env, cwd=ROOT)
    sync = subprocess.run([sys.executable, "-m", "posync.cli.photos", "sync", "--help"], capture_output=True,
                          text=True, timeout=60, env=env, cwd=ROOT)
    for done in (group, sync):
        text = " ".join(done.stdout.split())
        assert done.returncode == 0, done.stderr
        assert "legacy" in text and "full check" in text and "last_full_at" in text, text
    assert "Exit codes: 0" in " ".join(group.stdout.split())


# -- what a new user found (each failed before its fix) -----------------------------------------------------


def test_stdout_is_the_json_report_even_with_the_progress_bar_on(photo_ho: PhotoHO, tmp_path: Path) -> None:
    """Piped, the bar stays off stdout (it draws on a terminal's stderr only): ``| jq`` reads the report."""
    for n in range(3):
        photo_ho.put_photo(f"p{n}", os.urandom(3000))
    done = runner(photo_ho, tmp_path)("sync", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["synced"] == 3, done.stdout


def test_a_full_check_fetches_bytes_gone_from_the_store(photo_ho: PhotoHO, tmp_path: Path) -> None:
    """A folder wiped by hand: the incremental pass trusts the rows; the full check looks and fetches again."""
    ids = [photo_ho.put_photo(f"p{n}", os.urandom(3000)) for n in range(3)]
    run = runner(photo_ho, tmp_path)
    assert run("sync", "--no-progress").returncode == 0
    for key in [photo_ho.photos[i].object_key for i in ids[:2]]:
        (tmp_path / "s" / key).unlink()
    full = run("sync", "--full", "--no-progress", "--json")
    assert full.returncode == 0 and summary(full)["requeued"] == 2 and summary(full)["fetched"] == 2, full.stdout
    for i in ids:
        assert (tmp_path / "s" / photo_ho.photos[i].object_key).read_bytes() == photo_ho.photos[i].data


def test_status_counts_a_photo_waiting_for_its_product_once(photo_ho: PhotoHO, tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "o.db") as db:
        db.execute("CREATE TABLE product (id TEXT PRIMARY KEY)")
        db.execute("INSERT INTO product VALUES ('p0')")
    photo_ho.put_photo("p0", os.urandom(3000))
    photo_ho.put_photo("p1", os.urandom(3000))  # no such product here yet
    run = runner(photo_ho, tmp_path, POSYNC_PHOTO_PRODUCT_TABLE="product")
    assert run("sync", "--no-progress").returncode == 0
    photos = json.loads(run("status", "--json").stdout)["photos"]
    assert (photos["synced"], photos["pending"], photos["waiting_product"]) == (1, 0, 1), photos


def test_a_host_table_the_store_cannot_find_is_bad_settings(photo_ho: PhotoHO, tmp_path: Path) -> None:
    photo_ho.put_photo("p0", os.urandom(3000))
    run = runner(photo_ho, tmp_path, POSYNC_PHOTO_STORE="db:table=nope,key=id,column=image_binary")
    done = run("sync", "--no-progress")
    assert done.returncode == 2 and "the host table 'nope' does not exist" in done.stderr, done.stderr


def test_a_pass_that_found_another_running_is_not_ok() -> None:
    from posync.services.photos.report import SyncReport

    report = SyncReport(full=False, busy=True)
    assert not report.ok and report.as_dict()["ok"] is False


def test_each_command_prints_a_short_table_by_default(photo_ho: PhotoHO, tmp_path: Path) -> None:
    """For people: a few lines each, no JSON; a failed photo is a row of its own (with its reason)."""
    for n in range(3):
        photo_ho.put_photo(f"p{n}", os.urandom(3000))
    run = runner(photo_ho, tmp_path)
    assert run("sync", "--no-progress").returncode == 0
    photo_ho.put_photo("p9", os.urandom(3000))
    photo_ho.byte_faults.update(error_rate=1.0)
    failed = run("sync", "--no-progress")
    photo_ho.byte_faults.reset()
    status = run("status")
    dry = run("reconcile")
    for done, code in ((failed, 1), (status, 0), (dry, 0)):
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        assert done.returncode == code and 3 <= len(lines) <= 20, done.stdout + done.stderr
        assert "{" not in done.stdout, done.stdout
    assert any(line.split()[:2] == ["ok", "no"] for line in failed.stdout.splitlines() if line.strip()), failed.stdout
    assert "failed photos" in failed.stdout and "http_503" in failed.stdout
    assert "synced 3" in status.stdout and "failed 1" in status.stdout and "http_503" in status.stdout
    assert "posync photos reconcile" in dry.stdout
