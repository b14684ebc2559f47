"""The reference HO's photo side (issue 12): both photo APIs, objects on its own HTTP or an S3 endpoint,
faults on the API (posync.testing.faults) and on the bytes (:class:`ByteFaults`)."""

from posync.testing.photos.ho import ABSENT, BUCKET, ByteFaults, HOPhoto, PhotoHO, S3Target

__all__ = ["ABSENT", "BUCKET", "ByteFaults", "HOPhoto", "PhotoHO", "S3Target"]
