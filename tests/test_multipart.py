"""Multipart uploads through one fault each, without a kernel: the S3 client and the
spool against a moto server behind the recording proxy. Each ends with the object whole
and byte-identical, and no upload left open (or, for a permanent failure, the error and
no upload left open). The mounted twins are in tests/test_compound.py."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from s3fuse.errors import StoreError
from s3fuse.s3.client import Store
from s3fuse.s3.types import StoreConfig
from s3fuse.spool.spool import Spool
from tests.servers import RecordingProxy, first

MiB = 1 << 20
PART = 5 * MiB


def is_part(r: Any) -> bool:
    return r.method == "PUT" and "partNumber=" in r.path


FAULTS = {
    # a part corrupted in transit: moto keeps it and answers its MD5, which is not ours
    "part-flipped": ("PUT", lambda r: "partNumber=" in r.path, "flip"),
    "part-503": ("PUT", lambda r: "partNumber=" in r.path, 503),
    "part-answer-lost": ("PUT", lambda r: "partNumber=" in r.path, "drop-response"),
    "create-answer-lost": ("POST", lambda r: r.path.endswith("?uploads"), "drop-response"),
    "complete-200-error": ("POST", lambda r: "uploadId=" in r.path, (200, "InternalError")),
    "complete-answer-lost": ("POST", lambda r: "uploadId=" in r.path, "drop-response"),
    "complete-garbled": ("POST", lambda r: "uploadId=" in r.path, "flip"),
}


def open_uploads(s3: Any, bucket: str) -> list[Any]:
    return list(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


@pytest.mark.semantics("INTEG-RESEND", "INTEG-EDGES")
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_multipart_upload_through_one_fault(
    fault: str, proxy: RecordingProxy, bucket: str, s3: Any, tmp_path: Path
) -> None:
    store = Store(StoreConfig(bucket=bucket, endpoint_url=proxy.url, max_attempts=3))
    spool = Spool(str(tmp_path / "sp"), store, multipart_threshold=PART, part_size=PART)
    spool.open()
    data = os.urandom(2 * PART + 12345)
    method, where, action = FAULTS[fault]
    hits: list[str] = []

    async def main() -> None:
        entry = spool.new("big")
        await entry.write(0, data)
        proxy.fault = first(method, where, action, hits)
        try:
            res = await spool.commit(entry, {"Metadata": {"mode": "33188"}})
        finally:
            proxy.fault = None
        assert res is not None and res.etag.endswith("-3")
        entry.close()

    try:
        trio.run(main)
    finally:
        spool.close()
    assert hits, "the fault was not met"
    got = s3.get_object(Bucket=bucket, Key="big")
    assert hashlib.md5(got["Body"].read()).digest() == hashlib.md5(data).digest()
    assert got["Metadata"]["mode"] == "33188"
    assert open_uploads(s3, bucket) == []


@pytest.mark.semantics("STORE-CLOSE")
def test_multipart_upload_refused_is_aborted_and_kept(
    proxy: RecordingProxy, bucket: str, s3: Any, tmp_path: Path
) -> None:
    """A part S3 refuses for good (AccessDenied): the upload is aborted (no parts left
    behind), the error reaches the caller, and the bytes stay in the spool, dirty."""
    store = Store(StoreConfig(bucket=bucket, endpoint_url=proxy.url, max_attempts=2))
    spool = Spool(str(tmp_path / "sp"), store, multipart_threshold=PART, part_size=PART)
    spool.open()
    data = os.urandom(2 * PART + 1)
    hits: list[str] = []

    async def main() -> None:
        entry = spool.new("big")
        await entry.write(0, data)
        proxy.fault = first("PUT", lambda r: "partNumber=2" in r.path, 403, hits)
        try:
            with pytest.raises(StoreError) as e:
                await spool.commit(entry, {})
        finally:
            proxy.fault = None
        assert e.value.code == "AccessDenied"
        assert entry.dirty and entry.read(0, len(data)) == data
        entry.close()

    try:
        trio.run(main)
    finally:
        spool.close()
    assert hits
    assert open_uploads(s3, bucket) == []
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
