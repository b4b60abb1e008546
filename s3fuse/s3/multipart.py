"""Multipart uploads from a spool file: parts read from the file in place (never held
in memory), each with its own Content-MD5 and sent again alone when corrupted, completed
atomically and checked against the parts' ETag; aborted on failure; a create or complete
that botocore sent twice is sorted out (stray uploads aborted, a lost answer confirmed)."""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import botocore.exceptions
import trio

from s3fuse.errors import COMPLETE_GARBLED, CORRUPTED, StoreError
from s3fuse.model import etag as etag_sums
from s3fuse.model import requests
from s3fuse.model.etag import PartPlan, part_size_for
from s3fuse.model.meta import META_PART_SIZE
from s3fuse.s3.parallel import each
from s3fuse.s3.types import PutResult, server_time_ns, strip_etag

if TYPE_CHECKING:
    from s3fuse.s3.client import Store

log = logging.getLogger(__name__)

PART_ATTEMPTS = 3  # a part corrupted in transit is sent again, alone
COMPLETE_ATTEMPTS = 3
MD5_CHUNK = 256 << 10  # a part's MD5 is read in pieces this large
STRAY_SLACK = 10  # seconds: a stray multipart upload began this much before ours at most


class _Section(io.RawIOBase):
    """Bytes [off, off + length) of an open file as a seekable stream: a part's body,
    read by the HTTP client block by block (and again from 0 on a retry)."""

    def __init__(self, fd: int, off: int, length: int) -> None:
        super().__init__()
        self._fd, self._off, self._len, self._pos = fd, off, length, 0

    def __len__(self) -> int:
        return self._len

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._len}[whence]
        self._pos = min(max(base + pos, 0), self._len)
        return self._pos

    def readinto(self, buf: Any) -> int:
        n = min(len(buf), self._len - self._pos)
        if n <= 0:
            return 0
        # straight into the caller's buffer: parts in flight hold no copy of it
        got = os.preadv(self._fd, [memoryview(buf)[:n]], self._off + self._pos)
        if got < n:
            raise StoreError("SpoolChanged", "the spool file is shorter than the upload")
        self._pos += n
        return n

    def md5(self) -> bytes:
        h = hashlib.md5()
        chunk = bytearray(MD5_CHUNK)  # one buffer, reused
        view = memoryview(chunk)
        for pos in range(0, self._len, MD5_CHUNK):
            n = os.preadv(self._fd, [view[: min(MD5_CHUNK, self._len - pos)]], self._off + pos)
            h.update(view[:n])
        return h.digest()


async def create(store: Store, key: str, headers: dict[str, Any], plan: PartPlan) -> str:
    """CreateMultipartUpload with every header of the object (and the part size, so that
    a reader can check the multipart ETag); an upload a retried create left behind is
    aborted."""
    retried: list[datetime] = []  # set when botocore sent the create more than once

    def do() -> str:
        started = datetime.now(UTC)
        r = store._client.create_multipart_upload(
            Bucket=store.bucket, Key=key, **requests.multipart_create(headers, plan),
            **store._ssec,
        )  # fmt: skip
        if r.get("ResponseMetadata", {}).get("RetryAttempts"):
            retried.append(started)
        return str(r["UploadId"])

    upload_id = await store._run(store.upload_limiter, "CreateMultipartUpload", key, do)
    if retried:
        # an earlier try may have created an upload whose answer was lost: no one
        # would ever complete or abort it
        with trio.CancelScope(shield=True):
            await abort_strays(store, key, upload_id, retried[0])
    return upload_id


def _upload_part(
    store: Store, key: str, upload_id: str, path: str, num: int, off: int, length: int
) -> tuple[str, bytes]:
    """One part, in a worker thread: streamed from the spool file (hashed first, then
    sent), never held in memory, so RSS stays flat whatever the part size and
    concurrency; sent again when S3 rejects it as corrupted or stores another MD5."""
    with open(path, "rb") as f:
        section = _Section(f.fileno(), off, length)
        md5 = section.md5()
        body = io.BufferedReader(section, 1 << 20)  # the client reads 8-16 KiB at a time
        for attempt in range(1, PART_ATTEMPTS + 1):
            body.seek(0)
            try:
                r = store._client.upload_part(
                    Bucket=store.bucket, Key=key, UploadId=upload_id, PartNumber=num,
                    Body=body, ContentLength=length,
                    ContentMD5=requests.content_md5(md5), **store._ssec,
                )  # fmt: skip
            except botocore.exceptions.ClientError as e:
                code = str(e.response.get("Error", {}).get("Code", ""))
                if code in CORRUPTED and attempt < PART_ATTEMPTS:
                    log.warning("part %d of %r corrupted in transit (%s); sending "
                                "it again", num, key, code)  # fmt: skip
                    continue
                raise
            etag = strip_etag(r.get("ETag"))
            if store._md5_etag_expected(r) and etag and etag != md5.hex():
                if attempt < PART_ATTEMPTS:
                    log.warning("part %d of %r stored with ETag %s, expected %s; "
                                "sending it again", num, key, etag, md5.hex())  # fmt: skip
                    continue
                raise StoreError("ChecksumMismatch", f"part {num}: ETag {etag} != "
                                 f"MD5 {md5.hex()}", op="UploadPart", key=key)  # fmt: skip
            store.stats.add_bytes(up=length)
            return etag, md5
    raise AssertionError("unreachable")


async def send_part(
    store: Store, key: str, upload_id: str, path: str, num: int, off: int, length: int
) -> tuple[str, bytes]:
    """UploadPart of bytes [off, off + length) of a spool file; its ETag and MD5."""
    return await store._run(
        store.upload_limiter, "UploadPart", key,
        lambda: _upload_part(store, key, upload_id, path, num, off, length),
    )  # fmt: skip


async def complete(
    store: Store,
    key: str,
    upload_id: str,
    parts: list[tuple[int, str, bytes]],
    plan: PartPlan,
    conditions: dict[str, str] | None = None,
) -> PutResult:
    """CompleteMultipartUpload of (number, ETag, MD5) parts, checked: the object's ETag
    must be the one its parts make. A complete whose answer was lost is confirmed."""
    listed = [{"PartNumber": n, "ETag": f'"{etag}"'} for n, etag, _ in parts]
    expected = etag_sums.multipart([md5 for _, _, md5 in parts])
    verifiable: list[bool] = []

    def do() -> PutResult:
        for attempt in range(1, COMPLETE_ATTEMPTS + 1):
            try:
                r = store._client.complete_multipart_upload(
                    Bucket=store.bucket, Key=key, UploadId=upload_id,
                    MultipartUpload={"Parts": listed}, **(conditions or {}),
                )  # fmt: skip
            except botocore.exceptions.ClientError as e:
                code = str(e.response.get("Error", {}).get("Code", ""))
                if code == "NoSuchUpload":
                    # a retried request whose first try completed (its answer lost)
                    done = completed_as(store, key, expected)
                    if done is not None:
                        return done
                if code in COMPLETE_GARBLED and attempt < COMPLETE_ATTEMPTS:
                    log.warning("completing the upload of %r: %s (request corrupted "
                                "in transit?); sending it again", key, code)  # fmt: skip
                    continue
                raise
            verifiable.append(store._md5_etag_expected(r))
            return PutResult(strip_etag(r.get("ETag")), r.get("VersionId"),
                             last_modified_ns=server_time_ns(r))  # fmt: skip
        raise AssertionError("unreachable")

    res = await store._run(store.upload_limiter, "CompleteMultipartUpload", key, do)
    if not res.etag:
        # RGW answers CompleteMultipartUpload with an empty ETag: ask with HEAD
        info = await store.head(key)
        res.etag = info.etag if info else ""
    if res.etag and res.etag != expected and all(verifiable) and "-" in res.etag:
        raise StoreError("ChecksumMismatch", f"S3 holds ETag {res.etag}, the parts give "
                         f"{expected}", op="CompleteMultipartUpload", key=key)  # fmt: skip
    res.metadata[META_PART_SIZE] = plan.settled(len(parts)).encode()
    return res


class Upload:
    """A multipart upload under way that is fed part by part (spool/stream.py)."""

    def __init__(self, store: Store, key: str, upload_id: str, plan: PartPlan) -> None:
        self.store, self.key, self.upload_id, self.plan = store, key, upload_id, plan

    async def send_part(self, path: str, num: int, off: int, length: int) -> tuple[str, bytes]:
        return await send_part(self.store, self.key, self.upload_id, path, num, off, length)

    async def complete(
        self, parts: list[tuple[int, str, bytes]], conditions: dict[str, str] | None
    ) -> PutResult:
        return await complete(self.store, self.key, self.upload_id, parts, self.plan, conditions)

    async def abort(self, track: Callable[[str | None], None] | None = None) -> None:
        await abort(self.store, self.key, self.upload_id, track)


async def put_multipart(
    store: Store,
    key: str,
    path: str,
    *,
    size: int,
    part_size: int,
    headers: dict[str, Any],
    conditions: dict[str, str] | None = None,
    concurrency: int = 4,
    on_progress: Callable[[int], None] | None = None,
    track: Callable[[str | None], None] | None = None,
) -> PutResult:
    """A multipart upload from a spool file: parts in parallel, each with its own
    Content-MD5 (a part S3 rejects or stores wrongly is sent again, alone), completed
    atomically; aborted when it fails or is cancelled, so no parts are left behind.
    track("") is called before the upload is created, track(upload_id) once it
    exists, track(None) once it is
    completed or aborted (a process killed in between leaves it to be aborted)."""
    part_size = part_size_for(size, part_size)
    plan = PartPlan(part_size)
    ranges = [(n + 1, off, min(part_size, size - off))
              for n, off in enumerate(range(0, max(size, 1), part_size))]  # fmt: skip
    if track is not None:
        track("")  # being created: a process killed before the answer leaves no id
    upload_id = await create(store, key, headers, plan)
    if track is not None:
        track(upload_id)
    etags: dict[int, tuple[str, bytes]] = {}

    async def one(part: tuple[int, int, int]) -> None:
        num, off, length = part
        etags[num] = await send_part(store, key, upload_id, path, num, off, length)
        if on_progress is not None:
            on_progress(length)

    try:
        errors = await each(ranges, one, at_once=concurrency)
        if errors:
            raise errors[0]
        parts = [(n, *etags[n]) for n, _, _ in ranges]
        res = await complete(store, key, upload_id, parts, plan, conditions)
    except BaseException:
        await abort(store, key, upload_id, track)
        raise
    if track is not None:
        track(None)
    return res


async def abort(
    store: Store, key: str, upload_id: str, track: Callable[[str | None], None] | None = None
) -> None:
    """Abort an upload (shielded: also when the caller is being cancelled); a failure is
    logged, and the record stays for the next mount's recovery to try again."""
    with trio.CancelScope(shield=True):
        try:
            await store.abort_upload(key, upload_id)
            if track is not None:
                track(None)
        except StoreError as e:
            log.error("could not abort multipart upload %s of %r: %s", upload_id, key, e)


def completed_as(store: Store, key: str, expected: str) -> PutResult | None:
    """The object, if it is the one these parts make (in a worker thread)."""
    try:
        r = store._client.head_object(Bucket=store.bucket, Key=key, **store._ssec)
    except botocore.exceptions.ClientError:
        return None
    if strip_etag(r.get("ETag")) != expected:
        return None
    lm = r.get("LastModified")
    return PutResult(
        expected, r.get("VersionId"), last_modified_ns=int(lm.timestamp() * 1e9) if lm else 0
    )


async def abort_strays(store: Store, key: str, ours: str, since: datetime) -> None:
    """Abort the uploads of key begun since `since`, other than ours: those of a
    CreateMultipartUpload that was sent again after its answer was lost."""

    # the server's clock, not ours: its Initiated of our own upload is the reference,
    # and strays began at most as long before it as the create call took (plus slack)
    window = timedelta(seconds=STRAY_SLACK) + (datetime.now(UTC) - since)

    def do() -> list[str]:
        r = store._client.list_multipart_uploads(Bucket=store.bucket, Prefix=key)
        uploads = [u for u in r.get("Uploads", []) if u.get("Key") == key]
        mine = [u["Initiated"] for u in uploads if u.get("UploadId") == ours]
        if not mine:
            return []
        return [
            str(u["UploadId"]) for u in uploads
            if u.get("UploadId") != ours and u["Initiated"] >= mine[0] - window
        ]  # fmt: skip

    try:
        strays = await store._run(store.meta_limiter, "ListMultipartUploads", key, do)
        for stray in strays:
            await store.abort_upload(key, stray)
            log.warning("aborted a stray multipart upload of %r (a create sent twice)", key)
    except StoreError as e:
        log.warning("could not look for stray multipart uploads of %r: %s", key, e)
