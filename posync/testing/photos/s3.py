"""An S3 endpoint over real HTTP for tests: moto's ThreadedMotoServer on a loopback port.

    with moto_s3() as endpoint:      # "127.0.0.1:PORT"
        S3Store(endpoint, "product-images", access_key="testing", secret_key=SecretStr("testing"))
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["moto_s3"]


@contextmanager
def moto_s3() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"{host}:{port}"
    finally:
        server.stop()
