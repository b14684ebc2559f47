"""gunicorn -w 2 tests.embed.django_pos.wsgi:application   (never --preload: posync's threads do not survive a fork)"""

import os
from collections.abc import Callable, Iterable
from typing import Any

from a2wsgi import ASGIMiddleware
from django.apps import apps
from django.core.wsgi import get_wsgi_application

import posync.http
from tests.embed.pos import is_admin

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.embed.django_pos.settings")
django_app = get_wsgi_application()  # runs PosConfig.ready: posync is built and started

management = ASGIMiddleware(posync.http.management_app(apps.get_app_config("pos").sync, authorize=is_admin))
PREFIX = "/api/v1/sync"


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The management router (a Starlette app) beside Django, under the same WSGI server."""
    path = environ.get("PATH_INFO", "")
    if path.startswith(PREFIX + "/"):
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + PREFIX
        environ["PATH_INFO"] = path[len(PREFIX):]
        return management(environ, start_response)
    return django_app(environ, start_response)
