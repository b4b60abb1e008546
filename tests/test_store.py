"""store and spool against a real moto server process (through the recording proxy)."""

from __future__ import annotations

import base64
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import trio

from s3fuse.core.readahead import Reader, Stream, keep_for
from s3fuse.errors import StoreError
from s3fuse.s3.client import Store, parse_timestamp
from s3fuse.s3.types import StoreConfig
from s3fuse.spool import journal
from s3fuse.spool.entry import CLOSING, OPEN
from s3fuse.spool.spool import Spool
from s3fuse.tasks import Background
from tests.servers import RecordingProxy, free_port


def make_store(url: str, bucket: str, **kw: Any) -> Store:
    return Store(StoreConfig(bucket=bucket, endpoint_url=url, max_attempts=2, **kw))


@pytest.mark.semantics("INTEG-MD5")
def test_put_sends_content_md5_and_checks_etag(proxy: RecordingProxy, bucket: str, s3: Any) -> None:
    store = make_store(proxy.url, bucket)
    body = os.urandom(300_000)
    md5 = hashlib.md5(body).digest()
    proxy.clear()
    res = trio.run(
        lambda: store.put(
            "dir/a.bin", body, md5=md5, size=len(body), headers={"Metadata": {"mode": "33188"}}
        )
    )
    assert res.etag == md5.hex()
    puts = proxy.requests("PUT", "/dir/a.bin")
    assert len(puts) == 1
    assert puts[0].headers["content-md5"] == base64.b64encode(md5).decode()
    assert puts[0].body_md5 == md5.hex()
    # plain Content-MD5 only: no flexible-checksum headers by default
    assert not [h for h in puts[0].headers if h.startswith("x-amz-checksum")]
    # the signed Content-MD5 protects the body: no second pass over it for SHA-256
    assert puts[0].headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    assert "expect" not in puts[0].headers  # a small body is sent without 100-continue
    head = s3.head_object(Bucket=bucket, Key="dir/a.bin")
    assert head["Metadata"] == {"mode": "33188"}
    assert s3.get_object(Bucket=bucket, Key="dir/a.bin")["Body"].read() == body
    signed = make_store(proxy.url, bucket, sign_payload=True)
    trio.run(lambda: signed.put("dir/b.bin", body, md5=md5, size=len(body), headers={}))
    sha = proxy.requests("PUT", "/dir/b.bin")[0].headers["x-amz-content-sha256"]
    assert sha == hashlib.sha256(body).hexdigest()
    big = os.urandom(3 << 20)  # a large body still waits for the server's go-ahead
    trio.run(lambda: store.put("dir/c.bin", big, md5=hashlib.md5(big).digest(), size=len(big),
                               headers={}))  # fmt: skip
    assert proxy.requests("PUT", "/dir/c.bin")[0].headers["expect"] == "100-continue"


def test_put_with_wrong_md5_is_an_error(proxy: RecordingProxy, bucket: str) -> None:
    # moto does not check Content-MD5 itself, so the ETag comparison must catch this.
    store = make_store(proxy.url, bucket)
    with pytest.raises(StoreError) as e:
        trio.run(
            lambda: store.put("k", b"data", md5=hashlib.md5(b"other").digest(), size=4, headers={})
        )
    assert e.value.code == "ChecksumMismatch"


def test_head_list_range_delete(proxy: RecordingProxy, bucket: str, s3: Any) -> None:
    store = make_store(proxy.url, bucket)
    with ThreadPoolExecutor(8) as pool:  # 1005 objects: more than one LIST page
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"many/f{i:04d}", Body=b"x"),
                      range(1005)))  # fmt: skip
    s3.put_object(Bucket=bucket, Key="many/sub/inner", Body=b"y")
    s3.put_object(Bucket=bucket, Key="big", Body=bytes(range(256)) * 100)

    async def go() -> None:
        lst = await store.list_dir("many/")
        assert len(lst.objects) == 1005 and lst.prefixes == ["many/sub/"]
        assert not lst.truncated
        first = await store.list_dir("many/", max_pages=1)
        assert first.truncated and len(first.objects) == 1000
        info = await store.head("big")
        assert info is not None and info.size == 25600
        assert await store.head("missing") is None
        proxy.clear()
        part = await store.get_range("big", 256, 512)
        assert part == bytes(range(256))
        gets = proxy.requests("GET", "/big")
        assert gets[0].headers["range"] == "bytes=256-511"
        await store.delete("big")
        assert await store.head("big") is None

    trio.run(go)


@pytest.mark.semantics("OPS-START")
def test_missing_bucket_and_unreachable_endpoint(proxy: RecordingProxy) -> None:
    with pytest.raises(StoreError) as e:
        make_store(proxy.url, "no-such-bucket-here").check_bucket_sync()
    assert e.value.code in ("NoSuchBucket", "404")
    with pytest.raises(StoreError) as e:
        make_store(f"http://127.0.0.1:{free_port()}", "b").check_bucket_sync()
    assert e.value.code == "EndpointUnreachable"


def test_store_counts_requests(proxy: RecordingProxy, bucket: str) -> None:
    store = make_store(proxy.url, bucket)
    trio.run(lambda: store.head("nothing"))
    assert store.stats.requests["HeadObject"] == 1


# ------------------------------------------------------------------ spool


def test_spool_incremental_md5_and_journal(
    tmp_path: Path, proxy: RecordingProxy, bucket: str, s3: Any
) -> None:
    store = make_store(proxy.url, bucket)
    spool = Spool(str(tmp_path / "sp"), store)
    spool.open()
    assert (os.stat(spool.dir).st_mode & 0o777) == 0o700

    async def go() -> None:
        e = spool.new("seq")
        assert (os.stat(e.data_path).st_mode & 0o777) == 0o600
        assert journal.read(e.journal_path)["state"] == OPEN
        e.touch()
        data = os.urandom(200_000)
        for off in range(0, len(data), 65536):
            await e.write(off, data[off : off + 65536])
        assert e._hashed == len(data)  # hashed while written, not re-read at close
        res = await spool.commit(e, {})
        assert res is not None and res.etag == hashlib.md5(data).hexdigest()
        assert not os.path.exists(e.journal_path)  # acknowledged: no journal
        assert await spool.commit(e, {}) is None  # idempotent per dirty generation
        # a random-access write invalidates the running hash, the upload is still right
        await e.write(10, b"XYZ")
        assert e._hashed == -1
        res = await spool.commit(e, {})
        want = data[:10] + b"XYZ" + data[13:]
        assert res is not None and res.etag == hashlib.md5(want).hexdigest()
        assert s3.get_object(Bucket=bucket, Key="seq")["Body"].read() == want
        e.close()

    trio.run(go)
    spool.close()


def test_spool_hashes_large_writes_in_the_background(
    tmp_path: Path, proxy: RecordingProxy, bucket: str, s3: Any
) -> None:
    """1 MiB chunks are hashed by a worker thread while more arrive; more than the
    window waits; the digest at close is the MD5 of the whole file; a cancelled hashing
    task makes the upload re-read the spool file instead of sending a wrong MD5."""
    store = make_store(proxy.url, bucket)
    tasks = Background()
    spool = Spool(str(tmp_path / "sp"), store, tasks=tasks)
    spool.open()
    data = os.urandom(20 << 20)

    async def go() -> None:
        async with tasks.serving():
            e = spool.new("big")
            for off in range(0, len(data), 1 << 20):
                await e.write(off, data[off : off + (1 << 20)])
            assert await e.hashed_md5() == hashlib.md5(data).digest()
            res = await spool.commit(e, {})
            assert res is not None and res.etag == hashlib.md5(data).hexdigest()
            e.close()
            # hashing interrupted (at whatever point the cancel lands): the upload's MD5
            # is still that of the bytes written
            f = spool.new("cut")
            with trio.CancelScope() as scope:
                for off in range(0, 4 << 20, 1 << 20):
                    await f.write(off, data[off : off + (1 << 20)])
                scope.cancel()
                await f._hasher._idle.wait()
            res = await spool.commit(f, {})
            assert res is not None and res.etag == hashlib.md5(data[: 4 << 20]).hexdigest()
            f.close()

    trio.run(go)
    assert s3.head_object(Bucket=bucket, Key="big")["ContentLength"] == len(data)
    spool.close()


def test_spool_lock_refuses_second_daemon(
    tmp_path: Path, proxy: RecordingProxy, bucket: str
) -> None:
    store = make_store(proxy.url, bucket)
    a = Spool(str(tmp_path / "sp"), store)
    a.open()
    b = Spool(str(tmp_path / "sp"), store)
    with pytest.raises(Exception, match="in use"):
        b.open()
    a.close()


@pytest.mark.semantics("LOST-CRASH")
def test_spool_recovery_classifies(
    tmp_path: Path, proxy: RecordingProxy, bucket: str, s3: Any
) -> None:
    store = make_store(proxy.url, bucket)
    spool = Spool(str(tmp_path / "sp"), store)
    spool.open()
    closing = spool.new("was/closing")
    trio.run(closing.write, 0, b"closed data")
    closing.set_state(CLOSING, {"Metadata": {"mode": "33261"}})
    still_open = spool.new("was/open")
    trio.run(still_open.write, 0, b"partial")
    stored = spool.new("was/stored")
    trio.run(stored.write, 0, b"done")
    stored.set_state("clean")
    spool.close()

    again = Spool(str(tmp_path / "sp"), store)
    again.open()
    rec = trio.run(again.recover)
    uploaded, moved = rec.uploaded, rec.moved
    assert uploaded == ["was/closing"] and rec.kept == []
    obj = s3.get_object(Bucket=bucket, Key="was/closing")
    assert obj["Body"].read() == b"closed data" and obj["Metadata"] == {"mode": "33261"}
    assert len(moved) == 1 and Path(moved[0]).read_bytes() == b"partial"
    assert "recovered" in moved[0]
    with pytest.raises(s3.exceptions.ClientError):
        s3.head_object(Bucket=bucket, Key="was/open")  # nothing partial uploaded
    left = [n for n in os.listdir(again.dir) if n.endswith((".data", ".json"))]
    assert left == []
    again.close()


def test_read_ahead_serves_parallel_out_of_order_reads(
    proxy: RecordingProxy, bucket: str, s3: Any
) -> None:
    """The kernel reads ahead with several READs in flight (more with a larger bdi
    read_ahead_kb): a read far behind the newest must still get its own bytes."""
    store = make_store(proxy.url, bucket)
    data = os.urandom(48 << 20)
    s3.put_object(Bucket=bucket, Key="ra.bin", Body=data)
    proxy.clear()

    async def go() -> None:
        tasks = Background()
        async with tasks.serving():

            async def fetch(start: int, end: int, whole: bool) -> tuple[int, bytes]:
                return start, await store.get_range("ra.bin", start, end)

            reader = Reader(store, "ra.bin", len(data), fetch, tasks)
            step = 1 << 20
            assert await reader.read(0, step) == data[:step]  # the first read starts a stream
            got: dict[int, bytes] = {}

            async def one(off: int) -> None:
                got[off] = await reader.read(off, step)

            for group in range(step, len(data), 4 * step):  # then 4 at once, newest first
                async with trio.open_nursery() as reads:
                    for off in reversed(range(group, min(group + 4 * step, len(data)), step)):
                        reads.start_soon(one, off)
                        await trio.sleep(0.01)  # arrive in this order
            assert len(proxy.requests("GET", "/ra.bin")) <= 2, "served by one stream"
            # far out of order (more than the stream keeps): still the right bytes
            reader.close()
            reader = Reader(store, "ra.bin", len(data), fetch, tasks)
            await reader.read(0, step)
            async with trio.open_nursery() as reads:  # all waiting at once
                for off in reversed(range(step, 24 * step, 3 * step)):
                    reads.start_soon(one, off)
            reader.close()
            assert len(got) == 47
            for off, chunk in got.items():
                assert chunk == data[off : off + step], f"wrong bytes at {off}"

    trio.run(go)


def test_a_stream_keeps_what_the_kernels_read_ahead_window_may_still_ask_for(
    proxy: RecordingProxy, bucket: str, s3: Any
) -> None:
    """With read_ahead_kb=16384 the kernel answers the newest READ of its window and only
    then the ones up to ~16 MiB behind it. The stream keeps twice the window behind the
    newest read (keep_for), so they come from the one GET; with the 4 MiB it kept before,
    each such read was a ranged GET of its own (on moto: 25 MB/s instead of ~400)."""
    store = make_store(proxy.url, bucket)
    step = 1 << 20
    data = os.urandom(48 * step)
    s3.put_object(Bucket=bucket, Key="window.bin", Body=data)

    async def window_reads(keep: int) -> int:
        """GETs for reading `data` as such a kernel does."""
        proxy.clear()
        tasks = Background()
        async with tasks.serving():

            async def fetch(start: int, end: int, whole: bool) -> tuple[int, bytes]:
                return start, await store.get_range("window.bin", start, end)

            reader = Reader(store, "window.bin", len(data), fetch, tasks, keep=keep)
            for group in range(0, len(data), 16 * step):
                newest = group + 15 * step
                assert await reader.read(newest, step) == data[newest : newest + step]
                for off in range(group, newest, step):  # then the rest of the window
                    assert await reader.read(off, step) == data[off : off + step], off
            reader.close()
        return len(proxy.requests("GET", "/window.bin"))

    assert keep_for(16384) >= 16 * step
    assert trio.run(window_reads, keep_for(16384)) <= 2  # one stream
    assert trio.run(window_reads, keep_for(1024)) > 10  # the default window's keep: too little


def test_a_read_waiting_on_a_stream_that_closes_does_not_hang(
    proxy: RecordingProxy, bucket: str, s3: Any
) -> None:
    """Several READs wait on one stream; when the reader moves to a new stream (after a
    failed block, or a jump back to 0) the old one is closed: its waiting reads must end
    (and read directly), not wait for bytes nobody fetches any more: a READ that never
    returns hangs the application (a CI run once hung so in test_verified_reads)."""
    store = make_store(proxy.url, bucket)
    data = os.urandom(16 << 20)
    s3.put_object(Bucket=bucket, Key="slow.bin", Body=data)

    async def go() -> None:
        tasks = Background()
        async with tasks.serving():
            stream = Stream(store, "slow.bin", 0, len(data), tasks)
            outcome: list[BaseException] = []

            async def wait_far() -> None:
                try:
                    await stream.read(10 << 20, 1 << 20)
                except StoreError as e:
                    outcome.append(e)

            with trio.fail_after(2):  # the answer itself is held back 2.5 s
                async with trio.open_nursery() as reads:
                    reads.start_soon(wait_far)
                    await trio.sleep(0.3)
                    stream.close()
            assert [getattr(e, "code", None) for e in outcome] == ["ReadAheadClosed"]
            assert not stream.can_serve(0)

    proxy.fault = lambda r: ("stall", 2.5) if r.method == "GET" else None
    try:
        trio.run(go)
    finally:
        proxy.fault = None


def test_multipart_parts_are_streamed_from_the_spool_not_held_in_memory(
    moto: Any, bucket: str, s3: Any, tmp_path: Path
) -> None:
    """4 parts of 8 MiB in flight: Python allocations stay far below one part (the old
    code read each part into memory: 32 MiB at once). Direct to moto: the recording proxy
    lives in this process and buffers bodies."""
    import tracemalloc

    data = os.urandom(1 << 20) * 40
    path = tmp_path / "big"
    path.write_bytes(data)
    store = make_store(moto.url, bucket)

    async def main() -> None:
        await store.put_multipart(
            "big", str(path), size=len(data), part_size=8 << 20, headers={}, concurrency=4
        )

    tracemalloc.start()
    try:
        trio.run(main)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2**20:.1f} MiB allocated at the peak"
    head = s3.head_object(Bucket=bucket, Key="big")
    assert head["ETag"].strip('"').endswith("-5")
    got = s3.get_object(Bucket=bucket, Key="big")["Body"].read()
    assert hashlib.md5(got).digest() == hashlib.md5(data).digest()


@pytest.mark.semantics("LOST-NO-REPLAY")
def test_spool_recovery_keeps_failed_uploads_and_drops_superseded_ones(
    tmp_path: Path, proxy: RecordingProxy, bucket: str, s3: Any
) -> None:
    """Of two closed entries for one key only the newer is uploaded (the older goes to
    recovered/); a closed entry whose upload fails comes back as a live entry."""
    store = make_store(proxy.url, bucket)
    spool = Spool(str(tmp_path / "sp"), store, retry_window=0)
    spool.open()
    for key, data in (("k", b"older"), ("k", b"newer"), ("failing", b"kept bytes")):
        e = spool.new(key)
        trio.run(e.write, 0, data)
        e.set_state(CLOSING, {"Metadata": {"mode": "33188"}})
    spool.close()

    again = Spool(str(tmp_path / "sp"), store, retry_window=0)
    again.open()
    proxy.fault = lambda r: (403, "AccessDenied") if "failing" in r.path else None
    try:
        rec = trio.run(again.recover)
    finally:
        proxy.fault = None
    assert rec.uploaded == ["k"]
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"newer"
    assert len(rec.moved) == 1 and Path(rec.moved[0]).read_bytes() == b"older"
    [kept] = rec.kept
    assert kept.entry.key == "failing" and kept.entry.dirty and kept.entry.size == 10
    assert kept.entry.read(0, 100) == b"kept bytes"
    assert kept.headers == {"Metadata": {"mode": "33188"}}
    assert journal.read(kept.entry.journal_path)["state"] == CLOSING
    assert again.failed["failing"].startswith("AccessDenied")
    kept.entry.close_fd()
    again.close()


@pytest.mark.parametrize(
    "value",
    ["Tue, 01 Dec 2026 21:30:12 GMT", "2026-12-01T21:30:12.345Z", "2026-12-01T21:30:12+00:00",
     "1796160612", "Tue, 1 Dec 2026 21:30:12 GMT", "01 Dec 2026 21:30:12 GMT"],
)  # fmt: skip
def test_timestamps_parse_as_botocore_parses_them(value: str) -> None:
    """The fast paths (ISO 8601 of listings, HTTP dates of Last-Modified headers) give
    what botocore's own parser gives, and anything else goes to it."""
    import botocore.utils  # only the s3 layer imports it at module level (test_layers)

    assert parse_timestamp(value) == botocore.utils.parse_timestamp(value)
    assert parse_timestamp(value).utcoffset() is not None
