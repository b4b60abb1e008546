"""How soon one host sees another host's changes: two mounts of one bucket per tool
(s3fuse, s3fs, rclone mount when installed) on one moto server, through the kernel.

For each trial host a changes a file and closes it; host b then polls (every 10 ms) until
its stat shows the change: a new file, a new size, a deleted file. And right after host
a closed a new version, host b opens and reads the file once: does that first read return
the new bytes (close-to-open)? Prints medians and maxima; a change not seen within the
timeout ends that column for that tool. Figures for reading, never for pass/fail.

    python benchmarks/visibility.py [--trials 10] [--timeout 15] [--only s3fuse,s3fs]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backends import MotoBackend
from bench import Rclone, S3fs, S3fuse, Target

POLL = 0.01


def seen_after(check: Callable[[Path], bool], p: Path, timeout: float) -> float | None:
    """Seconds until check(p) holds, None after timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check(p):
            return time.monotonic() - t0
        time.sleep(POLL)
    return None


def exists(p: Path) -> bool:
    try:
        p.stat()
    except FileNotFoundError:
        return False
    return True


def resized(p: Path) -> bool:
    try:
        return p.stat().st_size == 250
    except FileNotFoundError:
        return False


def gone(p: Path) -> bool:
    return not exists(p)


def measure(a: Path, b: Path, trials: int, timeout: float) -> dict[str, list[float | None]]:
    out: dict[str, list[float | None]] = {"create": [], "resize": [], "delete": [], "open": []}
    for i in range(trials):
        name = f"v{i}"
        there = b / name
        exists(there)  # b has asked: its "no such file" is cached now, as in real use
        (a / name).write_bytes(b"1" * 100)
        if not out["create"] or out["create"][-1] is not None:
            out["create"].append(seen_after(exists, there, timeout))
        (a / name).write_bytes(b"2" * 250)
        if not out["resize"] or out["resize"][-1] is not None:
            out["resize"].append(seen_after(resized, there, timeout))
        (a / name).write_bytes(b"3" * 250)  # the same size: only the bytes tell
        try:
            fresh = (b / name).read_bytes() == b"3" * 250
        except OSError:
            fresh = False
        out["open"].append(1.0 if fresh else 0.0)
        (a / name).unlink()
        if not out["delete"] or out["delete"][-1] is not None:
            out["delete"].append(seen_after(gone, there, timeout))
    return out


def summary(xs: list[float | None], timeout: float) -> str:
    if not xs:
        return "-"
    if any(x is None for x in xs):
        return f"> {timeout:.0f} s"
    got = [x for x in xs if x is not None]
    return f"{statistics.median(got):.2f} / {max(got):.2f} s"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=15.0)
    ap.add_argument("--only", default="", help="s3fuse,s3fs,rclone")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="s3fuse-visibility-"))
    server = MotoBackend(work)
    os.environ.update(AWS_ACCESS_KEY_ID=server.key_id, AWS_SECRET_ACCESS_KEY=server.secret,
                      AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
    server.warm_up()
    rows = []
    try:
        for cls in (S3fuse, S3fs, Rclone):
            hosts: list[Target] = [cls(server, work), cls(server, work)]
            name = hosts[0].name
            if args.only and name not in args.only.split(","):
                continue
            why = hosts[0].available()
            if why:
                print(f"skipping {name}: {why}", file=sys.stderr)
                continue
            bucket = server.bucket()
            try:
                a, b = (h.mount(bucket) for h in hosts)
                print(f"[visibility] {name} ...", file=sys.stderr, flush=True)
                r = measure(a, b, args.trials, args.timeout)
            finally:
                for h in hosts:
                    h.unmount()
            fresh = sum(1 for x in r["open"] if x)
            rows.append(
                f"| {name} | {summary(r['create'], args.timeout)} | "
                f"{summary(r['resize'], args.timeout)} | {summary(r['delete'], args.timeout)} | "
                f"{fresh}/{len(r['open'])} |"
            )
    finally:
        server.stop()
    print("| tool (two mounts, one moto bucket) | new file seen by stat | new size seen | "
          "deletion seen | first open after close reads the new bytes |")  # fmt: skip
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nmedian / max of {args.trials} trials; polled every {POLL * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
