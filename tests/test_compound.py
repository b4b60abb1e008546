"""Compound faults: sequences of failures, crashes and later writes that once lost or
corrupted acknowledged data (issue 12, sequences A, B and C), on moto and Ceph RGW."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Backend
from tests.servers import first
from tests.test_integrity import SMALL_MULTIPART, body, for_key, mount

pytestmark = pytest.mark.mounted

MiB = 1 << 20


def corrupt_puts(r: Any) -> Any:
    """Every PUT body flipped in transit (RGW: BadDigest; moto: a wrong ETag)."""
    return "flip" if r.method == "PUT" else None


def flip_first_get(key_suffix: str, flipped: list[str]) -> Any:
    """A fault: the first GET of the key answers with a flipped byte (noted in flipped)."""
    return first("GET", lambda r: r.key_path.endswith(key_suffix), "flip-response", flipped)


def keys(b: Backend, bucket: str) -> list[str]:
    return [o["Key"] for o in b.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.mark.semantics("LOST-NO-REPLAY")
def test_failed_recovery_is_not_replayed_over_a_later_close(
    mount_factory: Any, backend: Backend
) -> None:
    """A: B's upload fails, the daemon dies, recovery of B fails too; C is written and
    acknowledged; the next mount must not upload the older B over C."""
    bucket = backend.bucket()
    m = mount(mount_factory, backend, bucket)
    (m / "f").write_bytes(b"A" * 1000)
    backend.proxy.fault = corrupt_puts
    with pytest.raises(OSError) as e:
        (m / "f").write_bytes(b"B" * 2000)
    assert e.value.errno == errno.EIO
    m.kill()
    m.start()  # recovery of B fails: the link still corrupts every body
    assert "recovery: upload of 'f' failed" in m.log_text()
    # what the mount shows is the spooled, unacknowledged B, not the older stored A
    assert (m / "f").read_bytes() == b"B" * 2000
    backend.proxy.fault = None
    (m / "f").write_bytes(b"C" * 3000)
    assert body(backend, bucket, "f") == b"C" * 3000
    assert m.unmount() == 0
    m.start()
    assert (m / "f").read_bytes() == b"C" * 3000
    assert m.unmount() == 0
    assert body(backend, bucket, "f") == b"C" * 3000
    assert not list(m.spool.glob("*.json")), "nothing is pending any more"


@pytest.mark.semantics("LOST-SPOOL")
def test_recovery_failure_is_uploaded_once_the_link_heals(
    mount_factory: Any, backend: Backend
) -> None:
    """The other half of A: a kept entry that nobody overwrites is still stored later."""
    bucket = backend.bucket()
    m = mount(mount_factory, backend, bucket)
    backend.proxy.fault = corrupt_puts
    with pytest.raises(OSError):
        (m / "g").write_bytes(b"B" * 2000)
    m.kill()
    m.start()
    assert (m / "g").read_bytes() == b"B" * 2000
    backend.proxy.fault = None
    assert m.unmount() == 0  # the unmount tries the pending upload once more
    assert body(backend, bucket, "g") == b"B" * 2000


@pytest.mark.semantics("LOST-NO-REPLAY")
def test_rename_of_unstored_file_over_stored_then_unlink(
    mount_factory: Any, backend: Backend
) -> None:
    """B: rename of a never-uploaded file onto a stored one, then unlink: the old
    object must not survive (nor come back after a remount)."""
    bucket = backend.bucket()
    m = mount(mount_factory, backend, bucket)
    (m / "a").write_bytes(b"X" * 100)
    backend.proxy.fault = corrupt_puts
    with pytest.raises(OSError):
        (m / "b").write_bytes(b"Y" * 200)
    os.rename(m / "b", m / "a")
    assert (m / "a").read_bytes() == b"Y" * 200
    os.unlink(m / "a")
    assert not (m / "a").exists()
    backend.proxy.fault = None
    assert m.unmount() == 0
    assert keys(backend, bucket) == []
    m.start()
    assert not (m / "a").exists() and not (m / "b").exists()


def test_rename_of_unstored_file_over_stored_is_stored_later(
    mount_factory: Any, backend: Backend
) -> None:
    bucket = backend.bucket()
    m = mount(mount_factory, backend, bucket)
    (m / "a").write_bytes(b"X" * 100)
    backend.proxy.fault = corrupt_puts
    with pytest.raises(OSError):
        (m / "b").write_bytes(b"Y" * 200)
    os.rename(m / "b", m / "a")
    backend.proxy.fault = None
    assert m.unmount() == 0
    assert keys(backend, bucket) == ["a"]
    assert body(backend, bucket, "a") == b"Y" * 200


@pytest.mark.semantics("INTEG-WHOLE-READ")
def test_append_to_multipart_object_after_corrupted_download(
    mount_factory: Any, backend: Backend
) -> None:
    """C: the GET that brings a multipart object into the spool has a flipped byte; the
    append must not store it (a multipart ETag is checked part by part)."""
    bucket = backend.bucket()
    m = mount(mount_factory, backend, bucket, *SMALL_MULTIPART)
    data = os.urandom(10 * MiB)
    (m / "big").write_bytes(data)
    assert "-" in backend.client().head_object(Bucket=bucket, Key="big")["ETag"]
    flipped: list[str] = []
    backend.proxy.fault = flip_first_get("/big", flipped)
    backend.proxy.clear()
    with open(m / "big", "ab") as f:
        f.write(b"0123456789")
    assert flipped, "the download was corrupted"
    assert len(for_key(backend, bucket, "big", "GET")) == 2, "fetched again"
    assert body(backend, bucket, "big") == data + b"0123456789"
    assert "corrupted in transit" in m.log_text()


@pytest.mark.semantics("INTEG-WHOLE-READ")
def test_patch_of_small_object_after_corrupted_download(
    mount_factory: Any, backend: Backend
) -> None:
    """The fill before a partial write is fetched again when its bytes are corrupted."""
    bucket = backend.bucket()
    m = mount(mount_factory, backend, bucket)
    data = os.urandom(100_000)
    (m / "small").write_bytes(data)
    m.unmount()
    m.start()
    flipped: list[str] = []
    backend.proxy.fault = flip_first_get("/small", flipped)
    with open(m / "small", "r+b") as f:
        f.seek(10)
        f.write(b"patch")
    assert flipped
    expect = data[:10] + b"patch" + data[15:]
    assert body(backend, bucket, "small") == expect


@pytest.mark.semantics("INTEG-EDGES")
def test_garbled_complete_request_is_sent_again(mount_factory: Any, backend: Backend) -> None:
    """A flipped byte in the CompleteMultipartUpload request (MalformedXML) is not the
    end of the upload: the request is sent again."""
    bucket = backend.bucket()
    m = mount(mount_factory, backend, bucket, *SMALL_MULTIPART)
    data = os.urandom(11 * MiB)
    flipped: list[str] = []

    def fault(r: Any) -> Any:
        if r.method == "POST" and "uploadId=" in r.path and not flipped:
            flipped.append(r.path)
            return "flip"
        return None

    backend.proxy.fault = fault
    (m / "big").write_bytes(data)
    assert flipped
    assert body(backend, bucket, "big") == data
    if backend.name == "rgw":  # moto parses the garbled XML anyway
        assert "MalformedXML" in m.log_text() and "sending it again" in m.log_text()


@pytest.mark.semantics("LOST-UPLOADS")
def test_upload_left_open_by_a_killed_daemon_is_aborted(
    mount_factory: Any, backend: Backend
) -> None:
    bucket = backend.bucket()
    m = mount(mount_factory, backend, bucket, *SMALL_MULTIPART)
    s3 = backend.client()
    data = os.urandom(11 * MiB)
    backend.proxy.fault = lambda r: ("stall", 3) if "partNumber=" in r.path else None
    writer = threading.Thread(target=_write_ignoring_errors, args=(m / "big", data))
    writer.start()
    deadline = time.monotonic() + 30
    while not [r for r in backend.proxy.requests("PUT") if "partNumber=" in r.path]:
        assert time.monotonic() < deadline, "no part was sent"
        time.sleep(0.05)
    assert len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1
    m.kill()
    writer.join(30)
    backend.proxy.fault = None
    m.start()
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert "aborted the unfinished multipart upload of 'big'" in m.log_text()
    assert body(backend, bucket, "big") == data  # its close() had started: uploaded


def _write_ignoring_errors(path: Any, data: bytes) -> None:
    with contextlib.suppress(OSError):
        path.write_bytes(data)


@pytest.mark.semantics("LOST-UPLOADS")
def test_create_sent_twice_leaves_no_stray_upload(mount_factory: Any, backend: Backend) -> None:
    """The answer to CreateMultipartUpload is lost (the server made the upload); botocore
    sends it again: the first upload must not be left open, costing storage forever."""
    bucket = backend.bucket()
    multipart_through_one_fault(mount_factory, backend, bucket, 7 * MiB,
                                lambda r: r.path.endswith("?uploads"), "drop-response")  # fmt: skip


def multipart_through_one_fault(
    mount_factory: Any, backend: Backend, bucket: str, size: int,
    where: Callable[[Any], bool], action: Any,
) -> None:  # fmt: skip
    """A multipart upload whose first POST that `where` accepts meets `action`: the object
    is stored whole and no upload is left open."""
    m = mount(mount_factory, backend, bucket, *SMALL_MULTIPART)
    hit: list[str] = []
    backend.proxy.fault = first("POST", where, action, hit)
    data = os.urandom(size)
    (m / "big").write_bytes(data)
    assert hit, "the fault was not met"
    assert body(backend, bucket, "big") == data
    assert backend.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.mark.semantics("INTEG-EDGES")
def test_complete_answered_200_with_an_error_is_retried(
    mount_factory: Any, backend: Backend
) -> None:
    """S3 may answer CompleteMultipartUpload with 200 and an error in the body."""
    bucket = backend.bucket()
    answer = (200, "InternalError")
    multipart_through_one_fault(mount_factory, backend, bucket, 11 * MiB,
                                lambda r: "uploadId=" in r.path, answer)  # fmt: skip


@pytest.mark.semantics("INTEG-EDGES")
@pytest.mark.parametrize("size", [100_000, 20 * MiB])
def test_get_cut_short_is_read_again(mount_factory: Any, backend: Backend, size: int) -> None:
    bucket = backend.bucket()
    data = os.urandom(size)
    backend.client().put_object(Bucket=bucket, Key="f", Body=data)
    m = mount(mount_factory, backend, bucket)
    cut: list[str] = []
    backend.proxy.fault = first("GET", lambda r: r.key_path.endswith("/f"), "cut-response", cut)
    assert (m / "f").read_bytes() == data
    assert cut


@pytest.mark.semantics("NAME-RENAME")
def test_failure_between_copy_and_delete_of_a_rename_loses_nothing(
    mount_factory: Any, backend: Backend
) -> None:
    bucket = backend.bucket()
    m = mount(mount_factory, backend, bucket)
    (m / "a").write_bytes(b"A" * 5000)
    backend.proxy.fault = lambda r: 403 if r.method == "DELETE" else None
    with pytest.raises(OSError) as e:
        os.rename(m / "a", m / "b")
    assert e.value.errno == errno.EACCES
    backend.proxy.fault = None
    # both names hold the bytes: the copy is there, the original was not deleted
    assert (m / "a").read_bytes() == b"A" * 5000
    assert (m / "b").read_bytes() == b"A" * 5000
    assert sorted(os.listdir(m.path)) == ["a", "b"]
    os.rename(m / "a", m / "b")  # the user tries again: now it completes
    assert keys(backend, bucket) == ["b"] and body(backend, bucket, "b") == b"A" * 5000


@pytest.mark.semantics("LOST-SPOOL")
def test_recovery_with_the_server_down_is_quick_and_retried_later(
    mount_factory: Any, backend: Backend
) -> None:
    """Closed files left by a killed daemon, the server unreachable at the next start:
    one upload is tried, not one per file (a mount held back for minutes); the files are
    shown and stored by the background retry once the server is back, without unmount."""
    bucket = backend.bucket()
    m = mount(mount_factory, backend, bucket, "-o", "retry_window=1,retry_every=1",
              "--retries", "1")  # fmt: skip
    backend.proxy.fault = corrupt_puts
    names = [f"f{i}" for i in range(5)]
    for n in names:
        with pytest.raises(OSError):
            (m / n).write_bytes(n.encode() * 100)
    m.kill()
    backend.proxy.fault = lambda r: "drop" if r.method == "PUT" else None
    backend.proxy.clear()
    m.start()
    tried = {r.key_path for r in backend.proxy.requests("PUT")}
    assert len(tried) == 1, tried
    assert "the server cannot be reached" in m.log_text()
    assert sorted(os.listdir(m.path)) == names
    assert all((m / n).read_bytes() == n.encode() * 100 for n in names)
    backend.proxy.fault = None
    deadline = time.monotonic() + 30
    while sorted(keys(backend, bucket)) != names:
        assert time.monotonic() < deadline, keys(backend, bucket)
        time.sleep(0.3)
    assert all(body(backend, bucket, n) == n.encode() * 100 for n in names)
    assert "retry: 'f0' stored" in m.log_text()


@pytest.mark.semantics("LOST-UPLOADS")
def test_upload_whose_creation_a_kill_interrupted_is_aborted(
    mount_factory: Any, backend: Backend
) -> None:
    """Killed after S3 created the upload, before its id came back: the next mount finds
    the upload by its key and aborts it (found by the soak)."""
    bucket = backend.bucket()
    m = mount(mount_factory, backend, bucket, *SMALL_MULTIPART)
    s3 = backend.client()
    backend.proxy.fault = lambda r: ("stall", 5) if r.path.endswith("?uploads") else None
    data = os.urandom(11 * MiB)
    writer = threading.Thread(target=_write_ignoring_errors, args=(m / "big", data))
    writer.start()
    deadline = time.monotonic() + 30
    while not s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        assert time.monotonic() < deadline, "the upload was not created"
        time.sleep(0.05)
    m.kill()  # the create's answer is still held back
    writer.join(30)
    backend.proxy.fault = None
    m.start()
    assert "whose creation a crash interrupted" in m.log_text()
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert body(backend, bucket, "big") == data  # its close() had started: uploaded
