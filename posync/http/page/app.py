"""The operator's page: the outlet's sync health, its queue and dead letters, the conflict inbox and the
photos, server-rendered HTML a host mounts beside the management router, behind the same guard.

    GET  /                     health first: healthy or not and why, HO, last passes, queue, conflicts
    POST /sync                 a sync cycle now (here, or the outlet's syncer is asked)
    GET  /queue                the outbox, filtered by ?resource= and ?status=
    GET  /retry                the confirmation step (?item=<id> or ?all=1)
    POST /retry                retry one change or every dead one (the form's confirm box ticked)
    GET  /conflicts            the open conflicts (and recently resolved ones)
    GET  /conflicts/{id}       local and HO side by side, field by field
    POST /conflicts/{id}       resolve: local, HO's, or a merge picked field by field; then push it
    GET  /photos               photo counts by state, failures, the last full check
    POST /photos/reconcile     a reconcile dry run: what a fix would do

No JavaScript, no outside request (the CSS is inline), every value escaped (Jinja2's autoescape). Every
POST carries the CSRF token (``csrf.py``). A caller's mistake is a 4xx page, never a 500."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from posync.app import Posync
from posync.errors import ClosedError, ConfigurationError, ConflictStateError, NotFoundError, PosyncError
from posync.http.guard import Authorize, Guard, LazyPosync
from posync.http.page import views
from posync.http.page.csrf import COOKIE, FIELD, CsrfTokens, key_from_settings
from posync.models.enums import ItemStatus

__all__ = ["operator_page"]

MAX_FORM_BYTES = 64 * 1024
# the browser's own guard: nothing loads from anywhere (the CSS is inline), forms post only here, no other
# site frames the page (clickjacking), and nothing an operator saw is kept in a cache
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY", "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
PAGE_SIZE = 200

Handler = Callable[[Request], Awaitable[Response]]


class PageError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("posync.http.page", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters.update(when=views.when, age=views.age, show=views.show_value)
    return env


def _status(sync: Posync) -> dict[str, Any]:
    """The status report with a live, bounded check of HO (its version endpoint)."""
    out: dict[str, Any] = sync.status(check_ho=True).as_dict()
    return out


def _int(raw: str | None, name: str) -> int:
    if raw is None or not raw.isdigit() or len(raw) > 18:
        raise PageError(400, f"{name} must be a whole number")
    return int(raw)


def operator_page(sync: Posync | Callable[[], Posync], authorize: Authorize | None = None, *,
                  allow_anonymous: bool = False, csrf_secret: str | bytes | None = None) -> Starlette:
    """The page as a Starlette app, locked by default like ``management_app`` (same ``authorize`` and
    ``allow_anonymous``). ``csrf_secret``: the key that signs CSRF tokens (the same in every worker); by
    default one derived from posync's HO credentials."""
    guard = Guard("the operator page", authorize, allow_anonymous)
    outlet = LazyPosync(sync)
    env = _environment()
    given_key = csrf_secret.encode() if isinstance(csrf_secret, str) else csrf_secret
    if given_key is not None and len(given_key) < 16:
        raise ConfigurationError("operator_page: csrf_secret must be at least 16 bytes")
    tokens: list[CsrfTokens] = []

    def csrf() -> CsrfTokens:
        if not tokens:
            tokens.append(CsrfTokens(given_key or key_from_settings(outlet().settings)))
        return tokens[0]

    def render(request: Request, template: str, http_status: int = 200, *, forms: bool = True,
               **context: Any) -> HTMLResponse:
        base = request.scope.get("root_path", "").rstrip("/")
        cookie = request.cookies.get(COOKIE)
        token: str | None = None
        if forms:
            with contextlib.suppress(PosyncError):  # posync not started yet: the page says so, no forms
                token = cookie if csrf().valid(cookie) else csrf().issue()
        if context.get("notice"):  # a notice comes back in the redirect's query: keep it short
            context["notice"] = str(context["notice"])[:300]
        html = env.get_template(template).render(base=base, csrf_field=FIELD, csrf_token=token, **context)
        response = HTMLResponse(html, status_code=http_status, headers=SECURITY_HEADERS)
        if token is not None and token != cookie:
            response.set_cookie(COOKIE, token, path=base or "/", httponly=True, samesite="strict",
                                secure=request.url.scheme == "https")
        return response

    def error(request: Request, status: int, message: str) -> HTMLResponse:
        return render(request, "error.html", status, forms=False, status_code=status, message=message)

    def redirect(request: Request, path: str, **query: Any) -> RedirectResponse:
        base = request.scope.get("root_path", "").rstrip("/")
        suffix = f"?{urlencode(query)}" if query else ""
        return RedirectResponse(f"{base}{path}{suffix}", status_code=303)

    async def form(request: Request) -> dict[str, str]:
        """The POST's urlencoded form, its CSRF pair checked."""
        kind = request.headers.get("content-type", "")
        if kind and not kind.startswith("application/x-www-form-urlencoded"):
            raise PageError(415, "send the page's own form (application/x-www-form-urlencoded)")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise PageError(413, "the form is too large")
        try:
            fields = {k: v[-1] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        except UnicodeDecodeError:
            raise PageError(400, "the form is not UTF-8") from None
        if not csrf().check(request.cookies.get(COOKIE), fields.get(FIELD)):
            raise PageError(403, "the form's CSRF token is missing or invalid: reload the page and try again")
        return fields

    def page(fn: Callable[[Request], Awaitable[Response]]) -> Handler:
        async def endpoint(request: Request) -> Response:
            refusal = await guard.refusal(request)
            if refusal is not None:
                return error(request, refusal.status, refusal.message)
            try:
                return await fn(request)
            except PageError as exc:
                return error(request, exc.status, str(exc))
            except (NotFoundError, ConfigurationError) as exc:  # an unknown id or resource
                return error(request, 404, str(exc))
            except (ConflictStateError, ClosedError) as exc:
                return error(request, 409, str(exc))
            except PosyncError as exc:  # HO or the outlet database failed: nothing was changed
                return error(request, 503, str(exc))
            except ValueError as exc:
                return error(request, 400, str(exc))

        return endpoint

    # -- health ------------------------------------------------------------------------------------------

    async def health(request: Request) -> Response:
        status = await run_in_threadpool(_status, outlet())
        return render(request, "health.html", s=status, notice=request.query_params.get("notice"))

    async def sync_now(request: Request) -> Response:
        await form(request)
        report = await run_in_threadpool(outlet().sync_here_or_ask)
        if report is None:
            notice = "The outlet's syncer (another worker) was asked to sync now."
        elif report.error:
            notice = f"Sync ran with an error: {report.error}"
        else:
            notice = f"Sync ran: {report.push.applied} pushed, {report.pull.applied.written} pulled."
        return redirect(request, "/", notice=notice)

    # -- queue and dead letters --------------------------------------------------------------------------

    async def queue(request: Request) -> Response:
        raw_status = request.query_params.get("status") or None
        resource = request.query_params.get("resource") or None
        try:
            status_ = ItemStatus(raw_status) if raw_status else None
        except ValueError:
            raise PageError(400, f"status must be one of {', '.join(s.value for s in ItemStatus)}") from None
        sync_ = outlet()
        if resource is not None and resource not in sync_.registry:
            raise PageError(400, f"resource {resource!r} is not synced here")
        items = await run_in_threadpool(lambda: sync_.manager.queue(status_, PAGE_SIZE, resource=resource))
        return render(request, "queue.html", items=items, status=raw_status, resource=resource,
                      statuses=[s.value for s in ItemStatus], resources=[e.resource for e in sync_.registry],
                      page_size=PAGE_SIZE, notice=request.query_params.get("notice"))

    async def retry_confirm(request: Request) -> Response:
        sync_ = outlet()
        if request.query_params.get("all") == "1":
            dead = await run_in_threadpool(lambda: sync_.manager.queue(ItemStatus.DEAD, PAGE_SIZE))
            return render(request, "confirm_retry.html", item=None, dead=dead)
        item_id = _int(request.query_params.get("item"), "item")
        resource, entity_id = request.query_params.get("resource"), request.query_params.get("entity")
        if not resource or entity_id is None:
            raise PageError(400, "give the change's item, resource and entity")
        rows = await run_in_threadpool(lambda: sync_.manager.queue(None, PAGE_SIZE, resource=resource,
                                                                   entity_id=entity_id))
        item = next((r for r in rows if r["id"] == item_id), None)
        if item is None:
            raise NotFoundError("queue item", item_id)
        return render(request, "confirm_retry.html", item=item, dead=[])

    async def retry(request: Request) -> Response:
        fields = await form(request)
        if fields.get("confirm") != "yes":
            raise PageError(400, "tick the confirmation box to retry")
        if fields.get("all") == "1":
            n = await run_in_threadpool(outlet().manager.retry_all)
            notice = f"{n} dead change(s) queued again; they go with the next push."
        else:
            item_id = _int(fields.get("item"), "item")
            await run_in_threadpool(outlet().manager.retry, item_id)
            notice = f"Change #{item_id} queued again; it goes with the next push."
        return redirect(request, "/queue", notice=notice)

    # -- conflicts ---------------------------------------------------------------------------------------

    async def conflicts(request: Request) -> Response:
        rows = await run_in_threadpool(outlet().manager.conflicts, None, PAGE_SIZE)
        open_ = [r for r in rows if r["status"] == "open"]
        resolved = [r for r in reversed(rows) if r["status"] != "open"][:20]
        return render(request, "conflicts.html", open=open_, resolved=resolved)

    async def conflict(request: Request) -> Response:
        conflict_id = int(request.path_params["conflict_id"])
        sync_ = outlet()
        record = await run_in_threadpool(sync_.manager.conflict, conflict_id)
        local = record.get("local_data")
        remote = None if record.get("remote_deleted") else record.get("remote_data")
        rows = views.conflict_rows(local, remote)
        # what became of the resolution: the entity's changes still queued (none: HO took it)
        pending = await run_in_threadpool(lambda: sync_.manager.queue(
            None, 20, resource=record["resource"], entity_id=record["entity_id"]))
        return render(request, "conflict.html", c=record, rows=rows, queued=pending,
                      mergeable=local is not None and remote is not None,
                      outcome=request.query_params.get("outcome"))

    async def resolve(request: Request) -> Response:
        conflict_id = int(request.path_params["conflict_id"])
        fields = await form(request)
        choice_ = fields.get("choice")
        sync_ = outlet()
        choice: str | dict[str, Any]
        if choice_ in ("local", "remote"):
            choice = choice_
        elif choice_ == "merge":
            record = await run_in_threadpool(sync_.manager.conflict, conflict_id)
            picks = {k.removeprefix("pick."): v for k, v in fields.items() if k.startswith("pick.")}
            remote = None if record.get("remote_deleted") else record.get("remote_data")
            choice = views.merged_record(record.get("local_data"), remote, picks)
        else:
            raise PageError(400, "choose local, HO's version, or merge")
        await run_in_threadpool(sync_.manager.resolve, conflict_id, choice)
        outcome = "resolved"
        if choice != "remote":  # the local or merged record goes to HO now, so its answer can be shown
            try:
                report = await run_in_threadpool(sync_.sync_here_or_ask)
                outcome = "asked" if report is None else ("error" if report.error else "pushed")
            except PosyncError:
                outcome = "error"
        return redirect(request, f"/conflicts/{conflict_id}", outcome=outcome)

    # -- photos ------------------------------------------------------------------------------------------

    async def photos(request: Request) -> Response:
        status = await run_in_threadpool(lambda: outlet().status().photos)
        return render(request, "photos.html", p=status, report=None)

    async def photos_reconcile(request: Request) -> Response:
        await form(request)
        sync_ = outlet()
        if sync_.photos is None:
            raise PageError(404, "photos are not wired into this posync")
        photo_sync = sync_.photos
        report = await run_in_threadpool(lambda: photo_sync.reconcile(fix=False).as_dict())
        status = await run_in_threadpool(lambda: sync_.status().photos)
        return render(request, "photos.html", p=status, report=report)

    return Starlette(routes=[
        Route("/", page(health), methods=["GET"]),
        Route("/sync", page(sync_now), methods=["POST"]),
        Route("/queue", page(queue), methods=["GET"]),
        Route("/retry", page(retry_confirm), methods=["GET"]),
        Route("/retry", page(retry), methods=["POST"]),
        Route("/conflicts", page(conflicts), methods=["GET"]),
        Route("/conflicts/{conflict_id:int}", page(conflict), methods=["GET"]),
        Route("/conflicts/{conflict_id:int}", page(resolve), methods=["POST"]),
        Route("/photos", page(photos), methods=["GET"]),
        Route("/photos/reconcile", page(photos_reconcile), methods=["POST"]),
    ])

