"""How long close() takes after a large sequential write, with and without streaming
multipart, beside one PutObject of the same bytes straight from boto3, on moto or on a
Ceph RGW this script starts (issue 16, point 1).

    python benchmarks/streaming.py [--server moto|rgw] [--mib 1024] [--repeat 2]

For each configuration: the time of the writes (1 MiB each), of close(), their sum (the
time to durable), the peak RSS of the daemon, and the ratios the issue sets: close as a
share of the whole, and the whole against (write time + one PutObject).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import MotoServer, RgwServer

MiB = 1 << 20


def client(url: str, env: dict[str, str]) -> Any:
    return boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"},
                      request_checksum_calculation="when_required"),
    )  # fmt: skip


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def one_run(url: str, env: dict[str, str], bucket: str, opts: str, data: bytes) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="s3fuse-stream-"))
    mnt = work / "mnt"
    mnt.mkdir()
    cmd = [sys.executable, "-m", "s3fuse", "mount", bucket, str(mnt), "--endpoint-url", url,
           "--foreground", "--spool-dir", str(work / "spool"), "-o", opts]  # fmt: skip
    with open(work / "log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, env={**os.environ, **env})
    try:
        deadline = time.monotonic() + 60
        while not os.path.ismount(mnt):
            assert proc.poll() is None and time.monotonic() < deadline, (work / "log").read_text()
            time.sleep(0.05)
        t0 = time.perf_counter()
        fd = os.open(mnt / "big", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for off in range(0, len(data), MiB):
            os.write(fd, data[off : off + MiB])
        t1 = time.perf_counter()
        os.close(fd)
        t2 = time.perf_counter()
        rss = peak_rss_kb(proc.pid) / 1024
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
        proc.wait(120)
    return {"write": t1 - t0, "close": t2 - t1, "total": t2 - t0, "rss_mb": rss}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", choices=("moto", "rgw"), default="rgw")
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--part-mib", type=int, default=16)
    args = ap.parse_args()
    data = os.urandom(args.mib * MiB)
    if args.server == "rgw":
        server: Any = RgwServer(memstore_bytes=max(4 << 30, 3 * len(data))).start()
        url = server.url
        env = {"AWS_ACCESS_KEY_ID": server.env["S3_ACCESS_KEY"],
               "AWS_SECRET_ACCESS_KEY": server.env["S3_SECRET_KEY"]}  # fmt: skip
    else:
        server = MotoServer().start()
        url = server.url
        env = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret"}
    part = args.part_mib * MiB
    configs = {
        "streamed": f"part_size={part},stream_threshold={2 * part}",
        "at close": f"part_size={part},stream_threshold=0",
    }
    try:
        s3 = client(url, env)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
        put: list[float] = []
        for _ in range(args.repeat):
            bucket = f"stream-{os.urandom(4).hex()}"
            s3.create_bucket(Bucket=bucket)
            t = time.perf_counter()
            s3.put_object(Bucket=bucket, Key="put", Body=data)
            put.append(time.perf_counter() - t)
            s3.delete_object(Bucket=bucket, Key="put")
            for name, opts in configs.items():
                results[name].append(one_run(url, env, bucket, opts, data))
                s3.delete_object(Bucket=bucket, Key="big")
        one_put = statistics.median(put)
        print(
            f"{args.server}, {args.mib} MiB in 1 MiB writes, parts of {args.part_mib} MiB; "
            f"one boto3 PutObject: {one_put:.2f} s ({args.mib * MiB / one_put / 1e6:.0f} MB/s)"
        )
        print(f"{'':10} {'write s':>8} {'close s':>8} {'total s':>8} {'close/total':>12} "
              f"{'total/(write+put)':>18} {'peak RSS MB':>12}")  # fmt: skip
        for name, runs in results.items():
            m = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(f"{name:10} {m['write']:8.2f} {m['close']:8.2f} {m['total']:8.2f} "
                  f"{m['close'] / m['total']:12.2f} {m['total'] / (m['write'] + one_put):18.2f} "
                  f"{m['rss_mb']:12.0f}")  # fmt: skip
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
