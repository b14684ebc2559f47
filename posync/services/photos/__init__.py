"""Photo replication's use cases: pure decisions, the listing and byte passes, store+database operations,
reconciliation, and :class:`~posync.services.photos.service.PhotoSync` that runs a pass."""
