"""Every byte handed to a reader is checked (issue 12, point 3): large objects read in
ranges are checked block by block against the block checksums s3fuse stores with them
(blocksums.py), on moto and Ceph RGW; objects without them are counted as unverified."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.conftest import Backend
from tests.test_compound import flip_first_get
from tests.test_integrity import SMALL_MULTIPART, body, mount

pytestmark = pytest.mark.mounted

MiB = 1 << 20


def reads(m: Any, field: str, at_least: int = 1) -> int:
    """A read counter from `s3fuse status --json` (written once a second: wait for it)."""
    deadline = time.monotonic() + 10
    while True:
        r = subprocess.run([sys.executable, "-m", "s3fuse", "status", str(m.path), "--json"],
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        n: int = json.loads(r.stdout)["data"]["mounts"][0]["reads"][field]
        if n >= at_least or time.monotonic() > deadline:
            return n
        time.sleep(0.3)


def head_meta(b: Backend, bucket: str, key: str) -> dict[str, str]:
    md: dict[str, str] = b.client().head_object(Bucket=bucket, Key=key)["Metadata"]
    return md


@pytest.mark.semantics("INTEG-RANGED-READ")
@pytest.mark.parametrize("how", ["sequential", "random", "multipart"])
def test_a_corrupted_range_is_fetched_again(mount_factory: Any, backend: Backend, how: str) -> None:
    bucket = backend.bucket()
    args = SMALL_MULTIPART if how == "multipart" else ()
    m = mount(mount_factory, backend, bucket, *args)
    data = os.urandom(21 * MiB + 123)
    (m / "big").write_bytes(data)
    assert "s3fuse-blocks" in head_meta(backend, bucket, "big")
    m.unmount()
    m.start()  # nothing cached: every byte read comes from S3
    flipped: list[str] = []
    backend.proxy.fault = flip_first_get("/big", flipped)
    if how == "random":
        with open(m / "big", "rb") as f:
            f.seek(13 * MiB)
            got = f.read(4096)
        assert got == data[13 * MiB : 13 * MiB + 4096]
    else:
        assert hashlib.md5((m / "big").read_bytes()).digest() == hashlib.md5(data).digest()
    assert flipped, "the fault was not met"
    assert "do not match their block checksum" in m.log_text()
    assert reads(m, "corrupted_refetched") >= 1


@pytest.mark.semantics("INTEG-RANGED-READ")
def test_metadata_change_keeps_the_block_checksums(mount_factory: Any, backend: Backend) -> None:
    bucket = backend.bucket()
    m = mount(mount_factory, backend, bucket)
    data = os.urandom(10 * MiB)
    (m / "big").write_bytes(data)
    sums = head_meta(backend, bucket, "big")["s3fuse-blocks"]
    os.chmod(m / "big", 0o600)
    md = head_meta(backend, bucket, "big")
    assert int(md["mode"]) & 0o777 == 0o600 and md["s3fuse-blocks"] == sums
    # a new content gets new sums; a small file none (its whole GET is checked by ETag)
    (m / "big").write_bytes(os.urandom(10 * MiB))
    assert head_meta(backend, bucket, "big")["s3fuse-blocks"] != sums
    (m / "big").write_bytes(b"small")
    assert "s3fuse-blocks" not in head_meta(backend, bucket, "big")


@pytest.mark.semantics("INTEG-RANGED-READ")
def test_objects_without_block_checksums_are_counted(mount_factory: Any, backend: Backend) -> None:
    bucket = backend.bucket()
    data = os.urandom(9 * MiB)
    backend.client().put_object(Bucket=bucket, Key="foreign", Body=data)
    m = mount(mount_factory, backend, bucket)
    assert (m / "foreign").read_bytes() == data
    assert reads(m, "unverified_ranged") == 1
    assert "read in ranges without block checksums" in m.log_text()
    assert body(backend, bucket, "foreign") == data
