"""Prometheus metrics of the outlet (the ``prometheus`` extra: ``pip install posync[prometheus]``), served
as ``GET /metrics`` by the management router.

Every value is read from the outlet database at scrape time by a custom collector, never kept in a
process's counters: under a multi-worker server any worker answers the same, and the syncer that wrote
the numbers need not be the one scraped. Counters (cycles, pushes, pulls, dead letters) come from the sync
log's rows plus the totals its retention folded them into, so they never go back. Each router has its own
``CollectorRegistry``: posync is a guest in the host's process and never touches the global one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from posync.errors import ConfigurationError
from posync.models.enums import ItemStatus, LogKind

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from posync.app import Posync
    from posync.services.status import MetricsSnapshot

__all__ = ["OutletCollector", "metrics_registry", "render"]


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ConfigurationError("GET /metrics needs prometheus_client: pip install 'posync[prometheus]'") from exc
    return prometheus_client


class OutletCollector:
    """The outlet's metrics, read from its database on each ``collect()``."""

    def __init__(self, outlet: Callable[[], Posync]) -> None:
        self._outlet = outlet

    def describe(self) -> list[Metric]:
        return []  # nothing is read when the collector is registered, only when it is scraped

    def collect(self) -> Iterator[Metric]:
        yield from families(self._outlet().manager.metrics())


def families(snapshot: MetricsSnapshot) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

    status = snapshot.status
    queue = GaugeMetricFamily("posync_queue_items", "Changes in the outbox, by status", labels=["status"])
    for item_status in ItemStatus:
        queue.add_metric([item_status.value], status.queue.get(item_status.value, 0))
    yield queue
    yield GaugeMetricFamily("posync_oldest_pending_age_seconds",
                            "Age of the oldest change not yet at HO (pending or in flight); 0 when none",
                            value=status.oldest_pending_age_seconds or 0.0)
    yield GaugeMetricFamily("posync_open_conflicts", "Conflicts waiting for a manual resolution",
                            value=status.open_conflicts)
    yield GaugeMetricFamily("posync_ho_up", "1 when the syncer's last cycle reached HO with accepted credentials",
                            value=1 if status.online and not status.auth_error else 0)
    yield GaugeMetricFamily("posync_healthy", "1 when status says healthy (seed 003's alert thresholds)",
                            value=1 if status.healthy else 0)
    if status.lag_seconds is not None:
        yield GaugeMetricFamily("posync_lag_seconds", "Seconds since the last successful pull",
                                value=status.lag_seconds)
    if status.last_success_at is not None:
        yield GaugeMetricFamily("posync_last_success_timestamp_seconds", "When the last sync cycle completed",
                                value=status.last_success_at.timestamp())

    totals = {(t.kind, t.resource): t for t in snapshot.totals}
    cycles = CounterMetricFamily("posync_sync_cycles", "Sync cycles run, by outcome", labels=["outcome"])
    durations = SummaryMetricFamily("posync_sync_cycle_duration_seconds", "Sync cycles' durations",
                                    labels=["outcome"])
    for outcome, cycle_kind in (("ok", LogKind.CYCLE), ("failed", LogKind.CYCLE_FAILED)):
        total = totals.get((cycle_kind.value, None))
        cycles.add_metric([outcome], total.rows if total else 0)
        durations.add_metric([outcome], total.rows if total else 0, total.duration_ms / 1000 if total else 0.0)
    yield cycles
    yield durations
    push = totals.get((LogKind.PUSH.value, None))
    yield SummaryMetricFamily("posync_push_batch_duration_seconds", "Push batches sent to HO, and their durations",
                              count_value=push.rows if push else 0,
                              sum_value=push.duration_ms / 1000 if push else 0.0)
    yield CounterMetricFamily("posync_pushed_changes", "Changes HO accepted (applied, or a duplicate of one it had)",
                              value=push.changes if push else 0)
    pulls = SummaryMetricFamily("posync_pull_duration_seconds", "Resource pulls and their durations",
                                labels=["resource"])
    pulled = CounterMetricFamily("posync_pulled_changes", "Records pulled from HO and written or deleted here",
                                 labels=["resource"])
    for pull in snapshot.totals:
        if pull.kind == LogKind.PULL.value and pull.resource is not None:
            pulls.add_metric([pull.resource], pull.rows, pull.duration_ms / 1000)
            pulled.add_metric([pull.resource], pull.changes)
    yield pulls
    yield pulled
    yield CounterMetricFamily("posync_dead_letters", "Changes set aside for good (dead letters), ever",
                              value=sum(t.rows for (kind, _), t in totals.items() if kind == LogKind.DEAD.value))
    yield from _photo_families(status.photos)


def _photo_families(photos: dict[str, Any] | None) -> Iterator[Metric]:
    if not photos:
        return
    from prometheus_client.core import GaugeMetricFamily

    states = GaugeMetricFamily("posync_photos", "Product photos, by sync state", labels=["state"])
    for state, count in sorted((photos.get("photos") or {}).items()):
        states.add_metric([state], count)
    yield states
    last = photos.get("last_pass") or {}
    yield GaugeMetricFamily("posync_photo_last_pass_bytes", "Bytes the last photo pass downloaded",
                            value=last.get("bytes", 0) or 0)
    yield GaugeMetricFamily("posync_photo_last_pass_failed", "Photos the last photo pass failed on",
                            value=last.get("failed", 0) or 0)


def metrics_registry(outlet: Callable[[], Posync]) -> CollectorRegistry:
    """A private registry holding the outlet's collector (the global one is the host's)."""
    prometheus = _prometheus()
    registry: CollectorRegistry = prometheus.CollectorRegistry(auto_describe=False)
    registry.register(OutletCollector(outlet))
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in Prometheus's text format, and its content type."""
    prometheus = _prometheus()
    return prometheus.generate_latest(registry), str(prometheus.CONTENT_TYPE_LATEST)
