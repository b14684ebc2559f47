"""posync's own protocol (docs/protocol.md): batched pushes under idempotency keys that HO enforces, a
commit-ordered cursor, a version per resource."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from posync.errors import HOErrorResponse, ProtocolError, ResyncRequiredError
from posync.ho.base import Paging, PullPage, Upload, VersionInfo
from posync.ho.http import HttpCore
from posync.ho.wire import CursorPage, PosyncVersion, PushResult, check_records, parse, parse_push_results
from posync.registry import TrackedEntity

__all__ = ["PosyncHO"]

PUSH_PATH = "/api/v1/sync/push/"
UPLOAD_PATH = "/api/v1/sync/usage/"
VERSION_PATH = "/api/v1/sync/version/"


def scope_key(path: str, params: dict[str, str]) -> str:
    text = path + "?" + "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def pull_path(entity: TrackedEntity) -> str:
    return entity.path or f"/api/v1/sync/{entity.resource}/"


def records_of(body: dict[str, Any], entity: TrackedEntity, what: str) -> list[dict[str, Any]]:
    """The records of a page: under the resource's list key (or ``records``); a page without them is not
    a page (an empty object must not pass for an empty page)."""
    key = entity.list_key or entity.resource
    records = body.get(key, body.get("records"))
    if records is None:
        raise ProtocolError(f"{what}: the answer has no {key!r} list: not a page")
    return check_records(records, what)


class PosyncHO:
    paging = Paging.CURSOR
    idempotent_uploads = True

    def __init__(self, core: HttpCore, *, outlet_id: str, company_id: str, store_id: str,
                 brand_id: str | None = None) -> None:
        self._core = core
        self.clock = core.clock
        self.outlet_id = outlet_id
        self._params = {"company_id": company_id, "store_id": store_id}
        if brand_id:
            self._params["brand_id"] = brand_id

    def close(self) -> None:
        self._core.close()

    @property
    def closed(self) -> bool:
        return self._core.closed

    def push(self, changes: list[dict[str, Any]]) -> list[PushResult]:
        body = self._core.call("POST", PUSH_PATH, json_body={"outlet_id": self.outlet_id, "changes": changes})
        return parse_push_results(body, [c["idempotency_key"] for c in changes], f"POST {PUSH_PATH}")

    def upload(self, entity: TrackedEntity, items: list[Upload]) -> list[PushResult]:
        path = entity.path or UPLOAD_PATH
        usages = [{**item.data, "idempotency_key": item.key} for item in items]
        body = self._core.call("POST", path, json_body={"outlet_id": self.outlet_id, entity.upload_key: usages})
        return parse_push_results(body, [item.key for item in items], f"POST {path}", needs_version=False)

    def scope(self, entity: TrackedEntity) -> str:
        return scope_key(pull_path(entity), {**self._params, **entity.params})

    def pull(self, entity: TrackedEntity, limit: int, *, cursor: str | None = None,
             updated_since: str | None = None, offset: int | None = None) -> PullPage:
        path = pull_path(entity)
        params = {**self._params, **entity.params, "limit": str(limit)}
        if cursor:
            params["cursor"] = cursor
        if updated_since:
            params["updated_since"] = updated_since
        if offset:
            params["offset"] = str(offset)
        sent = time.time()
        try:
            body = self._core.call("GET", path, params=params)
        except HOErrorResponse as exc:
            if exc.status == 410 or exc.code == "CURSOR_EXPIRED":
                raise ResyncRequiredError(entity.resource, str(exc)) from exc
            raise
        received = time.time()
        what = f"GET {path}"
        if not isinstance(body, dict):
            raise ProtocolError(f"{what}: expected a JSON object", method="GET", path=path)
        page = parse(CursorPage, body, what)
        records = records_of(body, entity, what)
        if page.deleted is not None:
            deleted = check_records(page.deleted, what, deleted=True)
        else:
            deleted = [{"id": i, "version": None} for i in page.deleted_ids or []]
        self._core.observe(page.sync_timestamp, sent, received)
        # posync's ``total`` counts the page, not the query: offset paging's completeness check must not use it
        return PullPage(records, deleted, page.next_cursor, page.has_more, page.next_offset, page.sync_timestamp,
                        None, sent, received)

    def version(self) -> VersionInfo:
        sent = time.time()
        body = self._core.call("GET", VERSION_PATH, params=self._params)
        answer = parse(PosyncVersion, body, f"GET {VERSION_PATH}")
        self._core.observe(answer.timestamp, sent, time.time())
        if answer.resources is not None:
            return VersionInfo(per_resource={k: str(v) for k, v in answer.resources.items()},
                               timestamp=answer.timestamp)
        return VersionInfo(scalar=None if answer.version is None else str(answer.version), timestamp=answer.timestamp)
