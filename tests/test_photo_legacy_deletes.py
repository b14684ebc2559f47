"""The legacy photo API reports no deletes (seed 000; issue 15, item 9): a POS embedding posync with it gets
the nightly full check by default, at the hour and minute its PhotoSettings say, and status tells when the
full check last ran and that only it sees HO's deletes. Real Posync, real APScheduler, the shipped PhotoHO."""

from __future__ import annotations

import os
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler

import posync
from posync import Registry
from posync.migrations import upgrade
from posync.photos import PhotoSettings, build_photo_sync
from posync.testing import serve_in_thread
from posync.testing.photos import PhotoHO
from posync.workers.photo_jobs import FULL_JOB_ID, INCREMENTAL_JOB_ID


def test_legacy_api_gets_the_configured_nightly_full_check_which_alone_sees_hos_deletes(
        db_url: str, tmp_path: Path) -> None:
    photo_ho = PhotoHO()
    with serve_in_thread(photo_ho.app) as server:
        photo_ho.base_url = server.url
        ids = [photo_ho.put_photo(f"p{n}", os.urandom(2000)) for n in range(3)]
        engine = posync.create_engine(db_url)
        upgrade(engine)
        settings = PhotoSettings(ho_url=server.url, username="posync", password="posync-password",
                                 photo_api="legacy", photo_store=f"fs:{tmp_path / 's'}", photo_full_hour=4,
                                 photo_incremental_minute=17)
        photos = build_photo_sync(settings, engine=engine)
        pos = posync.Posync(engine, Registry([]), posync.PosyncSettings(ho_url=server.url, api_key="k"),
                            photos=photos)
        host = BackgroundScheduler(timezone="UTC")  # the host's, not started: the jobs wait in it
        try:
            pos.start(host)
            jobs = {j.id: j for j in host.get_jobs()}
            # at the outlet's offset after those times (issue 17): the cron is the trigger's first part
            assert str(jobs[FULL_JOB_ID].trigger).startswith("cron[hour='4', minute='0'] +")
            assert str(jobs[INCREMENTAL_JOB_ID].trigger).startswith("cron[minute='17'] +")

            status = pos.manager.status().photos
            assert status is not None and status["last_full_at"] is None
            assert status["deletes_seen_by"].startswith("full check only")
            assert status["schedule"] == {"incremental_minute": 17, "full_hour": 4}

            assert photos.sync().ok
            photo_ho.delete_photo(ids[0])
            gone = photo_ho.expected()
            incremental = jobs[INCREMENTAL_JOB_ID].func(*jobs[INCREMENTAL_JOB_ID].args)
            assert incremental is not None and incremental["deleted"] == 0  # the legacy API never says
            assert len(list(photos.store.list())) == 3
            full = jobs[FULL_JOB_ID].func(*jobs[FULL_JOB_ID].args)
            assert full is not None and full["deleted"] == 1 and full["ok"]
            assert {o.key for o in photos.store.list()} == set(gone)
            assert pos.manager.status().photos["last_full_at"] is not None  # type: ignore[index]
        finally:
            pos.close()
            photos.close()
            engine.dispose()
