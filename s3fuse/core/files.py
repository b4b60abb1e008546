"""Files as names: create (one PutObject at close, no HEAD before it), open (truncation,
handles), release (the last close lets go of the spool copy), unlink (a pending upload is
superseded, a stored object deleted), symlinks (objects holding their target), special
files (fifos, sockets, devices: zero-byte objects), and no hard links (S3 has none)."""

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
        self.fs.table.names_changed(parent)
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
            node.attrs.modified()
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
        await self.keep_for_descriptors(node)
        if node.stored:
            key = self.fs.keys.file_key(path)
            await self.fs.guard.delete_seen(path, key, node.etag, "unlink of")
        self.supersede(node)
        self.fs.cache.removed(parent.path, basename(path))
        self.fs.table.names_changed(parent)
        node.attrs.changed()  # for descriptors still open

    async def keep_for_descriptors(self, node: Node) -> None:
        """POSIX: descriptors open on a file keep its content after an unlink or a rename
        over it. Its bytes come into the spool first, unless the bucket keeps versions
        and no descriptor writes: reads are pinned to the version (reads.py), which
        stays readable after the name goes (no download of a large file)."""
        if node.opens == 0 or node.is_link or node.entry is not None:
            return
        writers = any(h.writable for h in self.fs.table.handles.values() if h.node is node)
        if writers or not self.fs.reads.pinned_to_version(node):
            await self.fs.writes.spool_entry(node, keep_content=True)

    def supersede(self, node: Node) -> None:
        """node's name now means something else (unlinked, replaced, renamed over): its
        pending content is never to be uploaded; open descriptors still read it."""
        node.unlinked = True
        node.stored = False
        if node.entry is not None:
            node.entry.drop_stream("its name was unlinked or replaced")
            node.entry.set_state(CLEAN)
        self.fs.table.detach(node)

    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Caller) -> Entry:
        """Stored the s3fs-fuse way: the object's body is the target, its mode S_IFLNK."""
        attrs = Attrs(stat.S_IFLNK | 0o777, ctx.uid, ctx.gid, meta.now_ns(), len(target))
        node = await self.put_whole(parent_inode, name, attrs, target)
        node.target = target
        return self.fs.table.reply(node)

    async def put_whole(self, parent_inode: int, name: bytes, attrs: Attrs, body: bytes) -> Node:
        """A new name whose object is written at once, not through the spool: a symlink
        (body = target) or a special file (no body). No HEAD first: the kernel looked the
        name up (EEXIST is its answer)."""
        self.fs.cfg.check_writable()
        parent = self.fs.table.node(parent_inode)
        path = self.fs.table.child_path(parent, name)
        key = self.fs.keys.file_key(path)
        params = requests.whole_put(
            await self.fs.writes.inherited(path), self.fs.headers.metadata(Node(0, path, attrs))
        )
        res = await self.fs.store.put(
            key, body, md5=hashlib.md5(body).digest(), size=len(body), headers=params
        )
        node = self.fs.table.install(path, attrs, stored=True, etag=res.etag, full=True)
        node.written(res.last_modified_ns, otherwise=attrs.mtime_ns)
        node.version_id = res.version_id
        self.fs.cache.added(parent.path, basename(path), Child(False, len(body), res.etag))
        self.fs.table.names_changed(parent)
        return node

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
        """Fifos, unix sockets, character and block devices: zero-byte objects whose mode
        (and x-amz-meta-rdev for a device) says what they are, as s3fs-fuse stores them;
        the kernel serves their I/O. mknod of a regular file makes an empty one."""
        kind = stat.S_IFMT(mode) or stat.S_IFREG
        if kind not in (stat.S_IFREG, *meta.SPECIAL_TYPES):
            raise refuse(errno.EINVAL)
        attrs = Attrs(kind | stat.S_IMODE(mode), ctx.uid, ctx.gid, meta.now_ns(),
                      rdev=rdev if kind in meta.DEVICE_TYPES else 0)  # fmt: skip
        return self.fs.table.reply(await self.put_whole(parent_inode, name, attrs, b""))
