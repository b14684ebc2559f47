"""posync's reference head office, shipped for posync's own tests and for host apps' tests.

    from posync.testing import ReferenceHO, serve_in_thread

    ho = ReferenceHO("sqlite:///ho.db")          # profile="seed" for the seeds' HO; options as keywords
    with serve_in_thread(ho.app) as server:
        ...  # point posync at server.url; edit HO with ho.put(...); inject faults with ho.faults
    ho.close()

Or as a process: ``python -m posync.testing --db URL --port 0`` prints ``listening on http://127.0.0.1:PORT``;
drive it with :class:`RemoteHO`. Two HOs share :class:`ReferenceHO` (state, admin API, faults):
:class:`PosyncHO` speaks docs/protocol.md; :class:`SeedHO` (``profile="seed"``, ``--profile seed``) plays
the seeds' head office as docs/seed-profile.md describes it. ``ReferenceHO(...)`` builds the one the
profile names; typed code calls :func:`reference_ho` (the same keywords) or builds a subclass with
:class:`HOOptions` (and :class:`SeedOptions`). ``posync.testing.photos`` is the photo side.

:class:`SyncHarness` drives the outlet's side in a test: ``SyncHarness(sync).drain()``, ``pull_all()``,
``claim()``/``settle()``, ``run_cycle()``, ``set_clock()``, and typed access to the HO client and the
applier (``Posync``'s parts are private; ``harness``).

What is importable from here is the public surface; the modules behind it are the HO's parts. The posync
HO: ``posync_ho`` and ``posync_routes`` over ``changes`` (pure push rules) and ``exactly_once`` (applying
them). The seed HO: ``seed_ho``, ``seed_routes``, ``seed_rules`` (pure), ``seed_store``. Shared:
``head_office`` (the base), ``options``, ``profiles`` (the factory), ``admin_routes``, ``json_api``,
``auth``, ``faults`` (the knobs) and ``fault_middleware`` (obeying them); storage in ``store`` over
``schema``, ``transactions``, ``reads`` and ``driver_sql``; ``server`` (uvicorn runner), ``remote`` (admin
client). Needs the ``server`` extra (starlette, uvicorn) and PyJWT.
"""

from posync.testing.changes import Change, Rejection, Validator
from posync.testing.faults import Burst, Faults
from posync.testing.harness import SyncHarness
from posync.testing.head_office import ChangeEvent, Profile, ReferenceHO
from posync.testing.options import DEFAULT_API_KEY, DEFAULT_PASSWORD, DEFAULT_USERNAME, HOOptions, SeedOptions
from posync.testing.posync_ho import PosyncHO
from posync.testing.profiles import reference_ho
from posync.testing.remote import RemoteHO
from posync.testing.schema import HORecord
from posync.testing.seed_ho import SeedHO
from posync.testing.server import ServerHandle, serve_in_thread

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_PASSWORD",
    "DEFAULT_USERNAME",
    "Burst",
    "Change",
    "ChangeEvent",
    "Faults",
    "HOOptions",
    "HORecord",
    "PosyncHO",
    "Profile",
    "ReferenceHO",
    "Rejection",
    "RemoteHO",
    "SeedHO",
    "SeedOptions",
    "ServerHandle",
    "SyncHarness",
    "Validator",
    "reference_ho",
    "serve_in_thread",
]
