"""HTTP surfaces posync mounts into the host's web app: the management router here; the operator's page
in ``posync.http.page`` (the ``page`` extra: Jinja2)."""

from posync.http.management import management_app

__all__ = ["management_app"]
