"""Run the reference HO as a process::

    python -m posync.testing --db sqlite:///ho.db --port 0 --api-key K --outlet outlet-1
    python -m posync.testing --db sqlite:///ho.db --profile seed --max-limit 50 --report-deletes

prints one line ``listening on http://127.0.0.1:PORT`` (flushed) once it accepts connections, and exits
cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections.abc import Sequence

from posync.testing.faults import Faults
from posync.testing.head_office import ReferenceHO
from posync.testing.options import DEFAULT_API_KEY, DEFAULT_PASSWORD, DEFAULT_USERNAME
from posync.testing.profiles import reference_ho
from posync.testing.server import serve_forever


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m posync.testing", description="posync's reference head office")
    p.add_argument("--db", required=True, help="SQLAlchemy URL, e.g. sqlite:///ho.db or postgresql+psycopg://...")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (0: pick a free one; read it from stdout)")
    p.add_argument("--api-key", action="append", default=[], help=f"accepted API key (default {DEFAULT_API_KEY})")
    p.add_argument("--outlet", action="append", default=[], help="restrict the API keys to these outlet ids")
    p.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD",
                   help=f"JWT user (default {DEFAULT_USERNAME}:{DEFAULT_PASSWORD})")
    p.add_argument("--jwt-secret", default=None)
    p.add_argument("--access-ttl", type=float, default=300.0, help="access token lifetime, seconds")
    p.add_argument("--resource", action="append", default=None, help="serve only these resources")
    p.add_argument("--tombstone-horizon", type=float, default=None, help="purge tombstones older than this (s)")
    p.add_argument("--no-auth", action="store_true", help="accept unauthenticated requests")
    p.add_argument("--faults", default=None, help='initial faults as JSON, e.g. \'{"error_rate": 0.1}\'')
    p.add_argument("--profile", choices=["posync", "seed"], default="posync",
                   help="wire dialect: docs/protocol.md (posync) or docs/seed-profile.md (seed)")
    p.add_argument("--report-deletes", action="store_true", help="seed: list hard-deleted ids in deleted_ids")
    p.add_argument("--max-limit", type=int, default=None, help="seed: cap a page's size")
    p.add_argument("--ignore-limit", action="store_true", help="seed: answer every row in one page")
    p.add_argument("--store", action="append", default=None, help="seed: a store id HO knows (others: 404)")
    p.add_argument("--company", action="append", default=None, help="seed: a company id HO knows (others: 404)")
    p.add_argument("--no-pause-gc", action="store_true",
                   help="leave the GC running while a push is applied (this process is HO's own, so it pauses)")
    return p.parse_args(argv)


def build(args: argparse.Namespace) -> ReferenceHO:
    keys = args.api_key or [DEFAULT_API_KEY]
    users = dict(u.split(":", 1) for u in args.user) if args.user else None
    faults = Faults()
    if args.faults:
        faults.update(**json.loads(args.faults))
    return reference_ho(
        args.db,
        api_keys={k: (args.outlet or None) for k in keys},
        users=users,
        jwt_secret=args.jwt_secret,
        access_ttl=args.access_ttl,
        require_auth=not args.no_auth,
        resources=args.resource,
        tombstone_horizon=args.tombstone_horizon,
        faults=faults,
        profile=args.profile,
        report_deletes=args.report_deletes,
        max_limit=args.max_limit,
        ignore_limit=args.ignore_limit,
        stores=args.store,
        companies=args.company,
        pause_gc=not args.no_pause_gc,
    )


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    # uvicorn turns SIGTERM into a graceful shutdown, then re-raises it with the previous handler:
    # this one, so the process ends with status 0 (and a SIGTERM before uvicorn starts still exits).
    signal.signal(signal.SIGTERM, _exit_cleanly)
    with build(args) as ho:
        asyncio.run(serve_forever(ho.app, args.host, args.port))


if __name__ == "__main__":
    main()
