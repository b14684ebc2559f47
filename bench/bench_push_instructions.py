"""The outlet's CPU work per pushed change, counted in instructions (deterministic, unlike time here).

    python bench/bench_push_instructions.py [--against GIT_REF]

``SyncHarness(sync).drain()`` of queued ``Order`` creates, with HO's answer stubbed at the wire (``Sender.send``
answers ``applied`` for every change) so that only the outlet's own work is counted: claim, lease,
settle, the GC, SQLite. Each drain runs under ``valgrind --tool=callgrind``; the figure is the difference
between a 6,000-change and a 1,000-change drain, divided by 5,000, so that start-up (imports, engine,
migrations) cancels out. Callgrind counts the same instructions on a busy machine as on an idle one,
which wall-clock time on this shared 2-core machine does not (the same drain varies 1.5x between runs).

Baseline (same run): the same count for ``--against`` (default ``HEAD~1``) in a temporary git worktree.
Each tree drains queues it built itself, with its own migrations: a change to the schema (an index)
is measured along with the code that goes with it.
Needs valgrind; takes a few minutes (Python under callgrind is ~50x slower).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = (1_000, 6_000)

# Both scripts run inside the tree being measured: its posync, its bench helpers and its migrations.
# The editable install maps posync._migrations to the checkout's migrations/ (pyproject.toml), which
# is not the worktree's: the prelude loads the tree's own first.
PRELUDE = """
import importlib.util, os, sys
tree = sys.argv[1]
sys.path.insert(0, os.path.join(tree, "bench"))
import posync
scripts = os.path.join(tree, "migrations")
spec = importlib.util.spec_from_file_location("posync._migrations", os.path.join(scripts, "__init__.py"),
                                              submodule_search_locations=[scripts])
module = sys.modules["posync._migrations"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
for loaded in (posync, module):  # the tree measured, not an installed copy
    assert loaded.__file__.startswith(tree), (loaded.__file__, tree)
"""

DRAIN = PRELUDE + """
import shutil
template, n, pause_gc = sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
from _common import make_outlet
db = template + f".{os.getpid()}.db"
shutil.copyfile(template, db)
outlet = make_outlet(f"sqlite:///{db}", "http://127.0.0.1:9", engine=posync.create_engine(f"sqlite:///{db}"),
                     outlet_id="outlet-1", push_batch_size=1000, pause_gc=pause_gc)
import posync.services.push as push  # results as each tree's push settles them
PushResult = getattr(push, "PushResult", None) or getattr(posync.ho, "PushResult", None)
if PushResult is not None:
    def applied(key): return PushResult(idempotency_key=key, status="applied", cloud_version=1)
else:
    def applied(key): return {"idempotency_key": key, "status": "applied", "cloud_version": 1}
def stub(leases): return [applied(le.change["idempotency_key"]) for le in leases]
try:  # the one call that reaches HO (Sender.send), stubbed through the harness (issue 16)
    from posync.testing import SyncHarness
except ImportError:  # a tree from before the harness (a baseline): the stub goes where that tree sends
    push = outlet.sync.push
    if hasattr(push, "_sender"):
        push._sender.send = stub
    else:
        push._send = stub
    drain = push.drain
else:
    harness = SyncHarness(outlet.sync)
    harness.stub_send(stub)
    drain = harness.drain
stats = drain()
assert stats.applied == n, stats
outlet.close()
os.unlink(db)
"""


PAUSE_GC = False  # --pause-gc: both trees drain with posync's GC pause on (the default before it became opt-in)


def instructions(tree: Path, template: Path, n: int) -> int:
    env = dict(os.environ, PYTHONPATH=str(tree))  # and cwd: "-c" puts the working directory first
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                          "-c", DRAIN, str(tree), str(template), str(n), "1" if PAUSE_GC else "0"],
                         env=env, cwd=tree, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the drain under callgrind failed in {tree}: {out.stderr[-2000:]}")
    match = re.search(r"Collected : (\d+)", out.stderr)
    if match is None:
        raise RuntimeError(f"no callgrind total in: {out.stderr[-1000:]}")
    return int(match.group(1))


# The queue as that tree's migrations and capture write it.
BUILD = PRELUDE + """
from pathlib import Path
from bench_push import build_template
build_template(Path(sys.argv[2]), int(sys.argv[3]))
"""


def per_change(tree: Path, tmp: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree))
    templates = {n: tmp / f"{tree.name}-queue-{n}.db" for n in SIZES}
    for n, path in templates.items():
        subprocess.run([sys.executable, "-c", BUILD, str(tree), str(path), str(n)], env=env, cwd=tree, check=True)
    # compiled first: else the first drain alone would pay for compiling the tree's modules
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "posync"), str(tree / "bench")], check=True)
    small, large = (instructions(tree, templates[n], n) for n in SIZES)
    return (large - small) / (SIZES[1] - SIZES[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="HEAD~1", help="git ref of the baseline (default HEAD~1)")
    parser.add_argument("--pause-gc", action="store_true", help="both trees with pause_gc=True")
    args = parser.parse_args()
    global PAUSE_GC
    PAUSE_GC = args.pause_gc
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    with tempfile.TemporaryDirectory(prefix="posync-instr-") as tmp_name:
        tmp = Path(tmp_name)
        base_tree = tmp / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base_tree), args.against],
                       check=True)
        try:
            base = per_change(base_tree, tmp)
            this = per_change(ROOT, tmp)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)], check=True)
    print("== push: outlet instructions per change (callgrind; 6,000 minus 1,000-change drain, HO stubbed; "
          f"pause_gc={PAUSE_GC})")
    print(f"   baseline {args.against}: {base:,.0f} instructions/change")
    print(f"   this tree:  {this:,.0f} instructions/change   ({base / this:.2f}x fewer)")


if __name__ == "__main__":
    main()
