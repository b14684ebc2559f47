"""Run every benchmark, one after the other, each in its own process (so none warms up another).

    python bench/run_all.py [--quick] [--only capture,push]

Prints each script's figures as they come, then how long each took and whether it finished. The
benchmarks never assert on time: a non-zero exit here means a script broke, not that a figure was low.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["capture", "push", "pull", "seed", "host_latency", "commit_to_ho", "fleet", "claim", "keys", "webhooks",
         "photo_transfer", "photo_misc"]  # bench_webhooks.py is optional (written separately)


def _takes_quick(script: Path) -> bool:
    """Scripts written elsewhere (bench_webhooks.py) may not have the --quick option."""
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=HERE.parent)
    return "--quick" in out.stdout


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every script")
    p.add_argument("--only", default=None, help="comma-separated subset, e.g. capture,claim")
    args = p.parse_args()
    wanted = args.only.split(",") if args.only else ORDER
    outcomes: list[tuple[str, float, int]] = []
    for name in ORDER:
        script = HERE / f"bench_{name}.py"
        if name not in wanted or not script.exists():
            continue
        if args.quick and not _takes_quick(script):
            print(f"\n$ (skipped bench/{script.name}: it has no --quick option; run it alone)", flush=True)
            continue
        cmd = [sys.executable, str(script), *(["--quick"] if args.quick else [])]
        print(f"\n$ {' '.join(['python', f'bench/{script.name}', *cmd[2:]])}", flush=True)
        started = time.perf_counter()
        rc = subprocess.call(cmd, cwd=HERE.parent)
        outcomes.append((name, time.perf_counter() - started, rc))
    print("\n== summary")
    for name, took, rc in outcomes:
        print(f"   bench_{name:<10} {'ok' if rc == 0 else f'FAILED (exit {rc})':<16} {took:,.0f} s")
    return 0 if all(rc == 0 for _, _, rc in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
