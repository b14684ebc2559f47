"""Hold Python's cyclic garbage collector off while posync works through a batch or a drain.

A 1,000-change claim or settle allocates tens of thousands of short-lived containers. With the collector
running, that is a dozen young collections per batch; the batch that is on the wire survives them and
is promoted, and every few batches that triggers a full collection, which walks the host app's whole
heap (bench/README.md). Paused, the batch's objects are still freed by reference counting as usual;
only cyclic garbage waits, and a push batch makes about ten such objects. A drain holds the pause
from its first batch to its last and calls :func:`collect_young` every 50 batches (a pull, every 50
pages), so that the garbage the host's other threads make in the meantime is still collected.

The collector is process-wide, so pauses are counted: it comes back when the last posync batch in the
process ends, and only if it was on when the first one began (a host that turned it off keeps it off).
``PosyncSettings.pause_gc = False`` turns this off.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collect_young", "paused"]

_lock = threading.Lock()
_depth = 0
_resume = False


@contextmanager
def paused(enabled: bool = True) -> Iterator[None]:
    global _depth, _resume
    if not enabled:
        yield
        return
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()


def collect_young() -> None:
    """Inside a long pause: collect the young generation now, which holds everything allocated since
    the pause began. Nothing when no pause is on or when the collector was off before it."""
    with _lock:
        due = _depth > 0 and _resume
    if due:
        gc.collect(0)
