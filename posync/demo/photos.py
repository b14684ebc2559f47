"""A photo demo for ``posync demo``: the reference HO's photo side on loopback, an outlet on SQLite with the
filesystem store, and the story: first sync, a no-op resync, an HO edit and delete, a second sync.

    figures = run_photo_demo(data_dir, say=print, progress=on_progress)
"""

from __future__ import annotations

import hashlib
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from posync.services.photos.report import ProgressFn

__all__ = ["run_photo_demo"]


def run_photo_demo(data_dir: str | Path | None = None, *, say: Callable[[str], None] = print,
                   progress: ProgressFn | None = None, photos: int = 40) -> dict[str, Any]:
    from posync.app.photos import build_photo_sync
    from posync.db import create_engine
    from posync.migrations import upgrade
    from posync.settings import PosyncSettings
    from posync.testing.photos import PhotoHO
    from posync.testing.server import serve_in_thread

    root = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="posync-photo-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(12)
    ho = PhotoHO()
    ids = [ho.put_photo(f"prod-{n % 15}", rng.randbytes(rng.randint(20_000, 80_000)), sort_order=n)
           for n in range(photos)]
    engine = create_engine(f"sqlite:///{root / 'outlet-photos.db'}")
    figures: dict[str, Any] = {}
    try:
        upgrade(engine)
        with serve_in_thread(ho.app) as server:
            ho.base_url = server.url
            settings = PosyncSettings(ho_url=server.url, username="posync", password="posync-password",
                                     photo_store=f"fs:{root / 'photos'}", photo_api="v1")
            with build_photo_sync(settings, engine=engine) as sync:
                say(f"HO has {photos} product photos; the outlet has none.")
                first = sync.sync(progress=progress)
                say(f"first sync: {first.synced} photos ({first.bytes / 1e6:.1f} MB) in {first.seconds:.2f}s")
                again = sync.sync(progress=progress)
                say(f"resync with nothing changed: {again.api_requests} request, {again.synced} photos moved")
                ho.update_photo(ids[0], rng.randbytes(30_000))
                ho.delete_photo(ids[1])
                third = sync.sync(progress=progress)
                say(f"after an HO edit and delete: {third.synced} fetched, {third.deleted} deleted")
                expected = ho.expected()
                store_root = root / "photos"
                same = all(hashlib.md5((store_root / k).read_bytes(), usedforsecurity=False).hexdigest() == md5
                           for k, (md5, _) in expected.items())
                say("outlet photos equal HO's, byte for byte" if same else "outlet photos DIFFER from HO's")
                figures = {"first": first.as_dict(), "noop_requests": again.api_requests,
                           "edit_synced": third.synced, "deleted": third.deleted, "converged": same,
                           "status": sync.status()["photos"]}
    finally:
        engine.dispose()
    return figures
