"""Fixtures: a moto server process, a recording proxy in front of it, fresh buckets,
and mounts of s3fuse through the kernel that are always unmounted."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.servers import MotoServer, RecordingProxy, RgwServer

# Tests never use the host's AWS configuration.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing-key-id",
    AWS_SECRET_ACCESS_KEY="testing-secret-key",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_CONFIG_FILE="/nonexistent/aws-config",
    AWS_SHARED_CREDENTIALS_FILE="/nonexistent/aws-credentials",
)
for _v in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(_v, None)


def client(url: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    server = MotoServer(log_path=str(log)).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def proxy(moto: MotoServer) -> Iterator[RecordingProxy]:
    p = RecordingProxy(moto.url)
    yield p
    p.close()


@pytest.fixture
def s3(moto: MotoServer) -> Any:
    """A boto3 client that talks to the server directly (not through the proxy)."""
    return client(moto.url)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"t-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


def is_mounted(path: Path) -> bool:
    """From the mount table, not a stat: a mount whose daemon died answers every stat
    with ENOTCONN, so os.path.ismount says False and it would be left behind."""
    target = os.path.abspath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1].replace("\\040", " ") == target for line in f)


class Mount:
    """One ``s3fuse mount --foreground`` process and its mount point."""

    def __init__(
        self, bucket: str, endpoint: str, root: Path, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.env = {**os.environ, **(env or {})}
        self.bucket = bucket
        self.endpoint = endpoint
        self.root = root
        self.path = root / "mnt"
        self.spool = root / "spool"
        self.log = root / "s3fuse.log"
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.path.mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 60.0) -> Mount:
        cmd = [
            sys.executable,
            "-m",
            "s3fuse",
            "mount",
            self.bucket,
            str(self.path),
            "--endpoint-url",
            self.endpoint,
            "--foreground",
            "--debug",
            "--spool-dir",
            str(self.spool),
            "--retries",
            "2",
            "-o",
            "retry_window=0",  # failure tests want close() to fail at once
            *self.args,
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=self.env
            )
        if is_mounted(self.path):
            raise RuntimeError(f"{self.path} is mounted already: give this mount another root")
        deadline = time.monotonic() + timeout
        while not is_mounted(self.path):
            if self.proc.poll() is not None:
                raise RuntimeError(f"s3fuse exited {self.proc.returncode}:\n{self.log_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mount not ready after {timeout}s:\n{self.log_text()}")
            time.sleep(0.05)
        os.stat(self.path)
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def unmount(self, timeout: float = 60.0) -> int:
        """Clean unmount; returns the daemon's exit code."""
        if is_mounted(self.path):
            for _ in range(50):
                r = subprocess.run(["fusermount3", "-u", str(self.path)], capture_output=True)
                if r.returncode == 0:
                    break
                time.sleep(0.1)
            else:
                subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)
        code = 0
        if self.proc is not None:
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
            self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL the daemon (a crash), then detach the dead mount."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None
        subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)

    def stop(self) -> None:
        try:
            self.unmount(timeout=30)
        finally:
            if self.proc is not None:
                self.kill()
            if is_mounted(self.path):
                subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)


@pytest.fixture
def mount_factory(tmp_path: Path, proxy: RecordingProxy) -> Iterator[Any]:
    mounts: list[Mount] = []

    def make(
        bucket: str,
        *args: str,
        endpoint: str | None = None,
        root: Path | None = None,
        start: bool = True,
        env: dict[str, str] | None = None,
    ) -> Mount:
        m = Mount(bucket, endpoint or proxy.url, root or tmp_path, *args, env=env)
        mounts.append(m)
        return m.start() if start else m

    yield make
    for m in mounts:
        m.stop()
    for m in mounts:
        shutil.rmtree(m.path, ignore_errors=True)


@pytest.fixture
def mnt(mount_factory: Any, bucket: str, proxy: RecordingProxy) -> Mount:
    m: Mount = mount_factory(bucket)
    proxy.clear()
    return m


# ------------------------------------------------------------------ both servers
@dataclass
class Backend:
    """An S3 server behind a recording proxy: moto, or Ceph RGW (validates Content-MD5,
    conditional writes, SSE-KMS, SSE-C)."""

    name: str
    url: str  # direct
    proxy: RecordingProxy
    env: dict[str, str]  # credentials for s3fuse
    kms_key: str | None = None
    # RGW: a proxy in front of a second gateway over the same cluster, the way hosts of a
    # fleet reach one distributed store through different endpoints
    second: RecordingProxy | None = None

    def host_proxy(self, host: int) -> RecordingProxy:
        """The proxy host number `host` talks through: hosts 1, 3, ... use the second
        gateway where there is one."""
        return self.second if host % 2 and self.second is not None else self.proxy

    def proxies(self) -> list[RecordingProxy]:
        return [self.proxy] + ([self.second] if self.second is not None else [])

    def client(self) -> Any:
        return boto3.client(
            "s3", endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2},
                          request_checksum_calculation="when_required"),
        )  # fmt: skip

    def bucket(self) -> str:
        name = f"i-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def rgw_backend() -> Iterator[Backend]:
    if os.environ.get("S3FUSE_SKIP_RGW"):
        pytest.skip("S3FUSE_SKIP_RGW is set")
    server = RgwServer(gateways=2).start()
    p = RecordingProxy(server.url)
    assert server.url_2 is not None
    p2 = RecordingProxy(server.url_2)
    try:
        yield Backend("rgw", server.url, p, {
            "AWS_ACCESS_KEY_ID": server.env["S3_ACCESS_KEY"],
            "AWS_SECRET_ACCESS_KEY": server.env["S3_SECRET_KEY"],
        }, server.env["S3_KMS_KEY_ID"], second=p2)  # fmt: skip
    finally:
        p.close()
        p2.close()
        server.stop()


@pytest.fixture(scope="session")
def moto_backend(moto: MotoServer) -> Iterator[Backend]:
    p = RecordingProxy(moto.url)
    yield Backend("moto", moto.url, p, {
        "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
    })  # fmt: skip
    p.close()


@pytest.fixture(params=["moto", pytest.param("rgw", marks=pytest.mark.rgw)])
def server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    """Both servers for tests of the core without a kernel (which takes its credentials
    from the environment); the RGW half runs with the mounted tests (marker rgw)."""
    b: Backend = request.getfixturevalue(f"{request.param}_backend")
    for k, v in b.env.items():
        monkeypatch.setenv(k, v)
    for p in b.proxies():
        p.fault = None
    yield b
    for p in b.proxies():
        p.fault = None


@pytest.fixture(params=["moto", "rgw"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    b: Backend = request.getfixturevalue(f"{request.param}_backend")
    for p in b.proxies():
        p.fault = None
        p.clear()
    yield b
    for p in b.proxies():
        p.fault = None
