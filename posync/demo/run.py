"""``posync demo``: a POS outlet that sells while offline, syncs, and meets one conflict per strategy.

Everything is embedded: the outlet on SQLite, the reference head office (also SQLite) served over a real
loopback socket in this process. Nothing outside the machine is contacted.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlmodel

import posync
from posync.demo.models import Category, Order, Product, Promotion, PromotionUsage
from posync.demo.outlet import make_outlet
from posync.testing import HOOptions, PosyncHO, ReferenceHO, SyncHarness, serve_in_thread

__all__ = ["run_demo"]

T = TypeVar("T")

API_KEY = "demo-outlet-key"


def run_demo(data_dir: Path | None = None, say: Callable[[str], None] = print,
             progress: Callable[[Any], None] | None = None,
             show_status: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the story; returns the figures it printed (the tests check them). ``progress`` gets the photo
    sync's progress (``posync.photos.Progress``), e.g. a progress bar. The outlet's status (HO checked
    live) is shown twice, through ``show_status`` (``posync demo``: the status table): unhealthy right
    after the outage, with its reasons, and at the end, healthy once enough cycles succeeded that the
    outage's failed one is within the failure-rate threshold (the thresholds are the settings' own)."""
    workdir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="posync-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    for old in workdir.glob("*.db*"):
        old.unlink()
    ho = PosyncHO(f"sqlite:///{workdir / 'head-office.db'}", options=HOOptions(api_keys={API_KEY: None}))
    for pid, name, price in [("p1", "ASAHI SALMON BOWL", 42000), ("p2", "SPAGHETTI VONGOLE", 55000)]:
        ho.put("products", pid, {"id": pid, "sku": pid.upper(), "name": name, "price": price})
    ho.put("categories", "c1", {"id": "c1", "name": "Bowls"})
    ho.put("promotions", "promo1", {"id": "promo1", "name": "Lunch deal", "discount_pct": 10})

    figures: dict[str, Any] = {}

    # Start HO once to learn a free port, then take it down: the outlet begins offline.
    server = serve_in_thread(ho.app)
    url = server.url
    port = int(url.rsplit(":", 1)[1])
    server.stop()
    outlet = make_outlet(f"sqlite:///{workdir / 'outlet.db'}", url, api_key=API_KEY, outlet_id="outlet-avril-001",
                         request_timeout=5.0)
    sync, Session = outlet.sync, outlet.Session
    try:
        say(f"== posync demo (data in {workdir})")
        say("-- 1. Offline: the internet is down, the outlet keeps selling")
        with Session() as s:
            for n in range(1, 6):
                s.add(Order(id=f"o{n}", table_no=f"T{n}", total=50000 + n * 1000))
            s.add(PromotionUsage(promotion_id="promo1", bill_id="o1", discount_amount=5100.0,
                                 store_id="outlet-avril-001"))
            s.commit()
            _get(s, Order, "o2").total += 7000  # an edit before anything was sent: folded into one create
            s.commit()
        report = sync.sync_now()
        status = sync.manager.status()
        figures["offline_pending"] = status.pending
        say(f"   sync attempt: {report.error}")
        say(f"   {status.pending} changes wait in the outbox; nothing was lost, nothing dead-lettered")
        say("   the outlet's status now, as `posync status` shows it:")
        outage = sync.status(check_ho=True).as_dict()
        figures["offline_healthy"], figures["offline_reasons"] = outage["healthy"], outage["reasons"]
        _show(outage, show_status, say)

        say("-- 2. Back online: one sync pushes the outbox and pulls the catalogue")
        server = serve_in_thread(ho.app, port=port)
        report = sync.sync_now()
        figures["pushed"] = report.push.applied
        figures["pulled"] = report.pull.applied.written
        say(f"   pushed {report.push.applied} changes in {report.push.batches} batch(es); "
            f"pulled {report.pull.applied.written} records")
        say(f"   HO has orders: {sorted(ho.records('orders'))}, usage logs: {len(ho.usages())}")

        say("-- 3. One conflict per strategy")
        figures["conflicts"] = _conflicts(sync, Session, ho, say)

        final = sync.sync_now()
        status = sync.manager.status()
        figures["final_pending"] = status.pending
        figures["open_conflicts"] = status.open_conflicts
        agree = _outlet_matches_ho(Session, ho)
        figures["converged"] = agree
        say(f"-- 4. Done: {status.pending} pending, {status.open_conflicts} open conflicts, "
            f"outlet and HO agree: {agree} (last cycle error: {final.error})")
        say("-- 5. Product photos: from HO's object storage to the edge store, MD5 verified")
        from posync.demo.photos import run_photo_demo

        photos = run_photo_demo(workdir / "photos", say=lambda line: say(f"   {line}"), progress=progress)
        figures["photos"] = {"converged": photos.get("converged"), "noop_requests": photos.get("noop_requests"),
                             "synced": (photos.get("first") or {}).get("synced")}
        figures["converged"] = figures["converged"] and bool(photos.get("converged"))

        say("-- 6. The outlet's status, as `posync status` shows it")
        figures["cycles_to_recover"] = _recover(sync, say)
        outlet_status = sync.status(check_ho=True).as_dict()
        figures["healthy"] = outlet_status["healthy"]
        _show(outlet_status, show_status, say)
    finally:
        server.stop()  # idempotent
        outlet.close()
        ho.close()
    return figures


def _show(status: dict[str, Any], show_status: Callable[[dict[str, Any]], None] | None,
          say: Callable[[str], None]) -> None:
    if show_status is not None:
        show_status(status)
    else:
        say(f"   healthy: {status['healthy']} {status['reasons']}")


MAX_RECOVERY_CYCLES = 20


def _recover(sync: posync.Posync, say: Callable[[str], None]) -> int:
    """Step 1's failed attempt is one of the window's few cycles: more than the failure-rate threshold
    allows. The scheduler runs a cycle every interval; the demo runs them now, until that one failure is
    within the threshold (bounded). Returns how many it ran."""
    limit = sync.settings.health_max_failure_rate
    ran = 0
    status = sync.status()
    while (status.failure_rate or 0.0) > limit and ran < MAX_RECOVERY_CYCLES:
        sync.sync_now()
        ran += 1
        status = sync.status()
    if ran:
        failed = round((status.failure_rate or 0.0) * status.cycles)
        say(f"   {ran} more cycles ran, as the scheduler would run them: step 1's failed attempt is now {failed} "
            f"of {status.cycles} cycles ({status.failure_rate or 0.0:.0%}; unhealthy above {limit:.0%})")
    return ran


def _conflicts(sync: posync.Posync, Session: Any, ho: ReferenceHO, say: Callable[[str], None]) -> dict[str, str]:
    out: dict[str, str] = {}
    # cloud_wins (products): HO's price change beats the outlet's local edit
    with Session() as s:
        _get(s, Product, "p1").price = 39000
        s.commit()
    ho.put("products", "p1", {"id": "p1", "sku": "P1", "name": "ASAHI SALMON BOWL", "price": 45000})
    SyncHarness(sync).pull_all()
    SyncHarness(sync).drain()
    with Session() as s:
        out["cloud_wins"] = f"products/p1 price {_get(s, Product, 'p1').price} (HO's)"
    # local_wins (orders): HO voided the order, the cashier changed it; the outlet's version is pushed on top
    ho.put("orders", "o3", {"id": "o3", "table_no": "T3", "total": 0, "status": "void"})
    with Session() as s:
        _get(s, Order, "o3").total = 61000
        s.commit()
    sync.sync_now()
    out["local_wins"] = f"orders/o3 total at HO {_ho(ho, 'orders', 'o3')['total']} (the outlet's)"
    # newest_wins (categories): HO renamed first, the outlet renamed later -> the outlet's name wins
    ho.put("categories", "c1", {"id": "c1", "name": "Rice bowls"})
    time.sleep(0.01)
    with Session() as s:
        _get(s, Category, "c1").name = "Donburi"
        s.commit()
    sync.sync_now()
    out["newest_wins"] = f"categories/c1 name at HO {_ho(ho, 'categories', 'c1')['name']!r} (the newer)"
    # manual (promotions): both changed the discount; an operator merges
    with Session() as s:
        _get(s, Promotion, "promo1").discount_pct = 15
        s.commit()
    ho.put("promotions", "promo1", {"id": "promo1", "name": "Lunch deal (weekdays)", "discount_pct": 12})
    sync.sync_now()
    conflict = sync.manager.conflicts()[0]
    say(f"   manual: conflict #{conflict['id']} keeps both sides: local {conflict['local_data']['discount_pct']}% "
        f"vs HO {conflict['remote_data']['discount_pct']}%")
    sync.manager.resolve(conflict["id"], {"id": "promo1", "name": conflict["remote_data"]["name"],
                                          "discount_pct": 15})
    sync.sync_now()
    promo = _ho(ho, "promotions", "promo1")
    out["manual"] = f"promotions/promo1 at HO {promo['name']!r} {promo['discount_pct']}% (merged by the operator)"
    for strategy, outcome in out.items():
        say(f"   {strategy:<12} {outcome}")
    return out


def _get(session: Any, model: type[T], key: str) -> T:
    row = session.get(model, key)
    assert row is not None, f"{model.__name__} {key} is missing"
    return row  # type: ignore[no-any-return]


def _ho(ho: ReferenceHO, resource: str, key: str) -> dict[str, Any]:
    record = ho.get(resource, key)
    assert record is not None and record.data is not None, f"HO has no {resource}/{key}"
    return dict(record.data)


def _outlet_matches_ho(Session: Any, ho: ReferenceHO) -> bool:
    with Session() as s:
        for model, resource, fields in [(Product, "products", ("name", "price")), (Category, "categories", ("name",)),
                                        (Promotion, "promotions", ("name", "discount_pct")),
                                        (Order, "orders", ("total", "table_no"))]:
            local = {str(r.id): r for r in s.exec(sqlmodel.select(model)).all()}  # type: ignore[arg-type]
            remote = {k: v for k, v in ho.records(resource).items() if not v.deleted}
            if set(local) != set(remote):
                return False
            for key, row in local.items():
                if any(getattr(row, f) != (remote[key].data or {}).get(f) for f in fields):
                    return False
    return True
