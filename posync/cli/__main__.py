"""``python -m posync.cli``: the ``posync`` command."""

import os

from posync.cli import main

if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
