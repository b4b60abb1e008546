"""The chaos soak (issue 12): a seeded fault-injecting proxy in front of a real S3 server,
worker processes writing, appending, patching, renaming, deleting and reading files,
SIGKILLs of the daemon with remounts on the same spool, then a check of the bucket made
directly (not through the proxy).

    scripts/soak [--backend moto|rgw|both] [--seconds 1800] [--seed N] [--workers 3]

It prints one line of figures per backend and exits 1 on any loss: an acknowledged
close not stored, an object holding bytes nobody closed, a failed close whose bytes
are neither stored nor in the spool / recovered/, a read that returned other bytes, an
unfinished multipart upload left behind. tests/test_soak.py runs a short form.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import Backend, Mount
from tests.servers import MotoServer, Recorded, RecordingProxy, RgwServer

WORKER = Path(__file__).with_name("soak_worker.py")
MiB = 1 << 20
READ_TIMEOUT = 2  # s3fuse's; a stall is longer
RGW_MEMSTORE = 8 << 30
MOUNT_ARGS = (
    "-o", f"multipart_threshold={6 * MiB},part_size={5 * MiB},read_timeout={READ_TIMEOUT}",
    "-o", "retry_window=4",
)  # fmt: skip


class Chaos:
    """The proxy's fault policy: each request meets a fault with probability rate, its
    kind drawn from the seeded generator; during a storm every body sent is corrupted."""

    KINDS = ("503", "500", "reset", "lost-answer", "stall", "flip-body", "flip-get")

    def __init__(self, seed: int, rate: float, late: bool = False) -> None:
        self.kinds = self.KINDS + (("late",) if late else ())
        self.rng = random.Random(seed)
        self.rate = rate
        self.on = True
        self.storm = False
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, r: Recorded) -> Any:
        with self._lock:
            if not self.on:
                return None
            if self.storm and r.body_len:
                self.counts["storm-flip"] += 1
                return "flip"
            if self.rng.random() >= self.rate:
                return None
            kind = self.rng.choice(self.kinds)
            object_get = r.method == "GET" and "?" not in r.path
            if (kind == "flip-body" and not r.body_len) or (kind == "flip-get" and not object_get):
                return None
            self.counts[kind] += 1
        return {
            "503": (503, "SlowDown"),
            "500": (500, "InternalError"),
            "reset": "drop",
            "lost-answer": "drop-response",
            "stall": ("stall", READ_TIMEOUT + 1),
            "late": ("late", READ_TIMEOUT + 1),
            "flip-body": "flip",
            "flip-get": "flip-response",
        }[kind]


@dataclass
class Result:
    backend: str
    seed: int
    ops: int = 0
    kills: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)  # lost, corrupt, pending_lost, ...

    def line(self) -> str:
        faults = ",".join(f"{k}={v}" for k, v in sorted(self.faults.items())) or "none"
        return (
            f"soak {self.backend} seed={self.seed}: ops={self.ops}"
            f" faults={sum(self.faults.values())} ({faults}) kills={self.kills}"
            f" closes_ok={self.counts['close_ok']}"
            f" closes_failed={self.counts['close_failed']}"
            f" interrupted={self.counts['write_failed']} lost={self.kinds['lost']}"
            f" corrupt={self.kinds['corrupt']} pending_lost={self.kinds['pending_lost']}"
            f" bad_reads={self.kinds['bad_read']} open_uploads={self.kinds['open_upload']}"
        )

    @property
    def ok(self) -> bool:
        return not self.problems


def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def run(
    b: Backend, root: Path, *, seconds: float, seed: int, workers: int = 3,
    kill_every: tuple[float, float] = (40, 60), rate: float = 0.05, max_size: int = 24 * MiB,
    late: bool = False, mount_args: tuple[str, ...] = (),
) -> Result:  # fmt: skip
    res = Result(b.name, seed)
    rng = random.Random(seed)
    bucket = b.bucket()
    chaos = Chaos(seed, rate, late)
    proxy = RecordingProxy(b.url, fault=chaos, keep_records=False)
    m = Mount(bucket, proxy.url, root, *MOUNT_ARGS, *mount_args, env=b.env)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        chaos.on = False  # the set-up is not under test
        m.start()
        for w in range(workers):
            (m / f"w{w}").mkdir()
        chaos.on = True
        start = time.monotonic()
        for w in range(workers):
            procs.append(subprocess.Popen(
                [sys.executable, str(WORKER), str(m / f"w{w}"), str(seed * 100 + w),
                 str(seconds), str(max_size), str(root / f"model{w}.json")],
                stdin=subprocess.DEVNULL,
            ))  # fmt: skip
        storm = (start + seconds * 0.4, start + seconds * 0.4 + min(15.0, seconds * 0.1))
        next_kill = start + rng.uniform(*kill_every)
        while time.monotonic() < start + seconds:
            now = time.monotonic()
            chaos.storm = storm[0] <= now < storm[1]
            if now >= next_kill:
                m.kill()
                res.kills += 1
                time.sleep(rng.uniform(0.2, 2.0))
                m.start(timeout=120)  # recovery runs first, through the chaos
                next_kill = time.monotonic() + rng.uniform(*kill_every)
            time.sleep(0.1)
        chaos.storm = False
        for p in procs:
            p.wait(timeout=300)
        # the link heals: a clean unmount, and one more mount to recover what is left
        chaos.on = False
        m.unmount()
        m.start()
        m.unmount()
        check(b, bucket, root, m.spool, workers, res)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        m.stop()
        proxy.close()
    res.faults = chaos.counts
    return res


def check(b: Backend, bucket: str, root: Path, spool: Path, workers: int, res: Result) -> None:
    s3 = b.client()
    stored: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            data = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            stored[o["Key"]] = hashlib.md5(data).hexdigest()
    kept = {md5_file(p) for p in spool.rglob("*") if p.is_file() and (
        p.suffix == ".data" or "recovered" in p.parts)}  # fmt: skip
    expected_keys = {f"w{w}/" for w in range(workers)}

    def problem(kind: str, text: str) -> None:
        res.kinds[kind] += 1
        res.problems.append(f"{kind}: {text}")

    for w in range(workers):
        model = json.loads((root / f"model{w}.json").read_text())
        res.counts.update(model["counts"])
        for text in model["bad_reads"]:
            problem("bad_read", f"w{w}/{text}")
        for name, allowed in model["allowed"].items():
            key = f"w{w}/{name}"
            expected_keys.add(key)
            have = stored.get(key)
            if have not in allowed:
                kind = "lost" if have is None else "corrupt"
                problem(kind, f"{key} holds {have}, allowed {allowed}")
            pending = model["pending"][name]
            if pending is not None and pending != have and pending not in kept:
                problem("pending_lost", f"{key}: the bytes of a failed close ({pending}) "
                        "are neither stored nor in the spool")  # fmt: skip
    for key in stored.keys() - expected_keys:
        problem("corrupt", f"{key}: an object nobody wrote")
    for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        problem("open_upload", f"{u['Key']}: upload {u['UploadId']} left open")
    res.ops = sum(res.counts[k] for k in ("write", "read", "delete", "rename"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backend", choices=("moto", "rgw", "both"), default="both")
    ap.add_argument("--seconds", type=float, default=1800)
    ap.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--rate", type=float, default=0.05, help="share of requests with a fault")
    ap.add_argument(
        "--late-delivery",
        action="store_true",
        help="also hold some requests until the client gave up, then deliver them\n"
        "(a duplicate that lands after its retry; see README: not defended)",
    )
    ap.add_argument("-o", dest="options", default="", help="more mount options (conflict=detect)")
    ap.add_argument(
        "--kill-every",
        type=float,
        nargs=2,
        default=(40, 60),
        metavar=("MIN", "MAX"),
        help="seconds between SIGKILLs of the daemon",
    )
    ap.add_argument("--max-size", type=int, default=24 * MiB, help="largest file, bytes")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    ok = True
    for name in ("moto", "rgw") if args.backend == "both" else (args.backend,):
        root = Path(tempfile.mkdtemp(prefix=f"s3fuse-soak-{name}-"))
        with backend(name, root) as b:
            res = run(b, root, seconds=args.seconds, seed=seed, workers=args.workers,
                      rate=args.rate, late=args.late_delivery, max_size=args.max_size,
                      kill_every=tuple(args.kill_every),
                      mount_args=("-o", args.options) if args.options else ())  # fmt: skip
        print(res.line(), flush=True)
        for p in res.problems[:50]:
            print("  " + p)
        ok = ok and res.ok
        if res.ok:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"  logs and spool kept in {root}")
    return 0 if ok else 1


class backend:
    """A server of the named kind, started here and stopped on exit."""

    def __init__(self, name: str, root: Path) -> None:
        self.name, self.root = name, root
        self.server: Any = None

    def __enter__(self) -> Backend:
        proxy = RecordingProxy("http://127.0.0.1:1")  # the soak makes its own; unused
        proxy.close()
        if self.name == "moto":
            self.server = MotoServer(log_path=str(self.root / "moto.log")).start()
            env = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
            return Backend("moto", self.server.url, proxy, env)
        # a long soak writes many GB: RGW frees replaced objects only after its GC delay
        # (60 s here), and a full memstore answers every request 503 SlowDown
        self.server = RgwServer(memstore_bytes=RGW_MEMSTORE).start()
        env = {"AWS_ACCESS_KEY_ID": self.server.env["S3_ACCESS_KEY"],
               "AWS_SECRET_ACCESS_KEY": self.server.env["S3_SECRET_KEY"]}  # fmt: skip
        return Backend("rgw", self.server.url, proxy, env)

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


if __name__ == "__main__":
    sys.exit(main())
