"""The operator's page (issue 19): a server-rendered page a host mounts beside the management router.

    app.mount("/sync/ui", operator_page(lambda: app.state.sync, authorize=is_admin))

Needs the ``page`` extra (Jinja2)."""

from posync.http.page.app import operator_page

__all__ = ["operator_page"]
