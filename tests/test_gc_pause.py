"""posync holds the cyclic GC off during a batch's database work and always gives it back as it found it."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Callable, Iterator

import pytest

from posync import _gc


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()


def test_paused_turns_the_collector_off_and_back_on() -> None:
    gc.enable()
    with _gc.paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_an_exception_still_gives_the_collector_back() -> None:
    gc.enable()
    with pytest.raises(RuntimeError), _gc.paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_a_host_that_disabled_the_collector_keeps_it_disabled() -> None:
    gc.disable()
    with _gc.paused():
        pass
    assert not gc.isenabled()


def test_not_enabled_leaves_the_collector_alone() -> None:
    gc.enable()
    with _gc.paused(enabled=False):
        assert gc.isenabled()


def test_overlapping_pauses_resume_only_when_the_last_one_ends() -> None:
    """Two threads (a claim and a settle, or two syncs): the first to finish must not turn it back on."""
    gc.enable()
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with _gc.paused():
            inside.set()
            release.wait(5)

    t = threading.Thread(target=other)
    with _gc.paused():
        t.start()
        assert inside.wait(5)
    assert not gc.isenabled()  # the other thread's pause is still on
    release.set()
    t.join(5)
    assert gc.isenabled()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def _collections_during(fn: Callable[[], None]) -> list[int]:
    """The generations the collector visited while ``fn`` ran."""
    seen: list[int] = []

    def watch(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(watch)
    try:
        fn()
    finally:
        gc.callbacks.remove(watch)
    return seen


def test_collect_young_frees_cycles_made_during_a_pause_and_keeps_the_pause() -> None:
    gc.enable()
    with _gc.paused():
        ref = weakref.ref(_Cycle())
        assert ref() is not None  # a cycle: reference counting alone cannot free it
        assert _collections_during(_gc.collect_young) == [0]
        assert ref() is None
        assert not gc.isenabled()
    assert gc.isenabled()


def test_collect_young_does_nothing_outside_a_pause_or_for_a_host_that_disabled_the_collector() -> None:
    gc.enable()
    assert _collections_during(_gc.collect_young) == []
    gc.disable()
    with _gc.paused():
        assert _collections_during(_gc.collect_young) == []
