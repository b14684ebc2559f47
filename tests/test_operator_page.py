"""The operator page in a real browser (issue 19): the distribution's headless Chromium (/usr/bin/chromium,
which .ci/run installs) driven by Playwright, one browser for the module. The page is mounted in a FastAPI
app as the README shows, over a real outlet with a real dead letter and a real conflict against the
reference HO. An operator resolves the conflict with a merge picked field by field and sees HO's answer,
retries the dead letter after a confirmation; an anonymous visitor is refused, and a POST without the page's
CSRF token (a tampered form, a form on another page) is refused. The screenshots in docs/ come from here:
``POSYNC_DOCS_SCREENSHOTS=1`` writes them there; otherwise they go to a temporary directory, so running the
tests leaves the working tree as it was."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from starlette.requests import Request

import posync
from posync.demo.models import Order
from posync.http.page import operator_page
from posync.testing import serve_in_thread
from tests.page_support import Work, outlet_with_work

CHROMIUM = "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parent.parent / "docs"
TABLET = {"width": 820, "height": 1180}
ADMIN = {"authorization": "Bearer operator-token"}
MOUNT = "/sync/ui"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go: docs/ when asked (``POSYNC_DOCS_SCREENSHOTS=1``), else a temporary directory."""
    return DOCS if os.environ.get("POSYNC_DOCS_SCREENSHOTS") == "1" else tmp_path_factory.mktemp("shots")


def shoot(page: Page, path: Path) -> None:
    """A tablet-wide picture of the whole page, no taller than its content."""
    page.set_viewport_size({"width": TABLET["width"], "height": 400})
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0
    page.set_viewport_size(TABLET)


def is_admin(request: Request) -> bool:
    return request.headers.get("authorization") == ADMIN["authorization"]


@pytest.fixture
def served(db_url: str, tmp_path: Path) -> Iterator[tuple[Work, str]]:
    """The POS's FastAPI app with the page mounted; yields the work and the page's URL."""
    with outlet_with_work(db_url, tmp_path) as work:
        app = FastAPI()
        app.mount(MOUNT, operator_page(lambda: work.outlet.sync, authorize=is_admin))
        with serve_in_thread(app) as server:
            yield work, server.url + MOUNT


@pytest.fixture
def operator(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport=TABLET, extra_http_headers=ADMIN)
    yield context
    context.close()


def test_an_operator_resolves_a_conflict_field_by_field_and_retries_a_dead_letter(
        served: tuple[Work, str], operator: BrowserContext, db_url: str, shots: Path) -> None:
    work, url = served
    page = operator.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(url + "/")
    assert page.inner_text("#dead") == "1" and page.inner_text("#conflicts") == "1"
    assert page.inner_text("#pending") == "0"
    assert page.inner_text("#health").startswith("Not healthy") and "dead" in page.inner_text("#reasons")
    if db_url.startswith("sqlite"):  # the README's pictures (one database is enough)
        shoot(page, shots / "operator-page.png")

    # the conflict inbox: local and HO side by side, the differing fields marked
    page.click("text=Conflicts")
    page.click("text=Resolve…")
    differing = page.eval_on_selector_all("#fields tr.diff", "rows => rows.map(r => r.dataset.field)")
    assert {"name", "price"} <= set(differing) and "id" not in differing
    page.check('input[name="pick.price"][value="remote"]')  # HO's price, the local name
    if db_url.startswith("sqlite"):
        shoot(page, shots / "operator-conflict.png")
    page.click("#merge")
    assert page.inner_text("#conflict-status") == "resolved" and page.inner_text("#resolution") == "merged"
    assert "HO accepted" in page.inner_text("#ho-answer")
    at_ho = work.ho.records("products")["p1"].data
    assert (at_ho["name"], at_ho["price"]) == ("Tea", 120)
    assert work.outlet.sync.manager.conflicts() == []

    # a dead letter: the row fixed, the change retried after a confirmation, then pushed
    with work.outlet.Session() as s:
        s.get(Order, "o-bad").total = 7
        s.commit()
    page.click("text=Dead letters")
    assert "NEGATIVE_TOTAL" in page.inner_text(f'#queue tr[data-item="{work.dead}"]')
    page.click(f'#queue tr[data-item="{work.dead}"] >> text=Retry…')
    page.click("#retry")  # not confirmed: the browser keeps the form (the box is required)
    assert page.url.split("?")[0].endswith("/retry")
    assert [d["id"] for d in work.outlet.sync.manager.queue(posync.ItemStatus.DEAD, 10)] == [work.dead]
    page.check("#confirm")
    page.click("#retry")
    assert "queued again" in page.inner_text(".notice")
    page.click("text=Health")
    page.click("text=Sync now")
    assert "1 pushed" in page.inner_text(".notice")
    assert work.ho.records("orders")["o-bad"].data["total"] == 7
    assert page.inner_text("#dead") == "0"
    assert page.inner_text("#health") == "Healthy"  # nothing dead, HO answers, the cycles succeed
    assert requested and all(u.startswith(url) for u in requested), requested  # nothing from outside


def test_an_anonymous_visitor_and_a_post_without_the_pages_token_are_refused(
        served: tuple[Work, str], browser: Browser, operator: BrowserContext) -> None:
    work, url = served
    anonymous = browser.new_context(viewport=TABLET)
    try:
        visitor = anonymous.new_page()
        answer = visitor.goto(url + "/conflicts")
        assert answer is not None and answer.status == 403
        assert "needs an administrator" in visitor.inner_text("#error-message")
        assert "Tea" not in visitor.content()
    finally:
        anonymous.close()

    page: Page = operator.new_page()
    page.goto(f"{url}/conflicts/{work.conflict}")
    page.evaluate("document.querySelector('input[name=csrf_token]').remove()")  # a tampered form
    with page.expect_navigation() as navigation:
        page.click("#keep-local")
    assert navigation.value is not None and navigation.value.status == 403
    assert "CSRF" in page.inner_text("#error-message")

    # a form on another page posting to the page, with a token it guessed
    page.set_content(f'<form method="post" action="{url}/retry"><input name="all" value="1">'
                     '<input name="confirm" value="yes"><input name="csrf_token" value="guess.0000">'
                     '<button id="go">go</button></form>')
    with page.expect_navigation() as navigation:
        page.click("#go")
    assert navigation.value is not None and navigation.value.status == 403
    assert [c["id"] for c in work.outlet.sync.manager.conflicts()] == [work.conflict]
    assert [d["id"] for d in work.outlet.sync.manager.queue(posync.ItemStatus.DEAD, 10)] == [work.dead]
