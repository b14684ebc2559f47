"""HTTP surfaces posync mounts into the host's web app."""

from posync.http.management import management_app

__all__ = ["management_app"]
