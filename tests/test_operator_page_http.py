"""The operator page over HTTP, without a browser (issue 19): locked like the management router, every POST
needs its CSRF pair, a caller's mistake is a clear 4xx (never a 500) that changes nothing, every value from
the database or HO is escaped, no secret is shown, tokens validate in every worker, and the page works
under a WSGI host (Flask, through a2wsgi). On SQLite and PostgreSQL where the outlet's database matters."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2wsgi import ASGIMiddleware
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request
from werkzeug.middleware.dispatcher import DispatcherMiddleware

import posync
from posync.demo.models import Order, pos_registry
from posync.demo.outlet import prepare_database
from posync.errors import ConfigurationError
from posync.http.page import operator_page, views
from posync.photos import PhotoSettings, build_photo_sync
from posync.stores import FileStore
from posync.testing import serve_in_thread
from posync.testing.photos import PhotoHO
from tests.page_support import HOSTILE_NAME, Work, outlet_with_work
from tests.support import API_KEY, UNREACHABLE
from tests.test_embedding import BIN, ROOT, free_port, wait_for

GETS = ["/", "/queue", "/queue?status=dead", "/retry?all=1", "/conflicts", "/conflicts/{conflict}", "/photos"]
POSTS = ["/sync", "/retry", "/conflicts/{conflict}", "/photos/reconcile"]
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def work(db_url: str, tmp_path: Path) -> Iterator[Work]:
    with outlet_with_work(db_url, tmp_path) as w:
        yield w


@pytest.fixture
def sqlite_work(sqlite_url: str, tmp_path: Path) -> Iterator[Work]:
    """For what the outlet's database does not touch (rendering, the CSRF key): SQLite only, to keep it fast."""
    with outlet_with_work(sqlite_url, tmp_path) as w:
        yield w


def _served(app: Any) -> Any:
    return serve_in_thread(app)


def _token(client: httpx.Client, path: str = "/") -> str:
    answer = client.get(path)
    assert answer.status_code == 200, answer.text
    found = TOKEN.search(answer.text)
    assert found is not None
    return found.group(1)


def _untouched(work: Work) -> None:
    assert [d["id"] for d in work.outlet.sync.manager.queue(posync.ItemStatus.DEAD, 10)] == [work.dead]
    assert [c["id"] for c in work.outlet.sync.manager.conflicts()] == [work.conflict]


@pytest.mark.parametrize(("authorize", "status"), [(None, 401), (lambda r: False, 403)],
                         ids=["anonymous", "authorize-no"])
def test_the_page_is_locked_by_default_and_refuses_a_caller_the_host_did_not_admit(
        work: Work, authorize: Callable[[Request], bool] | None, status: int) -> None:
    server = _served(operator_page(work.outlet.sync, authorize=authorize))
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for path in GETS:
                answer = client.get(path.format(conflict=work.conflict))
                assert answer.status_code == status, (path, answer.text)
                assert "csrf_token" not in answer.text and "Tea" not in answer.text
                assert "posync_csrf" not in answer.headers.get("set-cookie", "")
            for path in POSTS:
                answer = client.post(path.format(conflict=work.conflict),
                                     data={"choice": "local", "all": "1", "confirm": "yes"})
                assert answer.status_code == status, (path, answer.text)
    finally:
        server.stop()
    _untouched(work)
    with pytest.raises(ConfigurationError):
        operator_page(work.outlet.sync, authorize=lambda r: True, allow_anonymous=True)
    with pytest.raises(ConfigurationError):
        operator_page(work.outlet.sync, allow_anonymous=True, csrf_secret="short")


def test_every_post_needs_the_csrf_pair_and_a_refused_post_changes_nothing(work: Work) -> None:
    admin = {"authorization": "Bearer admin"}
    server = _served(operator_page(work.outlet.sync, authorize=lambda r: r.headers.get("authorization") == admin[
        "authorization"]))
    try:
        with httpx.Client(base_url=server.url, timeout=30, headers=admin) as client:
            token = _token(client)
            cookie = client.cookies["posync_csrf"]
            assert token == cookie
            forms = {"/retry": {"all": "1", "confirm": "yes"},
                     "/conflicts/{conflict}": {"choice": "local"}, "/sync": {}}
            for path, fields in forms.items():
                url = path.format(conflict=work.conflict)
                tampered = token[:-1] + ("1" if token[-1] == "0" else "0")  # never the token itself
                for bad in ({}, {"csrf_token": ""}, {"csrf_token": tampered}):
                    answer = client.post(url, data={**fields, **bad})
                    assert answer.status_code == 403, (path, bad, answer.text)
                    assert "CSRF" in answer.text
            # a token minted without the key (a forged cookie and the same value in the form) fails too
            forged = "nonce." + "0" * 64
            with httpx.Client(base_url=server.url, timeout=30, headers=admin,
                              cookies={"posync_csrf": forged}) as other:
                answer = other.post("/retry", data={"all": "1", "confirm": "yes", "csrf_token": forged})
                assert answer.status_code == 403
            # the form's value must be the cookie's: another valid token of this key is not enough
            fresh = httpx.get(server.url + "/", headers=admin, timeout=30).cookies["posync_csrf"]
            assert client.post("/retry", data={"all": "1", "confirm": "yes",
                                               "csrf_token": fresh}).status_code == 403
            _untouched(work)
            # and the right pair works
            answer = client.post("/retry", data={"all": "1", "confirm": "yes", "csrf_token": token})
            assert answer.status_code == 303, answer.text
        assert work.outlet.sync.manager.queue(posync.ItemStatus.DEAD, 10) == []
    finally:
        server.stop()


def test_bad_input_is_a_clear_4xx_that_changes_nothing(work: Work) -> None:
    server = _served(operator_page(work.outlet.sync, allow_anonymous=True))
    c = work.conflict
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            token = _token(client)
            gets = {"/queue?status=bogus": 400, "/queue?resource=nope": 400, "/conflicts/999999": 404,
                    "/retry?item=abc": 400, "/retry?item=1": 400,
                    "/retry?item=999999&resource=orders&entity=o-bad": 404, "/nowhere": 404}
            for path, status in gets.items():
                assert client.get(path).status_code == status, path
            posts: dict[str, tuple[str, dict[str, str], int]] = {
                "retry without the confirmation": ("/retry", {"item": str(work.dead)}, 400),
                "retry of no item": ("/retry", {"item": "x", "confirm": "yes"}, 400),
                "retry of an unknown item": ("/retry", {"item": "999999", "confirm": "yes"}, 404),
                "no choice": (f"/conflicts/{c}", {}, 400),
                "a choice that is none": (f"/conflicts/{c}", {"choice": "both"}, 400),
                "a merge of an unknown field": (f"/conflicts/{c}", {"choice": "merge", "pick.nope": "local"}, 400),
                "a merge pick that is no side": (f"/conflicts/{c}", {"choice": "merge", "pick.price": "x"}, 400),
                "an unknown conflict": ("/conflicts/999999", {"choice": "local"}, 404),
                "photos not wired": ("/photos/reconcile", {}, 404),
            }
            for what, (path, fields, status) in posts.items():
                answer = client.post(path, data={**fields, "csrf_token": token})
                assert answer.status_code == status, (what, answer.text)
                assert "<h1>" in answer.text  # a page that says why, not a bare error
            assert client.post("/retry", content=b'{"all": 1}', headers={"content-type": "application/json"}
                               ).status_code == 415
            assert client.post("/retry", content=b"csrf_token=" + b"x" * 70_000,
                               headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 413
            _untouched(work)
            # a conflict already resolved cannot be resolved again: 409
            assert client.post(f"/conflicts/{c}", data={"choice": "remote", "csrf_token": token}).status_code == 303
            again = client.post(f"/conflicts/{c}", data={"choice": "local", "csrf_token": token})
            assert again.status_code == 409 and "already resolved" in again.text
    finally:
        server.stop()


def test_values_from_the_database_and_ho_are_escaped_and_no_secret_is_shown(sqlite_work: Work) -> None:
    server = _served(operator_page(sqlite_work.outlet.sync, allow_anonymous=True))
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            pages = [client.get(p.format(conflict=sqlite_work.conflict)).text for p in GETS]
            conflict_page = pages[GETS.index("/conflicts/{conflict}")]
            assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; Tea &amp; &#34;Co&#34;" in conflict_page
            assert HOSTILE_NAME not in conflict_page
            assert "NEGATIVE_TOTAL" in pages[GETS.index("/queue?status=dead")]  # HO's refusal, shown
            answer = httpx.get(server.url + "/", timeout=30)  # a first visit: the cookie is set
            assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
            assert answer.headers["x-frame-options"] == "DENY" and answer.headers["cache-control"] == "no-store"
            cookie = answer.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=strict" in cookie
            for html in pages:
                assert "<script" not in html
                assert API_KEY not in html
                assert "http://" not in html.replace(server.url, "") and "https://" not in html  # nothing outside
    finally:
        server.stop()


def test_a_token_from_one_worker_is_good_in_another_and_the_host_may_give_the_key(sqlite_work: Work) -> None:
    """Two page apps built from the same settings stand for two worker processes: the key both derive from
    posync's settings is the same, so a form served by one is accepted by the other. A host's own key
    replaces it."""
    one = _served(operator_page(sqlite_work.outlet.sync, allow_anonymous=True))
    two = _served(operator_page(lambda: sqlite_work.outlet.sync, allow_anonymous=True))
    own = _served(operator_page(sqlite_work.outlet.sync, allow_anonymous=True,
                                csrf_secret="the host's own key, 32 bytes"))
    try:
        with httpx.Client(base_url=one.url, timeout=30) as client:
            token = _token(client)
        with httpx.Client(base_url=own.url, timeout=30, cookies={"posync_csrf": token}) as other:
            refused = other.post("/retry", data={"all": "1", "confirm": "yes", "csrf_token": token})
            assert refused.status_code == 403
        _untouched(sqlite_work)
        with httpx.Client(base_url=two.url, timeout=30, cookies={"posync_csrf": token}) as other:
            answer = other.post("/retry", data={"all": "1", "confirm": "yes", "csrf_token": token})
            assert answer.status_code == 303, answer.text
        assert sqlite_work.outlet.sync.manager.queue(posync.ItemStatus.DEAD, 10) == []
    finally:
        for server in (one, two, own):
            server.stop()


def test_a_page_mounted_before_posync_is_built_answers_503_then_serves(sqlite_work: Work) -> None:
    built: list[posync.Posync] = []
    server = _served(operator_page(lambda: built[0] if built else None,  # type: ignore[arg-type,return-value]
                                   allow_anonymous=True))
    try:
        early = httpx.get(server.url + "/", timeout=30)
        assert early.status_code == 503 and "not started" in early.text
        built.append(sqlite_work.outlet.sync)
        assert httpx.get(server.url + "/", timeout=30).status_code == 200
    finally:
        server.stop()


def test_under_flask_through_a2wsgi_the_page_renders_with_its_prefix_and_a_retry_goes_through(
        work: Work) -> None:
    flask_app = Flask(__name__)
    page = ASGIMiddleware(operator_page(work.outlet.sync, authorize=lambda r: True))  # type: ignore[arg-type]
    flask_app.wsgi_app = DispatcherMiddleware(flask_app.wsgi_app, {"/pos/sync-ui": page})  # type: ignore[method-assign]
    client = flask_app.test_client()
    health = client.get("/pos/sync-ui/")
    assert health.status_code == 200
    html = health.get_data(as_text=True)
    assert 'href="/pos/sync-ui/queue?status=dead"' in html and 'action="/pos/sync-ui/sync"' in html
    token = TOKEN.search(html).group(1)  # type: ignore[union-attr]
    with work.outlet.Session() as s:  # the operator fixed the order's row; the retry sends it as it is now
        s.get(Order, "o-bad").total = 5
        s.commit()
    answer = client.post("/pos/sync-ui/retry", data={"item": str(work.dead), "confirm": "yes", "csrf_token": token})
    assert answer.status_code == 303 and answer.headers["location"].startswith("/pos/sync-ui/queue")
    work.outlet.sync.sync_now()
    assert work.ho.records("orders")["o-bad"].data["total"] == 5


def test_photos_show_counts_failures_and_a_reconcile_dry_run_that_changes_nothing(
        photo_ho: PhotoHO, sqlite_url: str, tmp_path: Path) -> None:
    engine = prepare_database(sqlite_url)
    store = FileStore(tmp_path / "store")
    photos = build_photo_sync(PhotoSettings(ho_url=photo_ho.base_url, username="posync", password="posync-password",
                                            company_id="c1", store_id="s1", photo_stall_timeout=2.0),
                              engine=engine, store=store)
    sync = posync.Posync(engine, pos_registry(), posync.PosyncSettings(ho_url=UNREACHABLE, api_key=API_KEY),
                         photos=photos)
    server = None
    try:
        photo_ho.put_photo("p1", os.urandom(2000))
        broken = photo_ho.put_photo("p2", os.urandom(2000))
        photo_ho.tamper(broken, checksum="0" * 32)  # HO lists an MD5 its bytes do not have
        photos.sync(full=True)
        staged = tmp_path / "stray.tmp"
        staged.write_bytes(b"stray")
        store.put_file("products/p9/stray.jpg", staged, md5="a" * 32, content_type="image/jpeg", consume=True)
        server = _served(operator_page(sync, allow_anonymous=True))
        with httpx.Client(base_url=server.url, timeout=30) as client:
            html = client.get("/photos").text
            assert re.search(r'id="photo-failures".*' + broken, html, re.S)
            assert 'id="last-full">never<' not in html
            token = TOKEN.search(html).group(1)  # type: ignore[union-attr]
            report = client.post("/photos/reconcile", data={"csrf_token": token})
            assert report.status_code == 200, report.text
            assert 'id="reconcile-report"' in report.text
        assert "products/p9/stray.jpg" in {o.key for o in store.list()}  # a dry run removes nothing
    finally:
        if server is not None:
            server.stop()
        sync.close()
        photos.close()
        engine.dispose()


def test_a_form_served_by_one_worker_process_posts_to_another(sqlite_url: str, tmp_path: Path) -> None:
    """Two uvicorn processes of the same POS on one database (the workers of a multi-worker server, or two
    behind a balancer): the CSRF key both derive is the same, so a form one served posts to the other.
    (The key does not come from the database: SQLite only.)"""
    db_url = sqlite_url
    port_a, port_b = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "POS_DATABASE_URL": db_url, "POS_ADMIN_TOKEN": "admin-token",
           "POS_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "POSYNC_HO_URL": UNREACHABLE,
           "POSYNC_API_KEY": API_KEY}
    prepare_database(db_url).dispose()  # migrated once, before the two start
    processes = []
    logs = []
    try:
        for port in (port_a, port_b):
            log = (tmp_path / f"uvicorn-{port}.log").open("wb")
            logs.append(log)
            processes.append(subprocess.Popen(
                [str(BIN / "uvicorn"), "tests.page_app:app", "--host", "127.0.0.1", "--port", str(port),
                 "--log-level", "warning"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        admin = {"authorization": "Bearer admin-token"}
        urls = [f"http://127.0.0.1:{port}/sync/ui" for port in (port_a, port_b)]

        def up(url: str) -> bool:
            try:
                return httpx.get(url + "/queue", headers=admin, timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        for port, url, process in zip((port_a, port_b), urls, processes, strict=True):
            wait_for("the page answers", lambda url=url, process=process: process.poll() is None and up(url),
                     tmp_path / f"uvicorn-{port}.log", 60)
        served = httpx.get(urls[0] + "/", headers=admin, timeout=10)
        token = TOKEN.search(served.text).group(1)  # type: ignore[union-attr]
        form = {"all": "1", "confirm": "yes"}
        other = httpx.post(urls[1] + "/retry", headers=admin, cookies={"posync_csrf": token},
                           data={**form, "csrf_token": token}, timeout=10)
        assert other.status_code == 303, other.text
        assert other.headers["x-pid"] != served.headers["x-pid"]
        forged = "nonce." + "0" * 64
        refused = httpx.post(urls[1] + "/retry", headers=admin, cookies={"posync_csrf": forged},
                             data={**form, "csrf_token": forged}, timeout=10)
        assert refused.status_code == 403
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()


FIELD_VALUES = st.one_of(st.none(), st.integers(), st.text(max_size=8), st.booleans())
RECORDS = st.dictionaries(st.sampled_from(["id", "name", "price", "sku", "note"]), FIELD_VALUES, max_size=5)


@settings(deadline=None)  # a pure function; the machine may be busy
@given(local=RECORDS, remote=RECORDS, data=st.data())
def test_a_merge_takes_each_field_from_the_side_picked_and_keeps_what_both_agree_on(
        local: dict[str, Any], remote: dict[str, Any], data: st.DataObject) -> None:
    rows = views.conflict_rows(local, remote)
    assert [r.name for r in rows] == list(dict.fromkeys([*local, *remote]))
    assert {r.name for r in rows if not r.differs} == {k for k in local if k in remote and local[k] == remote[k]}
    picks = {r.name: data.draw(st.sampled_from(["local", "remote"])) for r in rows if r.differs}
    merged = views.merged_record(local, remote, picks)
    for row in rows:
        side = local if picks.get(row.name, "local") == "local" else remote
        if row.name in side:
            assert merged[row.name] == side[row.name]
        else:
            assert row.name not in merged
    assert views.merged_record(local, remote, {}) == local  # nothing picked: the local record as it is
