"""Photo replication throughput: N photos of 50 KB from an HTTP origin (nginx, Debian's package) into the
filesystem store on tmpfs, MD5 and size verified, temp file + rename; beside the same run's baselines:

* ``rclone copy`` of the same files from the same origin (Debian's ``rclone``, its HTTP remote);
* seed 000's client: sequential, a 100 ms pause per photo (timed on a sample, scaled to N);
* seed 001's client: sequential, one new connection per photo (``http.client``), verified, written.

posync's pass (v1 manifest from the reference HO in its own process, bytes from nginx) is timed in-process,
with both byte engines; ``--cli`` also times ``python -m posync.cli.photos sync`` as a whole process, the
way rclone's figure is, beside ``python -c "import posync"`` (what any posync process pays before its first
line of photo code). Rounds are interleaved; the ratios are printed per round and for the medians.
Needs ``apt-get install -y nginx rclone``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from _common import Timing, bench_args, fmt_ratio, print_header

import posync
from posync.migrations import upgrade
from posync.photos import PhotoSettings, build_photo_sync
from posync.testing.photos import PhotoHO

TMPFS = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def photo_ho_process(root: Path, origin: str) -> Iterator[str]:
    """The manifest API in its own process (bench_photo_ho.py): HO's work does not share our GIL."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("bench_photo_ho.py")), str(root), origin],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"photo HO did not start: {line!r}")
        yield line.split("listening on ", 1)[1].strip()
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


@contextmanager
def nginx(root: Path) -> Iterator[str]:
    """nginx serving ``root`` on a loopback port (1 worker, keep-alive, sendfile); stopped on exit."""
    if shutil.which("nginx") is None:
        sys.exit("needs nginx: apt-get install -y nginx")
    port = free_port()
    conf_dir = Path(tempfile.mkdtemp(prefix="posync-bench-nginx-"))
    conf = conf_dir / "nginx.conf"
    conf.write_text(f"""
daemon off; worker_processes 1; pid {conf_dir}/nginx.pid; error_log {conf_dir}/error.log warn; user root;
events {{ worker_connections 1024; }}
http {{
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000; keepalive_timeout 60;
  client_body_temp_path {conf_dir}/b; proxy_temp_path {conf_dir}/p; fastcgi_temp_path {conf_dir}/f;
  uwsgi_temp_path {conf_dir}/u; scgi_temp_path {conf_dir}/s; default_type application/octet-stream;
  server {{ listen 127.0.0.1:{port}; root {root}; autoindex on; }}
}}
""")
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(conf_dir)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(conf_dir, ignore_errors=True)


def make_photos(ho: PhotoHO, root: Path, n: int, size: int) -> list[tuple[str, str, int]]:
    """N photos at HO (and as files under nginx's root, in 10 folders: rclone lists each); (key, md5, size)."""
    out = []
    for i in range(n):
        data = os.urandom(size)
        pid = ho.put_photo(f"prod-{i % 10}", data, object_key=f"products/prod-{i % 10}/{i:05d}.jpg")
        key = ho.photos[pid].object_key
        target = root / "product-images" / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        out.append((key, ho.photos[pid].checksum, size))
    return out


def posync_pass(ho_url: str, engine_name: str, dest: Path, workers: int) -> float:
    db = posync.create_engine(f"sqlite:///{dest / 'outlet.db'}")
    upgrade(db)
    s = PhotoSettings(ho_url=ho_url, username="posync", password="posync-password", photo_engine=engine_name,
                      photo_store=f"fs:{dest / 'photos'}", photo_page_size=1000, photo_workers=workers)
    with build_photo_sync(s, engine=db) as sync:
        started = time.perf_counter()
        report = sync.sync()
        took = time.perf_counter() - started
    db.dispose()
    assert report.ok and report.failed == 0, report.as_dict()
    return took


def posync_cli(ho_url: str, dest: Path, workers: int) -> float:
    env = {**os.environ, "POSYNC_HO_URL": ho_url, "POSYNC_USERNAME": "posync", "POSYNC_PASSWORD": "posync-password",
           "POSYNC_DB_URL": f"sqlite:///{dest / 'outlet.db'}", "POSYNC_PHOTO_STORE": f"fs:{dest / 'photos'}",
           "POSYNC_PHOTO_PAGE_SIZE": "1000", "POSYNC_PHOTO_WORKERS": str(workers)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "posync.cli.photos", "sync", "--no-progress"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def import_floor() -> float:
    """``python -c "import posync"`` as a whole process: the part of the CLI's figure photo code cannot touch."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import posync"], check=True)
    return time.perf_counter() - started


def rclone_copy(origin: str, dest: Path, transfers: int) -> float:
    started = time.perf_counter()
    subprocess.run(["rclone", "copy", "--http-url", f"{origin}/product-images/", ":http:", str(dest),
                    "--transfers", str(transfers), "--checkers", str(transfers), "--config", "/dev/null",
                    "--no-check-dest"], check=True, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def _write_verified(dest: Path, key: str, data: bytes, md5: str, size: int) -> None:
    if len(data) != size or hashlib.md5(data, usedforsecurity=False).hexdigest() != md5:
        raise RuntimeError(f"{key}: bad bytes")
    target = dest / key
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def seed001(origin: str, photos: list[tuple[str, str, int]], dest: Path) -> float:
    """Seed 001's loop as written: ``requests.get(image_url, timeout=30)`` per photo (a new connection each,
    no session), sequential, size and MD5 checked, then written."""
    import requests

    started = time.perf_counter()
    for key, md5, size in photos:
        response = requests.get(f"{origin}/product-images/{key}", timeout=30)
        response.raise_for_status()
        _write_verified(dest, key, response.content, md5, size)
    return time.perf_counter() - started


def seed001_http_client(origin: str, photos: list[tuple[str, str, int]], dest: Path) -> float:
    """The same loop on bare ``http.client`` (cheaper than requests): a stricter baseline."""
    host = urlsplit(origin)
    started = time.perf_counter()
    for key, md5, size in photos:
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
        conn.request("GET", f"/product-images/{key}")
        data = conn.getresponse().read()
        conn.close()
        _write_verified(dest, key, data, md5, size)
    return time.perf_counter() - started


def seed000(origin: str, photos: list[tuple[str, str, int]], dest: Path) -> float:
    """Seed 000's loop: sequential ``requests.get`` per photo, ``time.sleep(0.1)`` after each (its rate limit)."""
    import requests

    started = time.perf_counter()
    for key, md5, size in photos:
        response = requests.get(f"{origin}/product-images/{key}", timeout=30)
        _write_verified(dest, key, response.content, md5, size)
        time.sleep(0.1)
    return time.perf_counter() - started


def main() -> None:
    args = bench_args(__doc__.splitlines()[0], rounds=3, extra=lambda p: (
        p.add_argument("--photos", type=int, default=None), p.add_argument("--size", type=int, default=50_000),
        p.add_argument("--workers", type=int, default=8), p.add_argument("--cli", action="store_true")))
    n = args.photos or (200 if args.quick else 2000)
    sample = min(n, 50)
    print_header("photo transfer: HTTP origin (nginx) -> filesystem store (tmpfs)", args, photos=n, size=args.size,
                 workers=args.workers)
    origin_root = Path(tempfile.mkdtemp(prefix="posync-bench-origin-", dir=TMPFS))
    os.chmod(origin_root, 0o755)
    ho = PhotoHO()
    try:
        photos = make_photos(ho, origin_root, n, args.size)
        with nginx(origin_root) as origin, photo_ho_process(origin_root, origin) as api_url:
            results: dict[str, list[float]] = {k: [] for k in ("rclone", "curl", "urllib3", "cli", "import",
                                                                  "seed001", "seed001b")}
            for _ in range(args.rounds):
                for name in results:
                    if name in ("cli", "import") and not args.cli:
                        continue
                    if name == "import":
                        results[name].append(import_floor())
                        continue
                    dest = Path(tempfile.mkdtemp(prefix=f"posync-bench-{name}-", dir=TMPFS))
                    try:
                        if name == "rclone":
                            results[name].append(rclone_copy(origin, dest, args.workers))
                            assert sum(1 for _ in dest.rglob("*.jpg")) == n
                        elif name == "seed001":
                            results[name].append(seed001(origin, photos, dest))
                        elif name == "seed001b":
                            results[name].append(seed001_http_client(origin, photos, dest))
                        elif name == "cli":
                            results[name].append(posync_cli(api_url, dest, args.workers))
                        else:
                            results[name].append(posync_pass(api_url, name, dest, args.workers))
                    finally:
                        shutil.rmtree(dest, ignore_errors=True)
            dest = Path(tempfile.mkdtemp(prefix="posync-bench-seed000-", dir=TMPFS))
            try:
                s000 = seed000(origin, photos[:sample], dest) * n / sample
            finally:
                shutil.rmtree(dest, ignore_errors=True)
    finally:
        shutil.rmtree(origin_root, ignore_errors=True)
    mb = n * args.size / 1e6
    timings = {k: Timing(tuple(v)) for k, v in results.items() if v}
    for name, t in timings.items():
        label = {"rclone": "rclone copy (whole process)", "curl": "posync pass, curl engine (in-process)",
                 "urllib3": "posync pass, urllib3 engine (in-process)", "cli": "posync photos sync (whole process)",
                 "import": "python -c 'import posync' (whole process)",
                 "seed001": "seed 001 client (requests, connection per photo)",
                 "seed001b": "seed 001 loop on bare http.client"}[name]
        if name == "import":  # no photos in it: a time, not a rate
            print(t.line(label))
            continue
        print(t.line(label, n, "photos") + f"   {mb / t.median:,.1f} MB/s")
    print(f"   {'seed 000 client (100 ms pause), scaled from ' + str(sample):<50} {s000:,.2f} s   "
          f"{n / s000:,.0f} photos/s")
    best = timings["curl"].median
    rc = timings["rclone"].median
    print(f"   posync curl vs rclone:   {fmt_ratio(rc / best, '>= 1.0x, floor 0.8x')}")
    print(f"   posync urllib3 vs rclone: {rc / timings['urllib3'].median:,.2f}x")
    if "cli" in timings:
        print(f"   posync CLI (whole process) vs rclone: {rc / timings['cli'].median:,.2f}x")
    print(f"   posync curl vs seed 000: {fmt_ratio(s000 / best, '>= 30x')}")
    print(f"   posync curl vs seed 001: {fmt_ratio(timings['seed001'].median / best, '>= 4x')}")
    print(f"   posync curl vs seed 001 on bare http.client: {timings['seed001b'].median / best:,.2f}x")
    rounds = range(len(results["rclone"]))

    def per_round(num: str, den: str) -> str:
        return " ".join(f"{results[num][i] / results[den][i]:.2f}x" for i in rounds)

    print(f"   per round, posync curl vs rclone: {per_round('rclone', 'curl')}")
    print(f"   per round, posync curl vs seed 001: {per_round('seed001', 'curl')}")
    if "cli" in timings:
        print(f"   per round, posync CLI vs rclone: {per_round('rclone', 'cli')}")
        rest = timings["cli"].median - timings["import"].median
        print(f"   posync CLI less the import floor (medians): {rest:,.2f} s")


if __name__ == "__main__":
    main()
