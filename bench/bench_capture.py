"""Capture overhead: N tracked ``Order`` inserts in one ORM transaction vs the same inserts of an untracked twin.

    python bench/bench_capture.py [--quick] [--rounds N] [--profile]

Both sides run the same code on the same SQLite file (WAL, posync.create_engine): build N objects,
``add_all``, ``commit``. The tracked side uses the host's sessionmaker with posync's capture attached (as
``Posync(..., sessionmaker=Session)`` does), so every insert also writes an outbox row in the same flush.
The baseline is ``PlainOrder``: the same columns, not a ``Tracked`` model, a session without capture.
A third figure (``Order`` through a session *without* capture) separates the capture hooks from the
``Tracked`` mapper itself (its ``version_id_col``). Target: tracked / untracked <= 1.3x.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import statistics
from datetime import datetime
from pathlib import Path

import sqlmodel
from _common import Timing, bench_args, fmt_ratio, make_outlet, print_header, workdir
from sqlalchemy.orm import sessionmaker
from sqlmodel import Field, SQLModel

from posync.demo.models import Order
from posync.models.tracked import utcnow


class PlainOrder(SQLModel, table=True):
    """``Order``'s twin: the same columns (its own and ``Tracked``'s), no posync in sight."""

    __tablename__ = "bench_plain_order"
    id: str = Field(primary_key=True, max_length=64)
    table_no: str = Field(default="", max_length=20)
    total: int = 0
    status: str = Field(default="open", max_length=20)
    version: int = Field(default=1, nullable=False)
    cloud_version: int | None = Field(default=None, nullable=True)
    sync_status: str = Field(default="pending", max_length=12, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, nullable=False)


def insert_all(Session: sessionmaker[sqlmodel.Session], model: type[SQLModel], n: int, tag: str) -> None:
    with Session() as s:
        s.add_all([model(id=f"{tag}-{i}", table_no=f"T{i % 40}", total=10_000 + i) for i in range(n)])
        s.commit()


def main() -> None:
    args = bench_args(__doc__.splitlines()[0], rounds=7, quick_rounds=3,
                      extra=lambda p: p.add_argument("--profile", action="store_true",
                                                     help="also print a cProfile of one tracked round"))
    n = 1_000 if args.quick else 10_000
    print_header("capture overhead: tracked vs untracked ORM inserts (SQLite file)", args, inserts=n)
    samples: dict[str, list[float]] = {"tracked": [], "untracked": [], "no_capture": []}
    with workdir("capture") as tmp:
        for r in range(args.rounds + 1):  # round 0 warms up imports, mappers and statement caches
            _one_round(tmp, r, n, samples, record=r > 0)
        profile = _profile(tmp, n) if args.profile or not args.quick else None
    tracked, untracked, bare = (Timing(tuple(samples[k])) for k in ("tracked", "untracked", "no_capture"))
    print(untracked.line(f"untracked twin ({n:,} inserts, 1 txn)", n, "rows"))
    print(bare.line("Order, session without capture", n, "rows"))
    print(tracked.line("Order, capture attached (+ outbox rows)", n, "rows"))
    ratio = tracked.median / untracked.median
    paired = statistics.median(t / u for t, u in zip(samples["tracked"], samples["untracked"], strict=True))
    print(f"   ratio tracked / untracked (medians): {fmt_ratio(ratio, '<= 1.3x')}; "
          f"median of per-round ratios: {paired:,.2f}x")
    print(f"     of which Tracked mapper (no capture) / untracked: {bare.median / untracked.median:,.2f}x;"
          f" capture hooks + outbox / no capture: {tracked.median / bare.median:,.2f}x")
    print(f"     per-round ratios (same round, alternating order): "
          f"{', '.join(f'{t / u:.2f}' for t, u in zip(samples['tracked'], samples['untracked'], strict=True))}")
    if profile is not None and (args.profile or ratio > 1.3):
        print("   cProfile of one tracked round (posync's capture hooks and what they call):")
        print(profile)


def _one_round(tmp: Path, r: int, n: int, samples: dict[str, list[float]], *, record: bool) -> None:
    import time

    outlet = make_outlet(f"sqlite:///{tmp / f'capture-{r}.db'}")
    SQLModel.metadata.create_all(outlet.engine, tables=[PlainOrder.__table__])  # type: ignore[attr-defined]
    Plain = sessionmaker(outlet.engine, class_=sqlmodel.Session, expire_on_commit=False)
    try:
        runs = [("untracked", Plain, PlainOrder), ("tracked", outlet.Session, Order), ("no_capture", Plain, Order)]
        if r % 2:  # alternate the order: neither side always gets the warmer cache or the later checkpoint
            runs.reverse()
        for name, Session, model in runs:
            tag = "nc" if name == "no_capture" else "o"
            started = time.perf_counter()
            insert_all(Session, model, n, tag)
            if record:
                samples[name].append(time.perf_counter() - started)
    finally:
        outlet.close()


def _profile(tmp: Path, n: int) -> str:
    outlet = make_outlet(f"sqlite:///{tmp / 'capture-profile.db'}")
    try:
        insert_all(outlet.Session, Order, 100, "warm")
        prof = cProfile.Profile()
        prof.enable()
        insert_all(outlet.Session, Order, n, "prof")
        prof.disable()
    finally:
        outlet.close()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("cumulative").print_stats(r"bench_capture.py|session.py:\d+\(commit\)|posync/capture.py")
    stats.print_callees(r"_before_flush|_after_flush")
    return "\n".join("     " + line for line in out.getvalue().splitlines() if line.strip())


if __name__ == "__main__":
    main()
