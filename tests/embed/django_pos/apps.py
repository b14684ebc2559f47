import atexit

from django.apps import AppConfig

import posync
from tests.embed.pos import build_sync


class PosConfig(AppConfig):
    name = "tests.embed.django_pos"
    label = "pos"
    sync: posync.Posync

    def ready(self) -> None:  # once per worker process; wsgi.py runs it (and so does every manage.py command)
        self.sync = build_sync()
        self.sync.start()
        atexit.register(self.sync.close)  # a worker's graceful exit (SIGTERM) runs it, bounded by close_timeout
