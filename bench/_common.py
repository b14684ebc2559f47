"""Shared helpers for posync's benchmarks: timing, reporting, outlets and a head office in a subprocess.

Benchmarks are scripts that print figures; they never assert on time and are not part of the test suite.
The machines they run on are small and noisy, so every figure is the median of several rounds (with min
and max), and every script also measures a baseline in the same run and prints the ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from posync.demo.outlet import Outlet, prepare_database
from posync.demo.outlet import make_outlet as _make_outlet

__all__ = [
    "API_KEY",
    "HOProcess",
    "Outlet",
    "Timing",
    "bench_args",
    "fmt_rate",
    "fmt_ratio",
    "head_office",
    "make_outlet",
    "measure",
    "prepare_database",
    "print_header",
    "timed",
    "workdir",
]

API_KEY = "bench-api-key-0123456789"


# -- arguments and reporting ------------------------------------------------------------------------


def bench_args(description: str, *, rounds: int, quick_rounds: int | None = None,
               extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """``--quick`` (small sizes, a smoke run) and ``--rounds N``; scripts add their own options."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run, figures not meaningful")
    p.add_argument("--rounds", type=int, default=None, help=f"timed rounds per figure (default {rounds})")
    if extra is not None:
        extra(p)
    args = p.parse_args()
    if args.rounds is None:
        args.rounds = (quick_rounds or 2) if args.quick else rounds
    return args


def print_header(title: str, args: argparse.Namespace, **sizes: Any) -> None:
    shown = ", ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in sizes.items())
    mode = "QUICK (smoke run, sizes reduced)" if args.quick else "full sizes"
    print(f"== {title}")
    print(f"   {mode}; {shown}; rounds={args.rounds}; python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cpu(s)")


@dataclass(frozen=True)
class Timing:
    """Seconds per round: the median is the figure, min/max show the noise."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    def rate(self, units: int) -> float:
        """Units per second at the median."""
        return units / self.median

    def line(self, label: str, units: int | None = None, unit: str = "ops") -> str:
        text = (f"   {label:<50} median {_ms(self.median):>10}   (min {_ms(self.min)}, max {_ms(self.max)}, "
                f"n={len(self.samples)})")
        if units is not None:
            text += f"   {fmt_rate(self.rate(units), unit)}"
        return text


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms" if seconds < 10 else f"{seconds:,.2f} s"


def fmt_rate(rate: float, unit: str) -> str:
    return f"{rate:,.0f} {unit}/s"


def fmt_ratio(value: float, target: str) -> str:
    return f"{value:,.2f}x (target {target})"


def measure(run: Callable[[], Any], rounds: int, *, setup: Callable[[], Any] | None = None,
            teardown: Callable[[], Any] | None = None) -> Timing:
    """Time ``run()`` ``rounds`` times; ``setup``/``teardown`` run around each round, untimed."""
    samples = []
    for _ in range(rounds):
        if setup is not None:
            setup()
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
        if teardown is not None:
            teardown()
    return Timing(tuple(samples))


@contextmanager
def timed(into: list[float]) -> Iterator[None]:
    """Append the elapsed seconds of the ``with`` block to ``into``."""
    started = time.perf_counter()
    try:
        yield
    finally:
        into.append(time.perf_counter() - started)


@contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"posync-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- outlets ------------------------------------------------------------------------------------------


def make_outlet(url: str, ho_url: str = "http://127.0.0.1:9", *, engine: Engine | None = None,
                outlet_id: str = "outlet-1", **settings: Any) -> Outlet:
    """An outlet wired as a host app wires it (posync.demo.outlet), with the benches' key and timeout."""
    settings.setdefault("api_key", API_KEY)
    settings.setdefault("request_timeout", 30.0)
    return _make_outlet(url, ho_url, engine=engine, outlet_id=outlet_id, **settings)


# -- head office in its own process -------------------------------------------------------------------


@dataclass
class HOProcess:
    url: str
    process: subprocess.Popen[str]


@contextmanager
def head_office(db_path: Path, *, startup_timeout: float = 30.0, extra: tuple[str, ...] = ()) -> Iterator[HOProcess]:
    """``python -m posync.testing`` on loopback in a separate process (its own GIL); stopped on exit.
    ``extra``: more options, e.g. ``("--profile", "seed")``."""
    cmd = [sys.executable, "-m", "posync.testing", "--db", f"sqlite:///{db_path}", "--host", "127.0.0.1",
           "--port", "0", *(extra or ("--api-key", API_KEY))]
    log_path = db_path.with_suffix(".log")
    log_file = log_path.open("w")  # a file, not a pipe: a chatty server must never block on a full pipe
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file, text=True)
    try:
        deadline = time.monotonic() + startup_timeout
        assert proc.stdout is not None
        line = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("listening on ") or proc.poll() is not None:
                break
        if not line.startswith("listening on "):
            log_file.flush()
            raise RuntimeError(f"reference HO did not start: {line!r} {log_path.read_text()[-2000:]}")
        yield HOProcess(line.split("listening on ", 1)[1].strip(), proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
        log_file.close()
