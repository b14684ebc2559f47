"""Real processes in tests: end every one started, by its pid, within a bound."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterable


def stop(procs: Iterable[subprocess.Popen[str]], timeout: float = 30.0) -> None:
    """SIGTERM to each live process, then wait for each (SIGKILL past ``timeout``) and close its pipes."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        for pipe in (p.stdout, p.stderr):
            if pipe is not None:
                pipe.close()


def finish(procs: Iterable[subprocess.Popen[str]], timeout: float = 120.0) -> list[subprocess.CompletedProcess[str]]:
    """Wait for each process to end by itself (SIGKILL past ``timeout``) and collect what it printed."""
    done = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done
