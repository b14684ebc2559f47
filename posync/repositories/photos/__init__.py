"""All of photo replication's SQL (``posync_photo`` and its checkpoint), named by intent; the edge stores'
own tables are the stores' (``posync.stores``).

Each function takes the caller's connection (and so its transaction) and returns plain values or typed
rows (NamedTuples), never SQLAlchemy rows. SQLAlchemy errors become StorageError at the service boundary
(:func:`translating`).

    base      the tables, error translation, IN batches, bind conversion
    listing   HO's manifest into rows, HO's deletes marked
    work      the byte pass: photos needing bytes, their results, what the store holds per the rows
    state     the checkpoint, deletes waiting, counts for status
    edits     rows edited with their bytes (a photo written or deleted, a prefix moved)
    serving   what the edge serves
"""

from posync.repositories.photos.base import CHECKPOINTS, PHOTOS, translating
from posync.repositories.photos.edits import (
    PhotoKeys,
    delete_row,
    ids_of_product,
    ids_under,
    keys_of,
    move_prefix,
    photo_values,
    record_stored,
)
from posync.repositories.photos.listing import (
    all_ids,
    insert_listed,
    insert_refused,
    insert_rows,
    local_states,
    mark_refused,
    tombstone,
    update_rows,
)
from posync.repositories.photos.serving import PhotoLink, ServedPhoto, photo_link, product_link, servable
from posync.repositories.photos.state import (
    Checkpoint,
    counts,
    failures,
    listed_states,
    load_checkpoint,
    save_checkpoint,
    tombstoned,
)
from posync.repositories.photos.work import (
    StoredPhoto,
    key_users,
    mark_failed,
    mark_synced,
    requeue,
    set_status,
    sources_by_checksum,
    stored_owners,
    stored_photos,
    work,
)

__all__ = [
    "CHECKPOINTS", "PHOTOS", "Checkpoint", "PhotoKeys", "PhotoLink", "ServedPhoto", "StoredPhoto", "all_ids",
    "counts", "delete_row", "failures", "ids_of_product", "ids_under", "insert_listed", "insert_refused",
    "insert_rows", "key_users", "keys_of", "listed_states", "load_checkpoint", "local_states", "mark_failed",
    "mark_refused", "mark_synced", "move_prefix", "photo_link", "photo_values", "product_link", "record_stored",
    "requeue", "save_checkpoint", "servable", "set_status", "sources_by_checksum", "stored_owners",
    "stored_photos", "tombstone", "tombstoned", "translating", "update_rows", "work",
]
