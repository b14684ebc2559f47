"""A host's ``--app`` function for the CLI tests (``posync status --app tests.cli_host:build``): the demo's
tables on the database in ``CLI_TEST_DB``, HO at ``CLI_TEST_HO``, the API key in ``CLI_TEST_KEY``."""

from __future__ import annotations

import os

from sqlalchemy.engine import Engine

from posync.app import Posync
from posync.db import create_engine
from tests.support import make_outlet

ENGINES: list[Engine] = []  # disposed by the tests that ran the CLI in their own process


def build() -> Posync:
    engine = create_engine(os.environ["CLI_TEST_DB"])
    ENGINES.append(engine)
    return make_outlet("", os.environ["CLI_TEST_HO"], engine=engine, api_key=os.environ["CLI_TEST_KEY"],
                       request_timeout=3.0).sync
