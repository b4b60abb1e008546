"""The filesystem core's entry point: every operation, in plain Python (types in
core/types.py), each handed to the part that does that job (inodes.py, resolve.py,
writes.py, ...). The FUSE adapter (s3fuse/fuse/adapter.py) calls these methods and maps
their exceptions (FsError, StoreError, OSError) to errnos; tests call them directly.
Uploads happen in ``flush``/``fsync`` through the spool; nothing in the core imports
boto3 or pyfuse3.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from s3fuse.core import inodes
from s3fuse.core.cache import Caches
from s3fuse.core.dirs import Dirs
from s3fuse.core.files import Files
from s3fuse.core.guard import Guard
from s3fuse.core.headers import Headers
from s3fuse.core.inodes import InodeTable
from s3fuse.core.metacache import MetaCache
from s3fuse.core.moves import Moves
from s3fuse.core.nodes import FsConfig
from s3fuse.core.reads import Reads
from s3fuse.core.resolve import Resolver
from s3fuse.core.types import (
    AttrChanges,
    Caller,
    Entry,
    FsStats,
    NewAttrs,
    Opened,
    Reply,
)
from s3fuse.core.versions import Versions
from s3fuse.core.writes import Writes
from s3fuse.core.xattr_ops import XattrOps
from s3fuse.model.keys import KeyMap
from s3fuse.spool.recovery import Kept
from s3fuse.spool.spool import Spool
from s3fuse.tasks import Background

if TYPE_CHECKING:
    from s3fuse.s3.client import Store

log = logging.getLogger(__name__)


class S3Fs:
    """The filesystem: the handlers the FUSE adapter calls, each handed to the part of the
    core that does that job. The parts share the services here (store, spool, keys,
    config, caches, the inode table, background tasks, the metadata cache) and call each
    other's public methods through this object: the one place that knows them all."""

    def __init__(
        self,
        store: Store,
        spool: Spool,
        keymap: KeyMap,
        cfg: FsConfig,
        *,
        tasks: Background,
        meta_cache: MetaCache | None = None,
    ) -> None:
        self.store = store
        self.spool = spool
        self.keys = keymap
        self.cfg = cfg
        self.tasks = tasks
        self._meta_cache = meta_cache  # HEAD answers across mounts (attrs=auto)
        self.cache = Caches(cfg.cache_ttl)
        self.table = InodeTable(cfg, self.cache)
        self.names = Resolver(self)
        self.reads = Reads(self)
        self.writes = Writes(self)
        self.headers = Headers(self)
        self.files = Files(self)
        self.dirs = Dirs(self)
        self.moves = Moves(self)
        self.xattrs = XattrOps(self)
        self.guard = Guard(self)  # conflict=detect for copies and deletes
        self.versions = Versions(self)  # older versions, read-only (versioned buckets)

    @property
    def meta_cache(self) -> MetaCache | None:
        """The metadata cache, when there is one that works (it turns itself off on a
        disk error: the mount goes on without it)."""
        mc = self._meta_cache
        return mc if mc is not None and mc.enabled else None

    # ================================================================ handlers: names
    async def lookup(self, parent_inode: int, name: bytes, ctx: Caller) -> Entry:
        parent = self.table.node(parent_inode)
        if name == b".":
            return self.table.reply(parent)
        if name == b"..":
            return self.table.reply(self.table.parent(parent))
        path = self.table.child_path(parent, name)
        self.keys.check_len(self.keys.prefix + path)
        return self.table.reply(await self.names.resolve(path))

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for ino, n in inode_list:
            node = self.table.nodes.get(ino)
            if node is not None:
                node.lookups = max(0, node.lookups - n)
                self.table.maybe_drop(node)

    async def getattr(self, inode: int, ctx: Caller) -> Entry:
        node = self.table.node(inode)
        if not self.table.fresh(node):
            node = await self.names.revalidate(node)
        return self.table.entry_attrs(node)

    async def setattr(
        self, inode: int, attr: NewAttrs, fields: AttrChanges, fh: int | None, ctx: Caller
    ) -> Entry:
        return await self.headers.setattr(inode, attr, fields, fh, ctx)

    # ================================================================ handlers: dirs
    async def opendir(self, inode: int, ctx: Caller) -> int:
        return await self.dirs.opendir(inode, ctx)

    async def readdir(self, fh: int, start_id: int, reply: Reply) -> None:
        return await self.dirs.readdir(fh, start_id, reply)

    async def releasedir(self, fh: int) -> None:
        return await self.dirs.releasedir(fh)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return await self.dirs.fsyncdir(fh, datasync)

    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Caller) -> Entry:
        return await self.dirs.mkdir(parent_inode, name, mode, ctx)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: Caller) -> None:
        return await self.dirs.rmdir(parent_inode, name, ctx)

    # ================================================================ handlers: files
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.writes.write(fh, off, buf)

    async def flush(self, fh: int) -> None:
        await self.writes.flush(fh)

    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.writes.fsync(fh, datasync)

    async def adopt(self, kept: list[Kept]) -> None:
        await self.writes.adopt(kept)

    def pending_keys(self) -> list[str]:
        return self.writes.pending_keys()

    async def upload_pending(self, *, closed_only: bool = False) -> int:
        return await self.writes.upload_pending(closed_only=closed_only)

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Caller
    ) -> tuple[Opened, Entry]:
        return await self.files.create(parent_inode, name, mode, flags, ctx)

    async def open(self, inode: int, flags: int, ctx: Caller) -> Opened:
        return await self.files.open(inode, flags, ctx)

    async def release(self, fh: int) -> None:
        return await self.files.release(fh)

    async def unlink(self, parent_inode: int, name: bytes, ctx: Caller) -> None:
        return await self.files.unlink(parent_inode, name, ctx)

    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Caller) -> Entry:
        return await self.files.symlink(parent_inode, name, target, ctx)

    async def readlink(self, inode: int, ctx: Caller) -> bytes:
        return await self.files.readlink(inode, ctx)

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Caller) -> Entry:
        return await self.files.link(inode, new_parent_inode, new_name, ctx)

    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Caller
    ) -> Entry:
        return await self.files.mknod(parent_inode, name, mode, rdev, ctx)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self.reads.read(fh, off, size)

    # ================================================================ handlers: links, rename
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: Caller,
    ) -> None:
        return await self.moves.rename(
            parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx
        )

    async def statfs(self, ctx: Caller) -> FsStats:
        big, files = 1 << 40, 1 << 32  # 4 PiB: S3 has no fixed size
        return FsStats(
            f_bsize=inodes.BLKSIZE, f_frsize=4096, f_blocks=big, f_bfree=big, f_bavail=big,
            f_files=files, f_ffree=files, f_favail=files, f_namemax=255,
        )  # fmt: skip

    # ================================================================ handlers: xattrs
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Caller) -> None:
        return await self.xattrs.set(inode, name, value, ctx)

    async def getxattr(self, inode: int, name: bytes, ctx: Caller) -> bytes:
        return await self.xattrs.get(inode, name, ctx)

    async def listxattr(self, inode: int, ctx: Caller) -> list[bytes]:
        return await self.xattrs.list(inode, ctx)

    async def removexattr(self, inode: int, name: bytes, ctx: Caller) -> None:
        return await self.xattrs.remove(inode, name, ctx)
