"""Streaming multipart (issue 16, point 1): a file written in sequence past the stream
threshold sends its parts while it is written; close() sends the rest and completes. The
object appears whole at completion and never before; a rewrite behind the parts sent, a
truncate or a failed part drops the upload (aborted) and the close sends the file whole;
a daemon killed mid-stream leaves no object, and its parts are aborted at the next
mount. Small parts here (5 MiB) to keep the files small."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from s3fuse.model import etag as etag_sums
from tests.conftest import Backend, Mount
from tests.core_harness import CTX, Core, run_core
from tests.servers import RecordingProxy

MiB = 1 << 20
OPTIONS = "part_size=5242880,stream_threshold=10485760"
CHUNK = 128 << 10  # the kernel's largest write


def part_puts(proxy: RecordingProxy) -> list[Any]:
    return [r for r in proxy.requests("PUT") if "partNumber=" in r.path]


def uploads_left(s3: Any, bucket: str) -> list[Any]:
    return list(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except s3.exceptions.ClientError:
        return False
    return True


async def open_new(c: Core, name: str) -> int:
    opened, _ = await c.fs.create(await c.ino(""), name.encode(), 0o644, os.O_WRONLY, CTX)
    return opened.fh


async def write_all(c: Core, fh: int, data: bytes, start: int = 0) -> None:
    for off in range(0, len(data), CHUNK):
        await c.fs.write(fh, start + off, data[off : off + CHUNK])


async def settle(proxy: RecordingProxy, parts: int, timeout: float = 20.0) -> None:
    """Until `parts` UploadParts were answered (they run in the background)."""
    deadline = time.monotonic() + timeout
    while sum(1 for r in part_puts(proxy) if r.status) < parts:
        assert time.monotonic() < deadline, f"only {len(part_puts(proxy))} parts sent"
        await trio.sleep(0.05)


@pytest.mark.semantics("STORE-STREAM")
def test_parts_go_up_while_the_file_is_written_and_the_close_completes(
    server: Backend, tmp_path: Path
) -> None:
    """On moto and on Ceph RGW (which checks every part's Content-MD5)."""
    data = os.urandom(23 * MiB)  # 4 full parts while written, a 3 MiB tail at close
    written: list[int] = []
    s3, proxy, bucket = server.client(), server.proxy, server.bucket()

    async def body(c: Core) -> None:
        proxy.clear()
        fh = await open_new(c, "big")
        await write_all(c, fh, data)
        written.append(time.time_ns())
        await settle(proxy, 4)
        sent = part_puts(proxy)
        assert len(sent) == 4 and not exists(s3, bucket, "big")  # no partial object
        for r in sent:  # every part with its Content-MD5, of the bytes it carried
            assert r.headers.get("content-md5") and r.body_md5
        at_close = len(proxy.records)
        await c.fs.flush(fh)
        await c.fs.release(fh)
        late = [r for r in proxy.records[at_close:] if "partNumber=" in r.path]
        assert len(late) == 1 and late[0].body_len == 3 * MiB  # only the tail at close
        assert await c.read("big") == data

    run_core(bucket, proxy.url, tmp_path / "spool", body, OPTIONS)
    head = s3.head_object(Bucket=bucket, Key="big")
    md5s = [hashlib.md5(data[o : o + 5 * MiB]).digest() for o in range(0, len(data), 5 * MiB)]
    # the parts' ETag, or (moto recomputes it for the copy that restated the metadata)
    # the MD5 of the whole: S3's ETag of exactly these bytes either way
    assert head["ETag"].strip('"') in (etag_sums.multipart(md5s), hashlib.md5(data).hexdigest())
    md = head["Metadata"]
    # the copy after completion stated the final times and the block checksums
    assert "s3fuse-blocks" in md and int(md["s3fuse-part-size"]) == 5 * MiB
    assert int(float(md["mtime"]) * 1e9) >= written[0] - 10**9
    assert uploads_left(s3, bucket) == []

    async def check(c: Core) -> None:  # another mount reads it, checked by blocks
        assert await c.pread("big", 17 * MiB, 4096) == data[17 * MiB : 17 * MiB + 4096]
        assert c.fs.store.stats.corrupted_reads == 0

    run_core(bucket, proxy.url, tmp_path / "spool2", check, OPTIONS)


@pytest.mark.semantics("STORE-STREAM")
def test_a_long_stream_grows_its_parts_and_states_how_they_were_cut(
    server: Backend, tmp_path: Path
) -> None:
    """A streamed upload does not know its final size: its parts double after every
    `part_growth` of them (1000 by default, 3 here), so 10,000 parts hold 5 TiB. The
    object's metadata states the cut, so its multipart ETag is checked by a reader, and
    a file that stayed below the first run keeps the plain part size."""
    data = os.urandom(33 * MiB)  # parts of 5, 5, 5, 10 MiB while written, 8 MiB at close
    s3, proxy, bucket = server.client(), server.proxy, server.bucket()

    async def body(c: Core) -> None:
        c.fs.spool.part_growth = 3
        proxy.clear()
        fh = await open_new(c, "long")
        await write_all(c, fh, data)
        await settle(proxy, 4)
        await c.fs.flush(fh)
        await c.fs.release(fh)
        fh = await open_new(c, "short")  # three parts: no doubling
        await write_all(c, fh, data[: 13 * MiB])
        await c.fs.flush(fh)
        await c.fs.release(fh)

    run_core(bucket, proxy.url, tmp_path / "spool", body, OPTIONS)
    sizes = [r.body_len for r in part_puts(proxy) if "/long?" in r.path]
    assert sizes == [5 * MiB, 5 * MiB, 5 * MiB, 10 * MiB, 8 * MiB]
    cuts = [0, 5 * MiB, 10 * MiB, 15 * MiB, 25 * MiB, 33 * MiB]
    md5s = [hashlib.md5(data[a:b]).digest() for a, b in itertools.pairwise(cuts)]
    head = s3.head_object(Bucket=bucket, Key="long")
    # moto recomputes the ETag of the copy that restated the metadata: then the MD5
    assert head["ETag"].strip('"') in (etag_sums.multipart(md5s), hashlib.md5(data).hexdigest())
    assert head["Metadata"]["s3fuse-part-size"] == f"{5 * MiB}x2/3"
    short = s3.head_object(Bucket=bucket, Key="short")["Metadata"]
    assert short["s3fuse-part-size"] == str(5 * MiB)
    got = s3.get_object(Bucket=bucket, Key="long")
    plan = etag_sums.PartPlan.parse(got["Metadata"]["s3fuse-part-size"])
    check = etag_sums.ETagCheck(got["ETag"].strip('"'), len(data), plan)
    check.update(got["Body"].read())
    assert not check.guessed and check.result() is True
    assert uploads_left(s3, bucket) == []

    async def check_read(c: Core) -> None:  # another mount reads it, checked
        assert await c.read("long") == data
        assert c.fs.store.stats.corrupted_reads == 0

    run_core(bucket, proxy.url, tmp_path / "spool2", check_read, OPTIONS)


@pytest.mark.semantics("STORE-STREAM")
@pytest.mark.parametrize("change", ["rewrite", "truncate", "part-fails"])
def test_an_upload_that_cannot_be_completed_is_dropped_and_the_close_sends_it_whole(
    bucket: str, s3: Any, proxy: RecordingProxy, tmp_path: Path, change: str
) -> None:
    data = bytearray(os.urandom(18 * MiB))

    async def body(c: Core) -> None:
        if change == "part-fails":
            proxy.fault = lambda r: (400, "InvalidPart") if "partNumber=2" in r.path else None
        fh = await open_new(c, "f")
        await write_all(c, fh, bytes(data))
        await settle(proxy, 3)
        if change == "rewrite":  # seek back into part 1, already sent
            await c.fs.write(fh, 100, b"REWRITTEN")
            data[100:109] = b"REWRITTEN"
        elif change == "truncate":
            opened = await c.fs.open(await c.ino("f"), os.O_WRONLY | os.O_TRUNC, CTX)
            await c.fs.release(opened.fh)
            await write_all(c, fh, b"short")
            del data[5:]
            data[:5] = b"short"
        await c.fs.flush(fh)
        await c.fs.release(fh)
        proxy.fault = None

    run_core(bucket, proxy.url, tmp_path / "spool", body, OPTIONS)
    got = s3.get_object(Bucket=bucket, Key="f")
    assert got["Body"].read() == bytes(data)
    assert "-" not in got["ETag"]  # sent whole: one PutObject (below multipart_threshold)
    assert uploads_left(s3, bucket) == []  # the dropped upload was aborted


@pytest.mark.semantics("STORE-STREAM")
def test_a_daemon_killed_mid_stream_leaves_no_object_and_its_parts_are_aborted(
    bucket: str, s3: Any, proxy: RecordingProxy, tmp_path: Path
) -> None:
    async def dies(c: Core) -> None:
        fh = await open_new(c, "f")
        await write_all(c, fh, os.urandom(16 * MiB))
        await settle(proxy, 3)

    run_core(bucket, proxy.url, tmp_path / "spool", dies, OPTIONS, unmount=False)
    assert not exists(s3, bucket, "f")
    assert len(uploads_left(s3, bucket)) == 1

    async def next_mount(c: Core) -> None:
        assert await c.listdir("") == []  # an open file's upload is never completed

    run_core(bucket, proxy.url, tmp_path / "spool", next_mount, OPTIONS)
    assert uploads_left(s3, bucket) == [] and not exists(s3, bucket, "f")
    kept = list((tmp_path / "spool" / "recovered").rglob("*"))
    assert any(p.is_file() and p.stat().st_size == 16 * MiB for p in kept)


@pytest.mark.mounted
def test_sigkill_mid_stream_through_the_kernel(
    mount_factory: Any, bucket: str, s3: Any, proxy: RecordingProxy
) -> None:
    m: Mount = mount_factory(bucket, "-o", OPTIONS)
    f = open(m / "f", "wb")  # noqa: SIM115 - the daemon dies under it
    try:
        for _ in range(16):
            f.write(os.urandom(MiB))
            f.flush()
        deadline = time.monotonic() + 20
        while len([r for r in part_puts(proxy) if r.status]) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        m.kill()
    finally:
        with contextlib.suppress(OSError):  # ENOTCONN: the daemon is gone
            f.close()
    assert not exists(s3, bucket, "f")
    m2 = mount_factory(bucket, "-o", OPTIONS)
    assert os.listdir(m2.path) == []
    assert uploads_left(s3, bucket) == []


@pytest.mark.parametrize("options", [OPTIONS, OPTIONS + ",conflict=detect"])
def test_fsync_mid_stream_stores_what_was_written_and_the_close_the_rest(
    server: Backend, tmp_path: Path, options: str
) -> None:
    """fsync completes the streamed upload (the object holds the bytes so far); writing
    on starts another, which the close completes. With conflict=detect the completions
    carry the conditions (If-None-Match, then If-Match the fsync's version)."""
    first, more = os.urandom(12 * MiB), os.urandom(9 * MiB)
    s3, bucket = server.client(), server.bucket()

    async def body(c: Core) -> None:
        fh = await open_new(c, "f")
        await write_all(c, fh, first)
        await c.fs.fsync(fh, False)
        assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == first
        await write_all(c, fh, more, start=len(first))
        await c.fs.flush(fh)
        await c.fs.release(fh)

    run_core(bucket, server.proxy.url, tmp_path / "spool", body, options)
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == first + more
    assert uploads_left(s3, bucket) == []
