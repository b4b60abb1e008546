"""Integrity on two servers: moto, and Ceph RGW, which validates Content-MD5 (BadDigest),
conditional writes, SSE-KMS and SSE-C. A fault-injecting proxy sits in front of each."""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from tests.conftest import Backend, Mount

pytestmark = pytest.mark.mounted

MiB = 1 << 20
SMALL_MULTIPART = ("-o", "multipart_threshold=6291456,part_size=5242880")


def mount(
    mount_factory: Any, b: Backend, bucket: str, *args: str, root: Path | None = None
) -> Mount:
    m: Mount = mount_factory(bucket, *args, endpoint=b.proxy.url, env=b.env, root=root)
    b.proxy.clear()
    return m


def body(b: Backend, bucket: str, key: str) -> bytes:
    data: bytes = b.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


def for_key(b: Backend, bucket: str, key: str, method: str) -> list[Any]:
    path = f"/{bucket}/{quote(key)}"
    return [r for r in b.proxy.requests(method) if r.key_path == path]


def part_number(r: Any) -> int:
    q = parse_qs(urlsplit(r.path).query)
    return int(q["partNumber"][0]) if "partNumber" in q else 0


@pytest.mark.semantics("INTEG-MD5")
def test_every_put_and_part_carries_content_md5(mount_factory: Any, backend: Backend) -> None:
    bucket = backend.bucket()
    m = mount(mount_factory, backend, bucket, *SMALL_MULTIPART)
    small = os.urandom(100_000)
    large = os.urandom(13 * MiB)
    (m / "small").write_bytes(small)
    (m / "large").write_bytes(large)
    assert body(backend, bucket, "small") == small
    assert body(backend, bucket, "large") == large
    puts = for_key(backend, bucket, "small", "PUT") + for_key(backend, bucket, "large", "PUT")
    parts = [r for r in puts if part_number(r)]
    assert len(parts) == 3, "13 MiB in 5 MiB parts"
    for r in puts:
        assert r.headers["content-md5"] == base64.b64encode(
            bytes.fromhex(r.body_md5)).decode(), r.path  # fmt: skip
    head = backend.client().head_object(Bucket=bucket, Key="large")
    md5s = b"".join(
        hashlib.md5(large[i : i + 5 * MiB]).digest() for i in range(0, len(large), 5 * MiB)
    )
    assert head["ETag"].strip('"') == f"{hashlib.md5(md5s).hexdigest()}-3"


def test_small_overwrite_of_a_multipart_object(
    mount_factory: Any, backend: Backend, request: pytest.FixtureRequest
) -> None:
    """A few bytes written into an object that went up in parts, by a later mount: the
    whole new content is stored (again in parts). s3fuse reads the object's ACL before an
    overwrite to keep it; moto answers GetObjectAcl of any multipart object with 500 (its
    bug: the overwrite fails there, the bytes stay in the spool)."""
    if backend.name == "moto":
        request.applymarker(pytest.mark.xfail(strict=True, reason="moto: GetObjectAcl 500"))
    bucket = backend.bucket()
    m = mount(mount_factory, backend, bucket, *SMALL_MULTIPART)
    data = bytearray(os.urandom(13 * MiB))
    (m / "big").write_bytes(data)
    m.unmount()  # a new mount knows nothing of the object: it reads ACL and tags first
    m.start()
    with open(m / "big", "r+b") as f:
        f.seek(7 * MiB)
        f.write(b"patched")
    data[7 * MiB : 7 * MiB + 7] = b"patched"
    assert body(backend, bucket, "big") == bytes(data)


@pytest.mark.semantics("INTEG-RESEND")
def test_corrupted_put_is_sent_again(mount_factory: Any, backend: Backend) -> None:
    bucket = backend.bucket()
    m = mount(mount_factory, backend, bucket)
    data = os.urandom(50_000)
    flipped: list[str] = []

    def fault(r: Any) -> Any:
        if r.method == "PUT" and r.key_path.endswith("/victim") and not flipped:
            flipped.append(r.path)
            return "flip"
        return None

    backend.proxy.fault = fault
    (m / "victim").write_bytes(data)  # close() succeeds: healed from the spool
    assert flipped
    assert body(backend, bucket, "victim") == data
    assert len(for_key(backend, bucket, "victim", "PUT")) == 2
    log = m.log_text()
    assert "corrupted in transit" in log
    # RGW rejects the bad body itself (BadDigest, or over http the SigV4 payload hash);
    # moto stores it, and the ETag check catches it
    if backend.name == "rgw":
        assert "BadDigest" in log or "XAmzContentSHA256Mismatch" in log
    else:
        assert "ChecksumMismatch" in log


@pytest.mark.semantics("INTEG-RESEND")
def test_corrupted_part_is_sent_again_alone(mount_factory: Any, backend: Backend) -> None:
    bucket = backend.bucket()
    m = mount(mount_factory, backend, bucket, *SMALL_MULTIPART)
    data = os.urandom(12 * MiB)
    seen: list[int] = []

    def fault(r: Any) -> Any:
        if part_number(r) == 2 and 2 not in seen:
            seen.append(2)
            return "flip"
        return None

    backend.proxy.fault = fault
    (m / "parts").write_bytes(data)
    assert body(backend, bucket, "parts") == data
    counts = [part_number(r) for r in for_key(backend, bucket, "parts", "PUT") if part_number(r)]
    assert sorted(counts) == [1, 2, 2, 3]


def test_failed_multipart_is_aborted_and_kept(mount_factory: Any, backend: Backend) -> None:
    bucket = backend.bucket()
    m = mount(mount_factory, backend, bucket, *SMALL_MULTIPART)
    data = os.urandom(11 * MiB)
    backend.proxy.fault = lambda r: (403, "AccessDenied") if part_number(r) == 2 else None
    with pytest.raises(OSError) as e:
        (m / "doomed").write_bytes(data)
    assert e.value.errno == errno.EACCES
    backend.proxy.fault = None
    s3 = backend.client()
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    assert any(p.read_bytes() == data for p in m.spool.glob("*.data"))
    assert m.unmount() == 0  # the upload is tried again at unmount, and succeeds now
    assert body(backend, bucket, "doomed") == data


@pytest.mark.semantics("INTEG-WHOLE-READ")
def test_corrupted_get_is_never_handed_on(
    mount_factory: Any, backend: Backend, tmp_path: Path
) -> None:
    bucket = backend.bucket()
    data = os.urandom(300_000)
    backend.client().put_object(Bucket=bucket, Key="read-me", Body=data)
    m = mount(mount_factory, backend, bucket)
    os.stat(m / "read-me")
    flips = [0]

    def once(r: Any) -> Any:
        if r.method == "GET" and r.key_path.endswith("/read-me") and flips[0] < 1:
            flips[0] += 1
            return "flip-response"
        return None

    backend.proxy.fault = once
    assert (m / "read-me").read_bytes() == data  # detected, fetched again
    assert "fetching again" in m.log_text()
    backend.proxy.fault = lambda r: (
        "flip-response" if r.method == "GET" and r.key_path.endswith("/read-me") else None
    )
    m2 = mount(mount_factory, backend, bucket, root=tmp_path / "second")
    with pytest.raises(OSError) as e:
        (m2 / "read-me").read_bytes()
    assert e.value.errno == errno.EIO
    assert "refusing to return corrupted bytes" in m2.log_text()


@pytest.mark.parametrize("kind", ["503", "SlowDown", "500", "reset", "stall", "restart"])
def test_transient_faults_are_retried(mount_factory: Any, backend: Backend, kind: str) -> None:
    bucket = backend.bucket()
    m = mount(
        mount_factory, backend, bucket, "--retries", "5", "-o", "read_timeout=2,retry_window=20"
    )
    hits = [0]
    action: Any = {"503": 503, "SlowDown": (503, "SlowDown"), "500": 500, "reset": "drop",
                   "stall": ("stall", 4), "restart": None}[kind]  # fmt: skip

    def fault(r: Any) -> Any:
        if r.method == "PUT" and r.key_path.endswith("/flaky") and hits[0] < 2:
            hits[0] += 1
            return action
        return None

    down_until = [0.0]

    def restart(r: Any) -> Any:
        # the server goes away for 1.5 s in the middle of the upload, then comes back
        if r.method == "PUT" and r.key_path.endswith("/flaky") and not down_until[0]:
            down_until[0] = time.monotonic() + 1.5
        if time.monotonic() < down_until[0]:
            hits[0] += 1
            return "drop"
        return None

    backend.proxy.fault = restart if kind == "restart" else fault
    data = os.urandom(20_000)
    (m / "flaky").write_bytes(data)  # slower, but no error
    assert hits[0] >= 2 if kind == "restart" else hits[0] == 2
    assert body(backend, bucket, "flaky") == data


@pytest.mark.parametrize(
    ("status", "code", "err"),
    [(403, "AccessDenied", errno.EACCES), (404, "NoSuchBucket", errno.ENOENT),
     (400, "InvalidArgument", errno.EINVAL)],
)  # fmt: skip
@pytest.mark.semantics("STORE-CLOSE")
def test_permanent_faults_are_not_retried(
    mount_factory: Any, backend: Backend, status: int, code: str, err: int
) -> None:
    bucket = backend.bucket()
    m = mount(mount_factory, backend, bucket, "--retries", "5")
    backend.proxy.fault = lambda r: (status, code) if r.method == "PUT" else None
    with pytest.raises(OSError) as e:
        (m / "denied").write_bytes(b"x")
    assert e.value.errno == err
    assert len(for_key(backend, bucket, "denied", "PUT")) == 1


@pytest.mark.semantics("CONC-DETECT")
def test_conflicts_are_detected(mount_factory: Any, backend: Backend) -> None:
    bucket = backend.bucket()
    s3 = backend.client()
    s3.put_object(Bucket=bucket, Key="shared", Body=b"v1")
    m = mount(mount_factory, backend, bucket, "-o", "conflict=detect")
    # an undisturbed overwrite works (If-Match; RGW wants the ETag unquoted)
    (m / "shared").write_bytes(b"v2 ours")
    assert body(backend, bucket, "shared") == b"v2 ours"
    # another writer changes the key while we have it open
    with pytest.raises(OSError) as e, open(m / "shared", "r+b", buffering=0) as f:
        f.write(b"v3 ours")
        s3.put_object(Bucket=bucket, Key="shared", Body=b"v3 theirs")
    assert e.value.errno == errno.ESTALE
    assert body(backend, bucket, "shared") == b"v3 theirs"  # untouched
    kept = list((m.spool / "recovered").rglob("shared*"))
    assert [p.read_bytes() for p in kept] == [b"v3 ours"]
    assert "changed by another writer" in m.log_text()
    # a create races with another writer's create
    with pytest.raises(OSError) as e, open(m / "fresh", "wb") as f:
        f.write(b"mine")
        s3.put_object(Bucket=bucket, Key="fresh", Body=b"theirs")
    assert e.value.errno == errno.EEXIST
    assert body(backend, bucket, "fresh") == b"theirs"


@pytest.mark.semantics("CONC-LAST-WINS")
def test_default_is_last_writer_wins(mount_factory: Any, backend: Backend) -> None:
    bucket = backend.bucket()
    s3 = backend.client()
    s3.put_object(Bucket=bucket, Key="lww", Body=b"v1")
    m = mount(mount_factory, backend, bucket)
    with open(m / "lww", "r+b", buffering=0) as f:
        f.write(b"V")
        s3.put_object(Bucket=bucket, Key="lww", Body=b"theirs")
    assert body(backend, bucket, "lww") == b"V1"


def test_server_side_encryption(mount_factory: Any, backend: Backend, tmp_path: Path) -> None:
    bucket = backend.bucket()
    m = mount(mount_factory, backend, bucket)
    p = m / "kms.txt"
    fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"secret-ish")
    os.setxattr(p, "user.s3.sse", b"aws:kms")
    os.setxattr(p, "user.s3.sse_kms_key_id", (backend.kms_key or "alias/test").encode())
    os.close(fd)
    head = backend.client().head_object(Bucket=bucket, Key="kms.txt")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert body(backend, bucket, "kms.txt") == b"secret-ish"
    key = os.urandom(32)
    kf = tmp_path / "key"
    kf.write_bytes(key)
    kf.chmod(0o600)
    m2 = mount_factory(bucket, "-o", f"sse_c_key_file={kf}", endpoint=backend.proxy.url,
                       env=backend.env, root=tmp_path / "ssec")  # fmt: skip
    (m2 / "customer.bin").write_bytes(b"only with the key")
    assert (m2 / "customer.bin").read_bytes() == b"only with the key"
    m2.unmount()
    m3 = mount_factory(bucket, "-o", f"sse_c_key_file={kf}", endpoint=backend.proxy.url,
                       env=backend.env, root=tmp_path / "ssec2")  # fmt: skip
    assert (m3 / "customer.bin").read_bytes() == b"only with the key"
    if backend.name == "rgw":  # moto ignores SSE-C; RGW enforces it
        with pytest.raises(backend.client().exceptions.ClientError):
            backend.client().get_object(Bucket=bucket, Key="customer.bin")
