"""Product photos from head office to the edge (issue 12; seeds 000, 001, 002): the public names.

Photo replication lives in posync's layers (docs/architecture.md), like the rest of posync:

    posync.ho.photos             HO's two photo APIs (seed 001's v1, seed 000's legacy) and their wire models
    posync.transfer              the byte path: staged downloads (streamed MD5 + size, Range/If-Range resume),
                                 engines curl (pycurl) and urllib3
    posync.stores                edge stores: FileStore, S3Store, DatabaseStore, HostColumnStore
    posync.repositories.photos   the photo SQL, named by intent
    posync.services.photos       the use cases: decide (pure), listing, transfers, ops, reconcile, PhotoSync
    posync.workers.photo_jobs    the hourly incremental and nightly full passes on the scheduler
    posync.app.photos            build_photo_sync(settings, engine=...): the wiring
    posync.settings              PosyncSettings.photos: PhotoOptions (PhotoSettings is PosyncSettings)
    posync.http.photos           PhotoURLs and the ASGI/WSGI endpoints that serve photos
    posync.cli.photos            ``posync photos sync | reconcile | status``

Nothing here connects, starts a thread or reads the environment at import time.
"""

from posync.app.photos import build_photo_sync, build_store, table_products
from posync.errors import (
    DeleteCapExceeded,
    PhotoConfigError,
    PhotoError,
    PhotoNotFoundError,
    PhotoStoreError,
    PhotoTransferError,
)
from posync.services.photos.report import Progress, SyncReport
from posync.services.photos.service import PhotoSync
from posync.settings import PhotoOptions, PhotoSettings
from posync.stores import DatabaseStore, FileStore, HostColumnStore, PhotoStore, S3Store, open_store

__all__ = [
    "DatabaseStore",
    "DeleteCapExceeded",
    "FileStore",
    "HostColumnStore",
    "PhotoConfigError",
    "PhotoError",
    "PhotoNotFoundError",
    "PhotoOptions",
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
