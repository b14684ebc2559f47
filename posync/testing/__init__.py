"""posync's reference head office, shipped for posync's own tests and for host apps' tests.

    from posync.testing import ReferenceHO, serve_in_thread

    ho = ReferenceHO("sqlite:///ho.db")
    with serve_in_thread(ho.app) as server:
        ...  # point posync at server.url; edit HO with ho.put(...); inject faults with ho.faults
    ho.close()

Or as a process: ``python -m posync.testing --db URL --port 0`` prints ``listening on http://127.0.0.1:PORT``;
drive it with :class:`RemoteHO`. The wire contract is docs/protocol.md; ``ReferenceHO(..., profile="seed")``
(``--profile seed``) plays the seeds' head office instead, as docs/seed-profile.md describes it.

Modules: ``changes`` (pure push rules), ``store`` (tables and transactions), ``app``/``admin`` (HTTP),
``seed_rules``/``seed_store``/``seed`` (the seed profile: pure rules, storage, HTTP), ``auth``, ``faults``,
``server`` (uvicorn runner), ``ho`` (wiring), ``remote`` (admin client).
Needs the ``server`` extra (starlette, uvicorn) and PyJWT.
"""

from posync.testing.changes import Change, Rejection, Validator
from posync.testing.faults import Burst, Faults
from posync.testing.ho import DEFAULT_API_KEY, DEFAULT_PASSWORD, DEFAULT_USERNAME, ChangeEvent, Profile, ReferenceHO
from posync.testing.remote import RemoteHO
from posync.testing.server import ServerHandle, serve_in_thread
from posync.testing.store import HORecord

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_PASSWORD",
    "DEFAULT_USERNAME",
    "Burst",
    "Change",
    "ChangeEvent",
    "Faults",
    "HORecord",
    "Profile",
    "ReferenceHO",
    "Rejection",
    "RemoteHO",
    "ServerHandle",
    "Validator",
    "serve_in_thread",
]
