"""Sending a spool file to S3: one PutObject with Content-MD5 (or a multipart upload),
sent again when corrupted in transit, retried through a failing server for
retry_window seconds, with the block checksums of large files in its metadata."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time
from typing import TYPE_CHECKING, Any

import trio

from s3fuse.errors import CONFLICT, CORRUPTION, TRANSIENT, StoreError
from s3fuse.model import blocksums, requests
from s3fuse.model.etag import part_size_for
from s3fuse.model.meta import META_BLOCKS
from s3fuse.model.xattrs import META_LIMIT, meta_size
from s3fuse.s3.types import PutResult
from s3fuse.spool.filesums import chunk_sums_of_file, etag_of_file, md5_of_file

if TYPE_CHECKING:
    from s3fuse.spool.spool import Spool

log = logging.getLogger(__name__)

PUT_ATTEMPTS = 3
# requests after which a ChecksumMismatch means S3 now holds the corrupted bytes
STORED_OPS = ("PutObject", "CompleteMultipartUpload")

# Files up to this size are read from the spool into memory for the PutObject: cheaper than
# a file object for botocore to seek and read (most files written through a mount are small)
SMALL_BODY = 1 << 20


async def send(
    spool: Spool,
    key: str,
    path: str,
    size: int,
    headers: dict[str, Any],
    conditions: dict[str, str] | None,
    *,
    md5: bytes | None = None,
    data: bytes | None = None,
) -> PutResult:
    """The bytes of a spool file to S3: one PutObject with Content-MD5 below the
    multipart threshold, else a multipart upload with per-part MD5. Bytes that S3
    rejects as corrupted (BadDigest) or stores with another MD5 are sent again from
    the spool, a bounded number of times. `data`: the file's bytes, read already."""
    progress = spool.in_flight[key] = [0, size]
    deadline = time.monotonic() + spool.retry_window
    delay = 0.5
    sums = await block_sums(key, path, size, headers)
    if sums is not None:
        headers = requests.with_metadata(headers, {META_BLOCKS: sums})
    while True:
        try:
            res = await send_once(spool, key, path, size, headers, conditions, md5, progress, data)
            if sums is not None:
                res.metadata[META_BLOCKS] = sums
            return res
        except StoreError as e:
            if e.code == "ChecksumMismatch" and e.op in STORED_OPS:
                await remove_corrupted(spool, key, e)
            if e.code in CONFLICT and conditions:
                done = await landed(spool, key, path, size, md5)
                if done is not None:
                    done.metadata.update({META_BLOCKS: sums} if sums else {})
                    return done
            if e.code not in TRANSIENT or time.monotonic() + delay > deadline:
                raise
            log.warning("upload of %r: %s; trying again in %.1f s (the server may be "
                        "restarting)", key, e.code, delay)  # fmt: skip
            await trio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 8.0)
        finally:
            spool.in_flight.pop(key, None)


async def block_sums(key: str, path: str, size: int, headers: dict[str, Any]) -> str | None:
    """The block checksums of a large file (blocksums.py), if they fit in the metadata
    beside the user's; without them its ranged reads cannot be checked."""
    if not blocksums.needed(size):
        return None
    chunk_sums = await trio.to_thread.run_sync(chunk_sums_of_file, path)
    value = blocksums.encode(size, chunk_sums)
    md = requests.with_metadata(headers, {META_BLOCKS: value})["Metadata"]
    if meta_size(md) > META_LIMIT:
        log.warning("%r: no room for block checksums beside its metadata; its ranged "
                    "reads will not be verified", key)  # fmt: skip
        return None
    return value


async def landed(
    spool: Spool, key: str, path: str, size: int, md5: bytes | None
) -> PutResult | None:
    """After a failed condition: whether S3 holds exactly these bytes, because this
    very upload landed and only its answer was lost (botocore then resent it, and the
    resent request's condition no longer holds). Not a conflict then."""
    current = await spool.store.head(key)
    if current is None or current.size != size:
        return None
    if size >= spool.multipart_threshold:
        part_size = part_size_for(size, spool.part_size)  # as put_multipart cut it
        want = await trio.to_thread.run_sync(etag_of_file, path, part_size)
    else:
        digest = md5 if md5 is not None else await trio.to_thread.run_sync(md5_of_file, path)
        want = digest.hex()
    if current.etag != want:
        return None
    log.warning("%r: S3 already holds this upload (its first answer was lost)", key)
    return PutResult(current.etag, current.version_id, last_modified_ns=current.last_modified_ns)


def track_upload(data_path: str, key: str, upload_id: str | None) -> None:
    """Keep the id of a multipart upload under way beside its spool file, so that a
    daemon killed meanwhile does not leave its parts behind (abandoned_uploads)."""
    path = data_path.removesuffix(".data") + ".upload"
    if upload_id is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    # without the record only the cleanup of the parts is lost
    with contextlib.suppress(OSError), open(path, "w") as f:
        json.dump({"key": key, "upload_id": upload_id or None}, f)


async def remove_corrupted(spool: Spool, key: str, e: StoreError) -> None:
    """A server that does not check Content-MD5 stored bytes that changed in transit
    (its ETag says so): never leave an object nobody closed. The bytes stay here."""
    try:
        await spool.store.delete(key)
    except StoreError as de:
        log.error("%r: S3 holds a corrupted copy (%s) that could not be removed: %s",
                  key, e.message, de)  # fmt: skip
        return
    log.error("%r: S3 stored a corrupted copy (%s); it was removed", key, e.message)


async def send_once(
    spool: Spool,
    key: str,
    path: str,
    size: int,
    headers: dict[str, Any],
    conditions: dict[str, str] | None,
    md5: bytes | None,
    progress: list[int],
    data: bytes | None = None,
) -> PutResult:
    spool.in_flight[key] = progress
    progress[0] = 0
    if size >= spool.multipart_threshold:
        return await spool.store.put_multipart(
            key, path, size=size, part_size=spool.part_size, headers=headers,
            conditions=conditions, concurrency=spool.part_concurrency,
            on_progress=lambda n: progress.__setitem__(0, progress[0] + n),
            track=lambda upload_id: track_upload(path, key, upload_id),
        )  # fmt: skip
    if md5 is None:
        md5 = await trio.to_thread.run_sync(md5_of_file, path)
    for attempt in range(1, PUT_ATTEMPTS + 1):
        try:
            with contextlib.ExitStack() as stack:
                body = data if data is not None else stack.enter_context(open(path, "rb"))
                res = await spool.store.put(
                    key, body, md5=md5, size=size,
                    headers={**headers, **(conditions or {})},
                )  # fmt: skip
            progress[0] = size
            return res
        except StoreError as e:
            if e.code not in CORRUPTION or attempt == PUT_ATTEMPTS:
                raise
            if conditions and e.stored_etag:
                # a server that does not check Content-MD5 stored the corrupted bytes: that
                # version is this upload's own, and the next try replaces exactly it
                conditions = requests.conditions(e.stored_etag)
            log.warning(
                "upload of %r was corrupted in transit (%s: %s); sending it again "
                "from the spool (attempt %d of %d)",
                key, e.code, e.message, attempt + 1, PUT_ATTEMPTS,
            )  # fmt: skip
    raise AssertionError("unreachable")
