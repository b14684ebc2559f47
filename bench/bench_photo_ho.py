"""The reference HO's photo side in its own process, for the photo benchmarks (its own GIL, as a real HO).

    python bench/bench_photo_ho.py ROOT ORIGIN_URL    # prints "listing on URL"; serves until stdin closes

Every file under ``ROOT/product-images/`` becomes a photo whose ``image_url`` is on ``ORIGIN_URL`` (nginx).
Not a benchmark itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

from posync.testing import serve_in_thread
from posync.testing.photos import PhotoHO


def main() -> None:
    root, origin = Path(sys.argv[1]) / "product-images", sys.argv[2]
    ho = PhotoHO(base_url=origin)
    for path in sorted(root.rglob("*.jpg")):
        key = path.relative_to(root).as_posix()
        ho.put_photo(key.split("/")[1], path.read_bytes(), object_key=key)
    with serve_in_thread(ho.app) as server:
        sys.stdout.write(f"listening on {server.url}\n")
        sys.stdout.flush()
        sys.stdin.read()


if __name__ == "__main__":
    main()
