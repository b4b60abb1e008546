"""The S3 servers a benchmark runs on: moto (one Python process, the default) or a Ceph
RGW (scripts/rgw/start: a real, validating server in C++), both on 127.0.0.1.

Each gives the admin/ceiling client, fresh buckets, verification and the number of S3
requests a run caused, counted from the server's own access log (moto's werkzeug lines,
RGW's beast lines: both carry the quoted request line), so no proxy sits in the path.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from s3fuse.s3.client import no_continue_for_small_bodies

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import MotoServer, RgwServer

MiB = 1 << 20
MOTO_KEY_ID, MOTO_SECRET = "bench-key-id", "bench-secret-key"


def ceiling_client(url: str, key_id: str, secret: str) -> Any:
    """boto3 sending the way s3fuse sends (s3fuse/s3/client.py): Content-MD5 only
    (`when_required`), unsigned payloads over http, no `Expect: 100-continue` for bodies
    up to 1 MiB. With botocore's defaults every small PUT would wait a round trip for
    the server's go-ahead and SHA-256 its body: a slower "ceiling" than the tool under it."""
    s3 = boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id=key_id, aws_secret_access_key=secret,
        config=Config(max_pool_connections=32,
                      s3={"addressing_style": "path", "payload_signing_enabled": False},
                      request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"),
    )  # fmt: skip
    s3.meta.events.register_last("before-call.s3", no_continue_for_small_bodies)
    return s3


class Server:
    """What every benchmark server offers; start() sets url, key_id, secret, log, s3."""

    kind = ""
    url = key_id = secret = ""
    log: Path
    s3: Any

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.warm_bytes = 0  # size of the largest body a workload sends
        self._marker_bucket = ""
        self.start()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        """A clean server before each workload, warmed up."""
        raise NotImplementedError

    def warm_up(self) -> None:
        """A new server answers its first few hundred requests slowly (moto: lazy imports,
        caches; RGW: its first bucket index, connection setup): without this, whichever
        target runs first would pay for it."""
        bucket = self.bucket()
        with cf.ThreadPoolExecutor(8) as ex:
            list(ex.map(lambda i: self.s3.put_object(Bucket=bucket, Key=f"w{i}", Body=b"w"),
                        range(200)))  # fmt: skip
            list(ex.map(lambda i: self.s3.head_object(Bucket=bucket, Key=f"w{i}"), range(200)))
        self.objects(bucket)
        if self.warm_bytes:  # and its first large body (heap growth) as slowly
            self.s3.put_object(Bucket=bucket, Key="big", Body=b"w" * self.warm_bytes)
        self.empty_all()

    def bucket(self) -> str:
        name = "bench-" + uuid.uuid4().hex[:12]
        self.s3.create_bucket(Bucket=name)
        return name

    def log_size(self) -> int:
        return self.log.stat().st_size

    def requests_since(self, offset: int, bucket: str) -> int:
        """Requests for bucket in the access log after offset. RGW writes its log
        asynchronously, so a marker request goes last and the count waits until the
        marker's own line is there: every request before it has been logged by then."""
        if not self._marker_bucket:
            self._marker_bucket = self.bucket()
        marker = f"marker-{uuid.uuid4().hex}"
        with contextlib.suppress(self.s3.exceptions.ClientError):  # a 404, logged all the same
            self.s3.head_object(Bucket=self._marker_bucket, Key=marker)
        needle, seen = f" /{bucket}", f"/{self._marker_bucket}/{marker}"
        deadline = time.monotonic() + 30
        while True:
            with open(self.log, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
            if seen in text or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return sum(1 for line in text.splitlines()
                   if needle in line and '" ' in line and seen not in line)  # fmt: skip

    def objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        out: dict[str, int] = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                out[o["Key"]] = o["Size"]
        return out

    def md5_of(self, bucket: str, key: str) -> str:
        h = hashlib.md5()
        for chunk in self.s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(MiB):
            h.update(chunk)
        return h.hexdigest()

    def empty_all(self) -> None:
        """Delete every object (between runs: a heap full of earlier runs' data slows
        moto down for the next one; RGW keeps it in the OSD's RAM)."""
        for b in self.s3.list_buckets().get("Buckets", []):
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=b["Name"]):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    self.s3.delete_objects(Bucket=b["Name"], Delete={"Objects": keys})
            uploads = self.s3.list_multipart_uploads(Bucket=b["Name"]).get("Uploads", [])
            for u in uploads:
                self.s3.abort_multipart_upload(Bucket=b["Name"], Key=u["Key"],
                                               UploadId=u["UploadId"])  # fmt: skip


class MotoBackend(Server):
    kind = "moto"

    def start(self) -> None:
        self.log = self.workdir / "moto.log"
        self.moto = MotoServer(log_path=str(self.log)).start()
        self.url, self.key_id, self.secret = self.moto.url, MOTO_KEY_ID, MOTO_SECRET
        self.s3 = ceiling_client(self.url, self.key_id, self.secret)
        self._marker_bucket = ""

    def restart(self) -> None:
        """A fresh process for each workload: moto keeps every object in memory and slows
        down as its heap grows, which would favour whoever runs first."""
        self.stop()
        self.start()
        self.warm_up()

    def stop(self) -> None:
        self.moto.stop()


class RgwBackend(Server):
    """One RGW for the whole run (starting one takes ~15-50 s). Between workloads its
    garbage collector is run by hand: deleted objects' data stays in the memstore OSD
    until RGW's lazy GC frees it, and a full OSD would fail the next workload."""

    kind = "rgw"
    memstore_bytes = 6 << 30  # RAM the OSD may fill; freed by gc() between workloads

    def start(self) -> None:
        print("[bench] starting Ceph RGW (scripts/rgw/start)", file=sys.stderr, flush=True)
        self.rgw = RgwServer(memstore_bytes=self.memstore_bytes).start()
        env = self.rgw.env
        self.url, self.key_id, self.secret = (
            self.rgw.url,
            env["S3_ACCESS_KEY"],
            env["S3_SECRET_KEY"],
        )
        self.log = Path(env["S3_STATE_DIR"]) / "log" / "client.rgw.a.log"
        self.s3 = ceiling_client(self.url, self.key_id, self.secret)
        self._marker_bucket = ""

    def gc(self) -> None:
        conf = Path(self.rgw.env["S3_STATE_DIR"]) / "ceph.conf"
        subprocess.run(["radosgw-admin", "-c", str(conf), "-n", "client.rgw.a", "gc", "process",
                        "--include-all"], capture_output=True, timeout=600)  # fmt: skip

    def restart(self) -> None:
        self.empty_all()
        self.gc()
        self.warm_up()

    def stop(self) -> None:
        self.rgw.stop()


BACKENDS: dict[str, type[Server]] = {"moto": MotoBackend, "rgw": RgwBackend}
