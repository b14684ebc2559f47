"""Product photos from head office to the edge (issue 12; seeds 000, 001, 002).

Layout (each a use case or one layer)::

    settings.py      PhotoSettings (POSYNC_* / POSYNC_PHOTO_* variables; secrets as SecretStr)
    app.py           build_photo_sync(settings, engine=...) -> PhotoSync   (the one wiring function)
    wire.py          HO's two photo APIs as pydantic models -> RemotePhoto / ManifestPage
    client/          the HO JSON API over httpx: V1Source (seed 001), LegacySource (seed 000), AuthHeaders
    transfer/        the byte path: staged downloads (streamed MD5 + size, Range/If-Range resume),
                     engines: curl (pycurl CurlMulti, extra "photos-fast") and urllib3 (pure Python)
    stores/          PhotoStore and its implementations: FileStore, S3Store (minio), DatabaseStore (posync's
                     chunked tables), HostColumnStore (the host's own image column, seed 000)
    decide.py        pure decisions: listed photo -> row, work grouping (dedupe), shifted pass, delete cap,
                     reconciliation
    repository.py    the SQL, named by intent
    listing.py       the manifest pass and checkpoint     transfers.py   the byte pass
    service.py       PhotoSync: a pass (list, transfer, delete, report), status()
    ops.py           store + database as one (seed 002): write/delete with compensation, cascades, prefix move
    reconcile.py     check/fix against HO's listing: orphaned, adopt/fetch, missing, corrupt (decide in
                     decide.py, act here; the fix ends with a full pass)
    serve.py         PhotoURLs (local URL with ?v=, HO fallback, placeholder), ASGI and WSGI endpoints
    cli.py           photos_app (typer): ``photos sync``, ``photos reconcile``, ``photos status``
    jobs.py          photo_jobs(scheduler, sync): hourly incremental, nightly full (APScheduler 3.x)
    demo.py          run_photo_demo(data_dir, say=..., progress=...)

Entry points for integration: :data:`posync.photos.cli.photos_app`, :class:`PhotoSettings`,
:func:`build_photo_sync`, :meth:`PhotoSync.sync` / :meth:`PhotoSync.status`, :func:`photo_jobs`,
:func:`run_photo_demo`, :class:`PhotoURLs`, :func:`asgi_app`, :func:`wsgi_app`. Nothing here connects,
starts a thread or reads the environment at import time.
"""

from posync.photos.app import build_photo_sync, build_store, table_products
from posync.photos.errors import (
    DeleteCapExceeded,
    PhotoConfigError,
    PhotoError,
    PhotoNotFoundError,
    PhotoStoreError,
    PhotoTransferError,
)
from posync.photos.report import Progress, SyncReport
from posync.photos.service import PhotoSync
from posync.photos.settings import PhotoSettings
from posync.photos.stores import DatabaseStore, FileStore, HostColumnStore, PhotoStore, S3Store, open_store

__all__ = [
    "DatabaseStore",
    "DeleteCapExceeded",
    "FileStore",
    "HostColumnStore",
    "PhotoConfigError",
    "PhotoError",
    "PhotoNotFoundError",
    "PhotoSettings",
    "PhotoStore",
    "PhotoStoreError",
    "PhotoSync",
    "PhotoTransferError",
    "Progress",
    "S3Store",
    "SyncReport",
    "build_photo_sync",
    "build_store",
    "open_store",
    "table_products",
]
