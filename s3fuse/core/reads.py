"""Reading files: every byte handed out is checked. Small objects come whole, checked
against their ETag; large ones through a Reader (readahead.py) in whole blocks checked
against their block checksums; the download before a partial write is checked too.
Corrupted bytes are fetched again. Every read of a descriptor is of the version it opened
(GetObject VersionId, else IfMatch): another client's replacement is never mixed in; it
is read from the old version where the bucket keeps versions, else refused (ESTALE)."""

from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING

import trio

from s3fuse.core.readahead import Reader, keep_for
from s3fuse.errors import CONFLICT, FsError, StoreError
from s3fuse.model import blocksums, meta, requests
from s3fuse.model import etag as etag_sums
from s3fuse.spool.entry import SpoolEntry

if TYPE_CHECKING:
    from s3fuse.core.fs import S3Fs
    from s3fuse.core.nodes import Handle, Node

log = logging.getLogger(__name__)

FILL_ATTEMPTS = 3  # downloads before a partial write whose bytes came corrupted


class Replaced(FsError):
    """The version a descriptor opened is no longer stored (another client replaced or
    deleted the name, in a bucket that keeps no versions): its bytes cannot be read."""

    def __init__(self, path: str) -> None:
        super().__init__(
            errno.ESTALE,
            f"{path!r} was replaced or deleted by another client after it was opened; "
            "open it again to read what is there now",
        )


class Reads:
    def __init__(self, fs: S3Fs) -> None:
        self.fs = fs

    async def read(self, fh: int, off: int, size: int) -> bytes:
        h = self.fs.table.handle(fh)
        node = h.node
        if node.entry is not None:
            return node.entry.read(off, size)
        try:
            data = await self.read_stored(h, off, size)
        except Replaced:
            if h.served or node.unlinked:
                raise
            # nothing read through this descriptor yet (an open that trusted what this
            # mount knew): it opens the version there is now
            if h.reader is not None:
                h.reader.close()
                h.reader = None
            if await self.fs.names.file_node(node.path) is not node:
                raise
            data = await self.read_stored(h, off, size)
        h.served += len(data)
        return data

    def pin(self, node: Node) -> dict[str, str]:
        return requests.read_pin(node.version_id, node.etag)

    def pinned_to_version(self, node: Node) -> bool:
        """Reads of node name its version id: they outlive its name."""
        return "VersionId" in self.pin(node)

    async def read_stored(self, h: Handle, off: int, size: int) -> bytes:
        node = h.node
        if h.reader is None or h.reader.size != node.attrs.size:
            if h.reader is not None:
                h.reader.close()
            key = self.fs.keys.file_key(node.path)
            if blocksums.needed(node.attrs.size):
                await self.fs.names.exact(node)  # its block checksums are in the metadata
            sums = self.block_sums(node)
            if sums is None and node.attrs.size > blocksums.WHOLE_READ_MAX:
                self.fs.store.stats.unverifiable_ranges(key)
            h.reader = Reader(
                self.fs.store,
                key,
                node.attrs.size,
                lambda start, end, whole: self.get(node, start, end, whole=whole),
                self.fs.tasks,
                sums,
                self.pin(node),
                keep_for(self.fs.cfg.read_ahead_kb),
            )
        try:
            return await h.reader.read(off, size)
        except StoreError as e:
            if e.code in CONFLICT:
                raise Replaced(node.path) from None
            raise

    async def fill(self, node: Node, entry: SpoolEntry) -> None:
        """Bring the stored object into the spool, checked against its ETag (MD5 or
        multipart). Corrupted bytes are fetched again; when another writer replaced the
        object meanwhile, the new version is taken (the entry keeps the ETag it was
        opened from, so conflict detection still sees the change)."""
        for attempt in range(1, FILL_ATTEMPTS + 1):
            try:
                await self.fs.spool.fill(entry, entry.key, self.checkable_etag(node))
                return
            except StoreError as e:
                if e.code != "ChecksumMismatch":
                    raise
                info = await self.fs.store.head(entry.key)
                if info is None:
                    raise FsError(errno.ENOENT, f"{node.path!r} was deleted by another "
                                  "client while it was being opened") from None  # fmt: skip
                if info.etag != node.etag:
                    await self.fs.names.file_node(node.path, info)  # replaced: take the new one
                elif attempt == FILL_ATTEMPTS:
                    log.error("%r: %s; refusing to write into corrupted bytes", node.path, e)
                    raise
                else:
                    log.warning("%r: the download before a partial write was corrupted in "
                                "transit (%s); fetching it again", node.path, e.code)  # fmt: skip
                entry.truncate(0)
        raise AssertionError("unreachable")

    async def get(self, node: Node, start: int, end: int, *, whole: bool) -> tuple[int, bytes]:
        """A GET of [start, end), checked: a whole object against its ETag, a range of a
        large one against its block checksums (the range then grows to whole blocks;
        returns the offset the bytes begin at). A mismatch because another writer replaced
        the object is not corruption: the node is refreshed and the new object read."""
        key = self.fs.keys.file_key(node.path)
        if not whole:
            return await self.get_blocks(node, key, start, end)
        expect = self.checkable_etag(node)
        try:
            return start, await self.fs.store.get_range(
                key, start, end, expect_etag=expect, pin=self.pin(node)
            )
        except StoreError as e:
            if e.code in CONFLICT:
                raise Replaced(node.path) from None
            if e.code != "ChecksumMismatch":
                raise
            info = await self.fs.store.head(key)
            if info is None or info.etag == node.etag:
                log.error("read of %r: %s; refusing to return corrupted bytes", node.path, e)
                raise
            raise Replaced(node.path) from None

    async def get_blocks(self, node: Node, key: str, start: int, end: int) -> tuple[int, bytes]:
        for attempt in range(1, FILL_ATTEMPTS + 1):
            sums = self.block_sums(node)
            if sums is None:
                return start, await self.fs.store.get_range(key, start, end, pin=self.pin(node))
            s, e = sums.span(start, end)
            data = await self.fs.store.get_range(key, s, e, pin=self.pin(node))
            bad = await trio.to_thread.run_sync(sums.check, s, data)
            if bad is None and len(data) == e - s:
                return s, data
            self.fs.store.stats.corrupted()
            info = await self.fs.store.head(key)
            if info is None or info.etag != node.etag:
                raise Replaced(node.path)
            if attempt == FILL_ATTEMPTS:
                log.error("read of %r: bytes at %s do not match their block checksum %d "
                          "times; refusing to return corrupted bytes", node.path, bad,
                          attempt)  # fmt: skip
            else:
                log.warning("read of %r: bytes at %s do not match their block checksum "
                            "(corrupted in transit?); fetching them again",
                            node.path, bad)  # fmt: skip
        raise StoreError("ChecksumMismatch", "a ranged GET kept returning bytes that do not "
                         "match their block checksums", op="GetObject", key=key)  # fmt: skip

    def block_sums(self, node: Node) -> blocksums.BlockSums | None:
        return blocksums.BlockSums.parse(node.integrity.get(meta.META_BLOCKS), node.attrs.size)

    def checkable_etag(self, node: Node) -> str | None:
        """The object's ETag when it sums its bytes (an MD5, or a multipart ETag), which
        it does not under SSE-KMS or SSE-C."""
        if not etag_sums.sums_bytes(node.hdrs.get("sse", ""), sse_c=self.fs.cfg.sse_c):
            return None
        if etag_sums.is_md5(node.etag) or etag_sums.part_count(node.etag) is not None:
            return node.etag
        return None
