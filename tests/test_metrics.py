"""-o metrics=[ADDR:]PORT (issue 17, point 3): Prometheus text format from a live mount,
through the kernel, and the address checks that refuse a bad option before mounting."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from s3fuse.config import ConfigError, parse_address
from tests.conftest import is_mounted
from tests.servers import RecordingProxy, free_port


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def value(text: str, name: str, **labels: str) -> float:
    """The sample of `name` with exactly these labels, from a scrape."""
    for line in text.splitlines():
        m = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if m is None or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if got == labels:
            return float(m.group(3))
    raise AssertionError(f"{name}{labels} not in the scrape:\n{text}")


def test_addresses() -> None:
    assert parse_address("9464") == ("127.0.0.1", 9464)
    assert parse_address("0.0.0.0:9464") == ("0.0.0.0", 9464)
    assert parse_address("[::1]:9464") == ("::1", 9464)
    for bad, why in (("localhost:9464", "must be an IP address"), ("127.0.0.1:0", "1-65535"),
                     ("127.0.0.1:http", "1-65535"), ("", "1-65535")):  # fmt: skip
        with pytest.raises(ConfigError, match=why):
            parse_address(bad)


@pytest.mark.mounted
def test_a_live_mount_is_scraped(mount_factory: Any, bucket: str, proxy: RecordingProxy) -> None:
    port = free_port()
    m = mount_factory(bucket, "-o", f"metrics=127.0.0.1:{port}")
    for i in range(3):
        (m / f"f{i}").write_bytes(b"x" * 1000)
    (m / "f0").read_bytes()
    time.sleep(1.5)  # the daemon's snapshot is taken once a second
    text = scrape(port)
    assert value(text, "s3fuse_requests_total", operation="PutObject") >= 3
    assert value(text, "s3fuse_uploaded_bytes_total") >= 3000
    assert value(text, "s3fuse_uploads_pending") == 0
    assert value(text, "s3fuse_uploads_failed") == 0
    assert value(text, "s3fuse_request_duration_seconds_count", operation="PutObject") >= 3
    inf = value(text, "s3fuse_request_duration_seconds_bucket", operation="PutObject", le="+Inf")
    assert inf == value(text, "s3fuse_request_duration_seconds_count", operation="PutObject")
    assert re.search(r"^s3fuse_listing_cache_(hits|misses)_total \d", text, re.M)
    assert "s3fuse_spool_bytes" in text and "AWS_SECRET" not in text


@pytest.mark.mounted
def test_a_port_in_use_refuses_the_mount(
    tmp_path: Path, bucket: str, proxy: RecordingProxy
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        try:
            r = subprocess.run(
                [sys.executable, "-m", "s3fuse", "mount", bucket, str(mnt), "--endpoint-url",
                 proxy.url, "--spool-dir", str(tmp_path / "spool"), "-o", f"metrics={port}"],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
        finally:
            if is_mounted(mnt):  # a failure of the check below must not leave it behind
                subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
    assert r.returncode == 1, r.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in r.stderr
    assert not (mnt / "x").exists()  # never mounted: the directory is the plain one
