"""``RemoteHO``: the admin API of a reference HO running in another process, over its ``/_admin`` routes."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["RemoteHO"]


class RemoteHO:
    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, timeout=timeout)

    def __repr__(self) -> str:
        return f"RemoteHO({self.url!r})"

    def __enter__(self) -> RemoteHO:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        r = self._client.request(method, path, **kw)
        r.raise_for_status()
        return r.json()

    def put(self, resource: str, entity_id: str, data: dict[str, Any]) -> int:
        return int(self._call("PUT", f"/_admin/records/{resource}/{entity_id}", json=data)["version"])

    def delete(self, resource: str, entity_id: str) -> int:
        return int(self._call("DELETE", f"/_admin/records/{resource}/{entity_id}")["version"])

    def get(self, resource: str, entity_id: str) -> dict[str, Any] | None:
        r = self._client.get(f"/_admin/records/{resource}/{entity_id}")
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return dict(r.json())

    def records(self, resource: str) -> dict[str, dict[str, Any]]:
        return dict(self._call("GET", f"/_admin/records/{resource}"))

    def applied_counts(self, outlet_id: str | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
        params = {k: v for k, v in (("outlet_id", outlet_id), ("idempotency_key", idempotency_key)) if v}
        return dict(self._call("GET", "/_admin/applied", params=params))

    def usages(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_admin/usages"))

    def usage_counts(self, field: str = "usage_id") -> dict[Any, int]:
        """How many stored usages carry each value of ``field`` (see ``ReferenceHO.usage_counts``)."""
        body = self._call("GET", "/_admin/usage-counts", params={"field": field})
        return {c["value"]: int(c["count"]) for c in body["counts"]}

    def duplicate_usages(self, field: str = "usage_id") -> dict[Any, int]:
        return {k: n for k, n in self.usage_counts(field).items() if n > 1}

    def deletions(self, resource: str) -> dict[str, str]:
        return dict(self._call("GET", f"/_admin/deletions/{resource}"))

    def stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "/_admin/stats"))

    def set_faults(self, **settings: Any) -> dict[str, Any]:
        return dict(self._call("POST", "/_faults", json=settings))

    def reset_faults(self) -> dict[str, Any]:
        return dict(self._call("DELETE", "/_faults"))

    def purge_tombstones(self, horizon: float | None = None) -> int:
        return int(self._call("POST", "/_admin/purge", json={"horizon": horizon})["purged"])

    def revoke_access_tokens(self) -> None:
        self._call("POST", "/_admin/revoke-tokens")
