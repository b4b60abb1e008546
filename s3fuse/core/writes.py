"""Writes and the upload commit: a file's bytes go to its spool entry (filled from S3 first
for a partial write), flush/fsync upload them (idempotent per dirty generation: flush
runs once per close of every duplicated descriptor), with conflict detection when the
mount asks for it; closed files left by a crash are adopted; pending ones retried."""

from __future__ import annotations

import errno
import logging
import time
from typing import TYPE_CHECKING, Any

from s3fuse.core.cache import Child
from s3fuse.core.types import refuse
from s3fuse.errors import CONFLICT, FsError, StoreError
from s3fuse.model import meta, requests
from s3fuse.model.keys import basename, parent_of
from s3fuse.s3.types import PutResult
from s3fuse.spool.entry import CLEAN, CLOSING, SpoolEntry
from s3fuse.spool.recovery import Kept

if TYPE_CHECKING:
    from s3fuse.core.fs import S3Fs
    from s3fuse.core.nodes import Node

log = logging.getLogger(__name__)

COPY_MAX = 5 << 30  # S3's largest CopyObject


class Writes:
    def __init__(self, fs: S3Fs) -> None:
        self.fs = fs

    async def levels(self, path: str) -> list[dict[str, str]]:
        """Where the header defaults of a file at path come from, least specific first:
        mount options, then each ancestor directory's xattrs (requests.merged)."""
        out = [self.fs.cfg.mount_defaults]
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            try:
                out.append((await self.fs.names.resolve("/".join(parts[:i]))).hdrs)
            except FsError:
                continue  # an implicit directory that vanished: no defaults
        return out

    async def inherited(self, path: str) -> dict[str, str]:
        return requests.merged(await self.levels(path))

    async def upload_values(self, node: Node) -> dict[str, str]:
        """Every header xattr of the PutObject for node: inherited defaults < the object's
        own (as stored, or set here). ACL and tags of an overwritten object are kept."""
        await self.fs.headers.load_acl_tags(node)
        return requests.file_values([*await self.levels(node.path), node.hdrs],
                                    basename(node.path))  # fmt: skip

    async def spool_entry(self, node: Node, *, keep_content: bool) -> SpoolEntry:
        """The node's spool entry, created on first need. With keep_content the stored
        object's bytes are brought in first (partial overwrite); otherwise the entry
        starts empty (O_TRUNC, truncate to 0) and nothing is downloaded."""
        if node.entry is None and node.stored:
            await self.fs.names.exact(node)  # the upload re-sends its mode, owner and headers
        async with node.lock:
            if node.entry is None:
                entry = self.fs.spool.new(self.fs.keys.file_key(node.path))
                entry.base_etag = node.etag if node.stored else None
                try:
                    if keep_content and node.stored and node.attrs.size > 0:
                        await self.fs.reads.fill(node, entry)
                except BaseException:
                    entry.close()
                    raise
                node.entry = entry
            return node.entry

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        h = self.fs.table.handle(fh)
        if not h.writable:
            raise refuse(errno.EBADF)
        node = h.node
        entry = await self.spool_entry(node, keep_content=True)
        async with entry.lock:
            if h.append:
                # the end as S3 and this mount know it: the kernel's offset comes from the
                # size it cached, which another client's change may have made stale
                off = entry.size
            n = await entry.write(off, buf)
        node.attrs.size = entry.size
        node.attrs.modified()
        await self.stream(node, entry, off, n)
        return n

    async def stream(self, node: Node, entry: SpoolEntry, off: int, n: int) -> None:
        """A large file written in sequence uploads its parts while it is written
        (spool/stream.py): begun by the append that passes the threshold, with the
        headers it would be stored with now; each later write hands on its full parts
        (and waits while enough are under way)."""
        if entry.stream is not None:
            await entry.stream.feed(entry.size)
        elif self.fs.spool.streams(entry, off, n) and not node.unlinked:
            entry.key = self.fs.keys.file_key(node.path)
            params = requests.file_put(await self.upload_values(node),
                                       self.fs.headers.metadata(node))  # fmt: skip
            await self.fs.spool.start_stream(entry, params)

    async def upload(self, node: Node) -> None:
        entry = node.entry
        if entry is None or node.unlinked or not entry.dirty:
            return
        if entry.write_error is not None:
            raise FsError(entry.write_error, f"{node.path!r} not uploaded: a write to it "
                          "failed (spool full), its content would be incomplete")  # fmt: skip
        entry.key = self.fs.keys.file_key(node.path)
        values = await self.upload_values(node)
        res = await self.commit(
            node, entry, requests.file_put(values, self.fs.headers.metadata(node))
        )
        if res is None:
            return
        node.hdrs = values  # what S3 now holds
        node.acl_loaded = node.tags_loaded = True
        node.stored, node.etag, node.full = True, res.etag, True
        node.version_id = res.version_id
        node.integrity = dict(res.metadata)
        node.md5 = entry.last_md5
        node.written(res.last_modified_ns, otherwise=meta.now_ns())
        node.attrs.size = entry.size
        node.fetched = time.monotonic()
        if res.late_meta:
            await self.restate_meta(node)
        self.fs.cache.added(
            parent_of(node.path),
            basename(node.path),
            Child(False, entry.size, res.etag),
        )
        if node.opens == 0 and not entry.dirty:
            entry.close()  # nobody has it open and S3 has it: free the spool space
            node.entry = None

    async def restate_meta(self, node: Node) -> None:
        """A streamed upload's metadata was sent when it began: its times are the
        beginning's and its block checksums missing. One in-place copy states them (S3
        copies up to 5 GiB at once; a larger file keeps them and is read unchecked by
        ranges). A failure leaves the bytes stored: it is logged, the close succeeds."""
        if node.size > COPY_MAX:
            log.info("%r: larger than one CopyObject; it keeps the metadata its upload "
                     "began with", node.path)  # fmt: skip
            return
        try:
            await self.fs.headers.copy_in_place(node)
        except (StoreError, FsError) as e:
            log.warning("%r: stored, but its final times and block checksums could not be "
                        "written (%s); its ranged reads go unchecked", node.path, e)  # fmt: skip

    async def commit(
        self, node: Node, entry: SpoolEntry, params: dict[str, Any]
    ) -> PutResult | None:
        """spool.commit, with conflict detection when the mount asks for it: a new file
        is created with If-None-Match: *, a changed one replaces only the version it was
        based on (If-Match)."""
        if not self.fs.cfg.conflict_detect:
            return await self.fs.spool.commit(entry, params)
        base = entry.base_etag
        conditions = requests.conditions(base)
        try:
            return await self.fs.spool.commit(entry, params, conditions)
        except StoreError as e:
            if e.code not in CONFLICT:
                raise
            current = await self.fs.store.head(entry.key)
            unquoted = requests.unquoted(conditions)
            if unquoted and current is not None and current.etag == base:
                try:
                    return await self.fs.spool.commit(entry, params, unquoted)
                except StoreError as again:
                    if again.code not in CONFLICT:
                        raise
                    current = await self.fs.store.head(entry.key)
            self.conflict(node, entry, base, current.etag if current else None)
            raise AssertionError("unreachable") from None

    def conflict(self, node: Node, entry: SpoolEntry, base: str | None, now: str | None) -> None:
        """Another writer changed the key: keep our bytes in recovered/, leave theirs."""
        dest = self.keep_local(node, entry)
        log.error(
            "conflict: %r was changed by another writer (ours was based on ETag %s, S3 now "
            "has %s); S3 was not overwritten, the local version is in %s",
            node.path, base or "(new file)", now or "(deleted)", dest,
        )  # fmt: skip
        raise FsError(errno.EEXIST if base is None else errno.ESTALE, "write conflict")

    def keep_local(self, node: Node, entry: SpoolEntry) -> str:
        """Move node's spooled bytes to recovered/ (S3 holds another writer's version
        now); returns where they are."""
        dest = self.fs.spool.quarantine(entry.data_path, entry.key)
        entry.set_state(CLEAN)
        entry.close()
        node.entry = None
        node.full = False
        node.fetched = 0.0
        return dest

    async def flush(self, fh: int) -> None:
        h = self.fs.table.handle(fh)
        if h.writable:
            await self.upload(h.node)

    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.upload(self.fs.table.handle(fh).node)

    async def adopt(self, kept: list[Kept]) -> None:
        """Give closed files whose recovery upload failed their place in the tree (before
        the mount serves requests): reads show the spooled bytes, a later write or unlink
        supersedes them, and the upload is tried again like any failed close."""
        for k in kept:
            path = self.fs.keys.path_of(k.entry.key)
            if not path:
                log.error("recovery: %r cannot be shown by this mount; it stays in the spool "
                          "(%s) for the next one", k.entry.key, k.entry.data_path)  # fmt: skip
                k.entry.close_fd()
                continue
            try:
                info = await self.fs.store.head(k.entry.key)
                stored, etag = info is not None, info.etag if info is not None else ""
            except StoreError:
                stored, etag = True, ""  # unknown: an unlink must still send its DELETE
            md = dict(k.headers.get("Metadata") or {})
            attrs = meta.decode(
                md, is_dir=False, size=k.entry.size, last_modified_ns=meta.now_ns(),
                defaults=self.fs.cfg.defaults,
            )  # fmt: skip
            node = self.fs.table.install(path, attrs, stored=stored, etag=etag, full=True)
            node.hdrs = requests.values_of(k.headers)
            node.umeta = {k2: v for k2, v in md.items() if k2.lower() not in meta.OWN_META}
            node.entry = k.entry

    def pending_keys(self) -> list[str]:
        """Keys of files whose bytes are in the spool and not stored yet (for status)."""
        return [
            n.entry.key
            for n in self.fs.table.nodes.values()
            if n.entry is not None and n.entry.dirty and not n.unlinked
        ]

    async def upload_pending(self, *, closed_only: bool = False) -> int:
        """Try once more to upload every dirty spool entry: before unmount, and (with
        closed_only: files whose close() or crash-recovery upload failed and that nobody
        changed since) now and then while mounted. Returns how many are still not stored."""
        left = 0
        when = "retry" if closed_only else "at unmount"
        for node in list(self.fs.table.nodes.values()):
            entry = node.entry
            if entry is None or not entry.dirty or node.unlinked:
                continue
            if closed_only and (entry.state != CLOSING or entry.lock.locked()):
                continue  # being written, or its upload is under way
            try:
                await self.upload(node)
            except (StoreError, FsError) as e:
                log.error("%s: %r still not stored (%s); kept in spool", when, node.path, e)
                left += 1
            else:
                if closed_only:
                    log.warning("retry: %r stored (its earlier upload had failed)", node.path)
        return left
