"""Directories: a listing read once per opendir (cached listings reused within cache_ttl),
with files created here and not uploaded yet; empty directories as zero-byte 'dir/'
marker objects; rmdir only of an empty directory."""

from __future__ import annotations

import errno
import hashlib
import logging
import stat
from typing import TYPE_CHECKING

from s3fuse.core.cache import Child, DirListing
from s3fuse.core.nodes import Node
from s3fuse.core.types import Caller, Entry, Reply, refuse
from s3fuse.model import meta, requests
from s3fuse.model.keys import basename, join
from s3fuse.model.meta import Attrs

EMPTY_MD5 = hashlib.md5(b"").digest()

if TYPE_CHECKING:
    from s3fuse.core.fs import S3Fs

log = logging.getLogger(__name__)


class Dirs:
    def __init__(self, fs: S3Fs) -> None:
        self.fs = fs

    async def opendir(self, inode: int, ctx: Caller) -> int:
        node = self.fs.table.node(inode)
        if not node.is_dir:
            raise refuse(errno.ENOTDIR)
        cached = self.fs.cache.listing(node.path)
        if cached is not None and cached.complete and cached.browsed:
            listing = cached  # listed within cache_ttl: no LIST (warm ls)
        else:
            listing = await self.fs.names.load_listing(node.path)
            listing.browsed = True
        self.fs.cache.bulk.pop(node.path, None)  # a new listing: a new bulk fetch may follow
        # readdirplus hands the kernel each entry's attributes: valid for kernel_ttl when
        # the listing will do (no lookup per entry follows), else to be asked for again
        trusted = await self.fs.names.listing_will_do(node.path, listing, None)
        entries: dict[str, Node] = {}
        for name, child in listing.children.items():
            path = join(node.path, name)
            known = self.fs.table.known(path)
            if (
                known is not None
                and known.is_dir == child.is_dir
                and (child.is_dir or (known.full and known.etag == child.etag) or known.entry)
            ):
                entries[name] = known
            else:
                entries[name] = self.fs.names.listed_node(
                    path, child, trusted=trusted, at=listing.fetched
                )
        # Files created here and not uploaded yet are not in S3's listing, nor are those
        # stored here after its LIST was sent.
        prefix = node.path + "/" if node.path else ""
        for path, ino in list(self.fs.table.by_path.items()):
            if path.startswith(prefix) and "/" not in path[len(prefix) :] and path:
                n = self.fs.table.nodes[ino]
                here = n.entry is not None or listing.older_than(n)
                if not n.unlinked and here and path != node.path:
                    entries.setdefault(basename(path), n)
        dots = [(".", node), ("..", self.fs.table.parent(node) if node.path else node)]
        return self.fs.table.open_dir_handle(node, dots + sorted(entries.items()))

    async def readdir(self, fh: int, start_id: int, reply: Reply) -> None:
        dh = self.fs.table.dir_handles.get(fh)
        if dh is None:
            raise refuse(errno.EBADF)
        for i in range(start_id, len(dh.entries)):
            name, node = dh.entries[i]
            if not reply(name.encode("utf-8"), self.fs.table.entry_attrs(node), i + 1):
                return
            if i >= 2:  # the kernel counts no lookup for "." and ".."
                node.lookups += 1

    async def releasedir(self, fh: int) -> None:
        dh = self.fs.table.dir_handles.pop(fh, None)
        if dh is not None:
            for _, node in dh.entries[2:]:
                self.fs.table.maybe_drop(node)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return None

    async def put_marker(self, path: str, node: Node) -> str:
        headers = requests.marker_put(self.fs.cfg.mount_defaults, self.fs.headers.metadata(node))
        res = await self.fs.store.put(
            self.fs.keys.marker_key(path), b"", md5=EMPTY_MD5, size=0, headers=headers
        )
        return res.etag

    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Caller) -> Entry:
        self.fs.cfg.check_writable()
        parent = self.fs.table.node(parent_inode)
        path = self.fs.table.child_path(parent, name)
        attrs = Attrs(stat.S_IFDIR | stat.S_IMODE(mode), ctx.uid, ctx.gid, meta.now_ns())
        etag = await self.put_marker(path, Node(0, path, attrs))
        node = self.fs.table.install(path, attrs, stored=True, etag=etag, full=True)
        self.fs.cache.added(parent.path, basename(path), Child(True))
        self.fs.cache.put_listing(path, DirListing())
        self.fs.table.names_changed(parent)
        parent.subdirs += 1
        return self.fs.table.reply(node)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: Caller) -> None:
        self.fs.cfg.check_writable()
        parent = self.fs.table.node(parent_inode)
        path = self.fs.table.child_path(parent, name)
        node = await self.fs.names.resolve(path)
        if not node.is_dir:
            raise refuse(errno.ENOTDIR)
        await self.fs.moves.check_empty(path)
        if node.stored:
            await self.fs.store.delete(self.fs.keys.marker_key(path))
        self.fs.cache.removed(parent.path, basename(path))
        self.fs.table.names_changed(parent)
        parent.subdirs = max(0, parent.subdirs - 1)
        self.fs.table.detach(node)
