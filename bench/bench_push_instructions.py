"""The outlet's CPU work per pushed change, counted in instructions (deterministic, unlike time here).

    python bench/bench_push_instructions.py [--against GIT_REF]

``sync.push.drain()`` of queued ``Order`` creates, with HO's answer stubbed at the wire (``_send``
answers ``applied`` for every change) so that only the outlet's own work is counted: claim, lease,
settle, the GC, SQLite. Each drain runs under ``valgrind --tool=callgrind``; the figure is the difference
between a 6,000-change and a 1,000-change drain, divided by 5,000, so that start-up (imports, engine,
migrations) cancels out. Callgrind counts the same instructions on a busy machine as on an idle one,
which wall-clock time on this shared 2-core machine does not (the same drain varies 1.5x between runs).

Baseline (same run): the same count for ``--against`` (default ``HEAD~1``) in a temporary git worktree.
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

# Runs inside the tree being measured (its posync and its bench helpers).
DRAIN = """
import os, shutil, sys
tree, template, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, os.path.join(tree, "bench"))
import posync
assert posync.__file__.startswith(tree), (posync.__file__, tree)  # the tree measured, not an installed copy
from _common import make_outlet
db = template + f".{os.getpid()}.db"
shutil.copyfile(template, db)
outlet = make_outlet(f"sqlite:///{db}", "http://127.0.0.1:9", engine=posync.create_engine(f"sqlite:///{db}"),
                     outlet_id="outlet-1", push_batch_size=1000)
outlet.sync.push._send = lambda leases: [
    {"idempotency_key": le.change["idempotency_key"], "status": "applied", "cloud_version": 1} for le in leases]
stats = outlet.sync.push.drain()
assert stats.applied == n, stats
outlet.close()
os.unlink(db)
"""


def instructions(tree: Path, template: Path, n: int) -> int:
    env = dict(os.environ, PYTHONPATH=str(tree))  # and cwd: "-c" puts the working directory first
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                          "-c", DRAIN, str(tree), str(template), str(n)],
                         env=env, cwd=tree, capture_output=True, text=True, check=True)
    match = re.search(r"Collected : (\d+)", out.stderr)
    if match is None:
        raise RuntimeError(f"no callgrind total in: {out.stderr[-1000:]}")
    return int(match.group(1))


def per_change(tree: Path, templates: dict[int, Path]) -> float:
    # compiled first: else the first drain alone would pay for compiling the tree's modules
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "posync"), str(tree / "bench")], check=True)
    small, large = (instructions(tree, templates[n], n) for n in SIZES)
    return (large - small) / (SIZES[1] - SIZES[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="HEAD~1", help="git ref of the baseline (default HEAD~1)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_push import build_template

    with tempfile.TemporaryDirectory(prefix="posync-instr-") as tmp_name:
        tmp = Path(tmp_name)
        templates = {n: tmp / f"queue-{n}.db" for n in SIZES}
        for n, path in templates.items():
            build_template(path, n)
        base_tree = tmp / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base_tree), args.against],
                       check=True)
        try:
            base = per_change(base_tree, templates)
            this = per_change(ROOT, templates)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)], check=True)
    print("== push: outlet instructions per change (callgrind; 6,000 minus 1,000-change drain, HO stubbed)")
    print(f"   baseline {args.against}: {base:,.0f} instructions/change")
    print(f"   this tree:  {this:,.0f} instructions/change   ({base / this:.2f}x fewer)")


if __name__ == "__main__":
    main()
