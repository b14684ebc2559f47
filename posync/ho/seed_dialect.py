"""The head office of seeds 004 and 001 as outlets have it (docs/seed-profile.md): ``updated_since`` +
``limit``/``offset`` pages without record versions, ``deleted_ids``, ``sync_timestamp``, one scalar version,
a usage upload that answers a summary and does not deduplicate, ``{"error","code"}`` errors, JWT.

This module only speaks the dialect; what posync does about its naive parts (shifted passes, deletes it
never reports, duplicates) lives in the pull service and the reconciliation."""

from __future__ import annotations

import time
from typing import Any

from posync.errors import ConfigurationError, ProtocolError
from posync.ho.base import Paging, PullPage, Upload, VersionInfo
from posync.ho.http import HttpCore
from posync.ho.posync_dialect import UPLOAD_PATH, VERSION_PATH, pull_path, records_of, scope_key
from posync.ho.wire import OffsetPage, PushResult, SeedUploadSummary, SeedVersion, parse, parse_push_results
from posync.models.enums import PushOutcome
from posync.registry import TrackedEntity

__all__ = ["SeedHO"]

# seed 004: products need brand_id (MISSING_BRAND_ID); the other resources take it as a filter
NEEDS_BRAND = frozenset({"products"})


class SeedHO:
    paging = Paging.OFFSET
    idempotent_uploads = False  # seed 004 logs every usage it receives

    def __init__(self, core: HttpCore, *, company_id: str, store_id: str, brand_id: str | None = None,
                 usage_id_field: str = "usage_id") -> None:
        self._core = core
        self.clock = core.clock
        self._company_id = company_id
        self._store_id = store_id
        self.brand_id = brand_id  # read on every request: a test may change it on a live client
        self._usage_id_field = usage_id_field

    def close(self) -> None:
        self._core.close()

    @property
    def closed(self) -> bool:
        return self._core.closed

    def params(self, entity: TrackedEntity) -> dict[str, str]:
        params = {"company_id": self._company_id, "store_id": self._store_id}
        if self.brand_id:
            params["brand_id"] = self.brand_id
        elif entity.resource in NEEDS_BRAND and "brand_id" not in entity.params:
            raise ConfigurationError(f"the seed HO needs brand_id to serve {entity.resource}: set "
                                     "PosyncSettings(brand_id=...) or the entity's params")
        return {**params, **entity.params}

    def push(self, changes: list[dict[str, Any]]) -> list[PushResult]:
        raise ConfigurationError("the seed HO takes no pushed changes (only append-only uploads, seed 004's "
                                 "usage endpoint); push needs an HO that speaks posync's protocol")

    def upload(self, entity: TrackedEntity, items: list[Upload]) -> list[PushResult]:
        """One POST of the batch. The answer is seed 004's summary (``errors`` by index), or posync's
        ``results`` if HO answers those. Never resent at once on a dropped connection: HO would count
        the usages twice."""
        path = entity.path or UPLOAD_PATH
        usages = [{**item.data, self._usage_id_field: item.key} for item in items]
        body = self._core.call("POST", path, json_body={entity.upload_key: usages}, idempotent=False)
        keys = [item.key for item in items]
        what = f"POST {path}"
        if isinstance(body, dict) and "results" in body:
            return parse_push_results(body, keys, what, needs_version=False)
        summary = parse(SeedUploadSummary, body, what)
        if summary.received is not None and summary.received != len(items):
            raise ProtocolError(f"{what}: HO says it received {summary.received} of {len(items)} usages",
                                method="POST", path=path)
        failed: dict[int, str] = {}
        for error in summary.errors:
            if not 0 <= error.index < len(items):
                raise ProtocolError(f"{what}: an error for usage {error.index} of {len(items)}", method="POST",
                                    path=path)
            failed[error.index] = str(error.error)[:300] if error.error is not None else "rejected"
        if summary.failed is not None and summary.failed != len(failed):
            raise ProtocolError(f"{what}: HO says {summary.failed} failed but lists {len(failed)}", method="POST",
                                path=path)
        # a per-record error at this HO may be passing (its database, say): retried, then set aside
        return [PushResult(idempotency_key=key, status=PushOutcome.REJECTED, code="HO_ERROR", reason=failed[i],
                           retryable=True)
                if i in failed else PushResult(idempotency_key=key, status=PushOutcome.APPLIED)
                for i, key in enumerate(keys)]

    def scope(self, entity: TrackedEntity) -> str:
        try:
            params = self.params(entity)
        except ConfigurationError:
            return "unconfigured"  # never matches a saved version: the pull runs, and says what is missing
        return scope_key(pull_path(entity), params)

    def pull(self, entity: TrackedEntity, limit: int, *, cursor: str | None = None,
             updated_since: str | None = None, offset: int | None = None) -> PullPage:
        path = pull_path(entity)
        params = {**self.params(entity), "limit": str(limit)}
        if updated_since:
            params["updated_since"] = updated_since
        if offset:
            params["offset"] = str(offset)
        sent = time.time()
        body = self._core.call("GET", path, params=params)
        received = time.time()
        what = f"GET {path}"
        if not isinstance(body, dict):
            raise ProtocolError(f"{what}: expected a JSON object", method="GET", path=path)
        page = parse(OffsetPage, body, what)
        records = records_of(body, entity, what)
        if page.has_more and page.next_offset is None:
            raise ProtocolError(f"{what}: has_more without a next_offset", method="GET", path=path)
        self._core.observe(page.sync_timestamp, sent, received)
        deleted = [{"id": i, "version": None} for i in page.deleted_ids]
        return PullPage(records, deleted, None, page.has_more, page.next_offset, page.sync_timestamp, page.total,
                        sent, received)

    def version(self) -> VersionInfo:
        sent = time.time()
        body = self._core.call("GET", VERSION_PATH, params={"company_id": self._company_id})
        answer = parse(SeedVersion, body, f"GET {VERSION_PATH}")
        self._core.observe(answer.timestamp, sent, time.time())
        return VersionInfo(scalar=str(answer.version), timestamp=answer.timestamp)
