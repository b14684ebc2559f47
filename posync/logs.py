"""posync's log lines as events: each important line carries an event name and its fields (on the
``logging.LogRecord``, given as ``extra=``), beside its human message.

posync configures no logging (a library is a guest in the host's process): its loggers are ``posync.*``,
and the host decides where they go. A host that wants one JSON object per line installs
:class:`JsonFormatter` on its handler::

    handler = logging.StreamHandler()
    handler.setFormatter(posync.logs.JsonFormatter())
    logging.getLogger("posync").addHandler(handler)

    {"time": "2026-12-07T17:40:01.123Z", "level": "WARNING", "logger": "posync.worker",
     "event": "ho.unreachable", "message": "head office unreachable (...); ...", "error": "...",
     "retry_in_seconds": 30.0}

:data:`EVENTS` lists the events posync emits. Fields never hold a secret (posync's messages never do, and
a field whose name looks like one is masked all the same).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

__all__ = ["EVENTS", "JsonFormatter", "event_fields"]

EVENTS: dict[str, str] = {
    "ho.unreachable": "a cycle found HO out of reach (once per outage); fields: error, retry_in_seconds",
    "ho.rate_limited": "HO answered 429 (once per outage); fields: error, retry_in_seconds",
    "ho.reachable": "HO answers again after an outage; fields: failures",
    "ho.auth_refused": "HO refuses posync's credentials (once until they work); fields: error",
    "ho.auth_accepted": "HO accepts the credentials again",
    "sync.cycle_failed": "a cycle failed for another reason (once per outage); fields: error, retry_in_seconds",
    "sync.cycle_crashed": "a cycle raised something posync did not expect (a bug; once per kind); fields: error",
    "push.dead_letter": "a change set aside for good; fields: resource, entity_id, op, reason",
    "pull.resource_failed": "one resource's pull failed, the others go on; fields: resource, error, "
                            "retry_in_seconds",
    "pull.resource_recovered": "a failing resource pulls again; fields: resource, failures",
    "conflict.opened": "a conflict waits for a manual resolution; fields: conflict_id, resource, entity_id, source",
    "photos.pass": "a photo pass ended; fields: full, listed, synced, failed, deleted, unsynced, bytes, seconds",
    "photos.store_changed": "a photo pass found another store than the last one's and checks every photo",
    "schema.migrated": "posync migrated its own tables (Alembic's own lines are kept quiet); fields: "
                       "from_revision, to_revision",
    "syncer.taken_over": "this process took the syncer lease from one that stopped renewing; fields: previous, "
                         "given_back",
}

# what every LogRecord has: the rest of its attributes are the fields given with extra=
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime",
                                                                                        "taskName"}
_CORE = ("time", "level", "logger", "event", "message")
_SECRET = re.compile(r"pass(word)?|secret|token|api_?key|authori[sz]ation|credential", re.IGNORECASE)
MASK = "***"


def event_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a record carries (what ``extra=`` gave it, the event name aside)."""
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS and k != "event"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO-8601 UTC, milliseconds), level, logger, event (``null`` for a
    line that names none: the host's own, another library's), message, then the record's fields, and
    ``exception`` when there is a traceback. A field named like a secret is masked; a value JSON cannot
    hold is given as text. Works for any logger, not only posync's."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "event": getattr(record, "event", None),
            "message": record.getMessage(),
        }
        for key, value in sorted(event_fields(record).items()):
            if key in _CORE:
                continue
            out[key] = MASK if _SECRET.search(key) and value is not None else value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)
