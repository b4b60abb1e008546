"""Files as names: create (one PutObject at close, no HEAD before it), open (truncation,
handles), release (the last close lets go of the spool copy), unlink (a pending upload is
superseded, a stored object deleted), symlinks (objects holding their target), and the
refusals S3 forces (no hard links, no device nodes)."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
from typing import TYPE_CHECKING

from s3fuse.core.cache import Child
from s3fuse.core.nodes import Node
from s3fuse.core.types import Caller, Entry, Opened, refuse
from s3fuse.errors import FsError
from s3fuse.model import meta, requests
from s3fuse.model.keys import basename
from s3fuse.model.meta import Attrs
from s3fuse.spool.entry import CLEAN

if TYPE_CHECKING:
    from s3fuse.core.fs import S3Fs

log = logging.getLogger(__name__)


class Files:
    def __init__(self, fs: S3Fs) -> None:
        self.fs = fs

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Caller
    ) -> tuple[Opened, Entry]:
        self.fs.cfg.check_writable()
        parent = self.fs.table.node(parent_inode)
        path = self.fs.table.child_path(parent, name)
        key = self.fs.keys.file_key(path)
        old = self.fs.table.known(path)
        if flags & os.O_EXCL and (
            (old is not None and old.entry is not None and not old.unlinked)
            or await self.fs.store.head(key) is not None
        ):
            # the kernel's lookup may have been answered from a cached listing: with
            # O_EXCL, S3 itself decides (and a pending upload here counts as existing)
            raise refuse(errno.EEXIST)
        if old is not None:
            self.supersede(old)
        attrs = Attrs(stat.S_IFREG | stat.S_IMODE(mode), ctx.uid, ctx.gid, meta.now_ns())
        node = self.fs.table.install(path, attrs, stored=False, etag="", full=True)
        entry = self.fs.spool.new(key)
        entry.touch()  # an empty new file is still uploaded as an empty object
        node.entry = entry
        self.fs.cache.added(parent.path, basename(path), Child(False))
        fh = self.fs.table.open_handle(node, writable=True)
        return Opened(fh=fh), self.fs.table.reply(node)

    async def open(self, inode: int, flags: int, ctx: Caller) -> Opened:
        node = self.fs.table.node(inode)
        if node.is_dir:
            raise refuse(errno.EISDIR)
        writable = (flags & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)
        if writable:
            self.fs.cfg.check_writable()
        changed = False
        if self.fs.cfg.revalidate_open and node.entry is None and node.opens == 0:
            changed = await self.fs.names.current(node)  # close-to-open
        if writable and flags & os.O_TRUNC:
            entry = await self.fs.writes.spool_entry(node, keep_content=False)
            async with entry.lock:
                entry.truncate(0)
            node.attrs.size = 0
            node.attrs.mtime_ns = meta.now_ns()
        append = writable and bool(flags & os.O_APPEND)
        return Opened(self.fs.table.open_handle(node, writable, append=append), changed)

    async def release(self, fh: int) -> None:
        h = self.fs.table.handles.pop(fh, None)
        if h is None:
            return
        node = h.node
        if h.reader is not None:
            h.reader.close()
        node.opens -= 1
        if node.opens == 0 and node.entry is not None:
            if node.entry.write_error is not None:
                log.warning("%r: discarding its incomplete spooled content (a write failed "
                            "with %s; the application was told)", node.path,
                            errno.errorcode.get(node.entry.write_error))  # fmt: skip
                node.entry.close()
                node.entry = None
            elif node.unlinked or not node.entry.dirty:
                node.entry.close()
                node.entry = None
            else:
                log.warning(
                    "%r closed with an upload that did not succeed; its data "
                    "stays in the spool (%s)",
                    node.path,
                    node.entry.data_path,
                )
        self.fs.table.maybe_drop(node)

    async def unlink(self, parent_inode: int, name: bytes, ctx: Caller) -> None:
        self.fs.cfg.check_writable()
        parent = self.fs.table.node(parent_inode)
        path = self.fs.table.child_path(parent, name)
        node = await self.fs.names.resolve(path)
        if node.is_dir:
            raise refuse(errno.EISDIR)
        if node.opens > 0 and not node.is_link:
            # POSIX: open descriptors keep the file's content after unlink
            await self.fs.writes.spool_entry(node, keep_content=True)
        if node.stored:
            key = self.fs.keys.file_key(path)
            await self.fs.guard.delete_seen(path, key, node.etag, "unlink of")
        self.supersede(node)
        self.fs.cache.removed(parent.path, basename(path))

    def supersede(self, node: Node) -> None:
        """node's name now means something else (unlinked, replaced, renamed over): its
        pending content is never to be uploaded; open descriptors still read it."""
        node.unlinked = True
        node.stored = False
        if node.entry is not None:
            node.entry.set_state(CLEAN)
        self.fs.table.detach(node)

    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Caller) -> Entry:
        """Stored the s3fs-fuse way: the object's body is the target, its mode S_IFLNK."""
        self.fs.cfg.check_writable()
        parent = self.fs.table.node(parent_inode)
        path = self.fs.table.child_path(parent, name)
        key = self.fs.keys.file_key(path)
        attrs = Attrs(stat.S_IFLNK | 0o777, ctx.uid, ctx.gid, meta.now_ns(), len(target))
        node = Node(0, path, attrs)
        params = requests.symlink_put(
            await self.fs.writes.inherited(path), self.fs.headers.metadata(node)
        )
        res = await self.fs.store.put(
            key, target, md5=hashlib.md5(target).digest(), size=len(target), headers=params
        )
        node = self.fs.table.install(path, attrs, stored=True, etag=res.etag, full=True)
        node.target = target
        self.fs.cache.added(parent.path, basename(path), Child(False, len(target), res.etag))
        return self.fs.table.reply(node)

    async def readlink(self, inode: int, ctx: Caller) -> bytes:
        node = self.fs.table.node(inode)
        if not node.is_link:
            raise refuse(errno.EINVAL)
        if node.target is None:
            size = max(node.attrs.size, 1)
            node.target = await self.fs.store.get_range(self.fs.keys.file_key(node.path), 0, size)
        return node.target

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Caller) -> Entry:
        raise FsError(errno.EPERM, "hard links are not supported on S3 (use ln -s)")

    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Caller
    ) -> Entry:
        raise FsError(
            errno.EPERM, "only regular files, directories and symlinks can be stored on S3"
        )
