"""The pyfuse3 Operations: each handler converts the kernel's arguments, calls the
filesystem core (s3fuse/core/fs.py) and converts its answer. This is the errno boundary:
only pyfuse3.FUSEError leaves a handler (anything else would end the mount), and every
failure is logged here, once."""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

import pyfuse3
import trio

from s3fuse.core.fs import S3Fs
from s3fuse.core.types import Entry, Refusal
from s3fuse.errors import FsError, StoreError, hint_for

log = logging.getLogger(__name__)

FORGET_WAIT = 2.0  # seconds an attribute invalidation may take before open goes on

P = ParamSpec("P")
R = TypeVar("R")


def boundary(
    fn: Callable[Concatenate[FuseOps, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[FuseOps, P], Coroutine[Any, Any, R]]:
    """Every exception becomes a FUSEError; failures are logged (expected refusals, such
    as ENOENT of a lookup, are not)."""

    @functools.wraps(fn)
    async def wrapper(self: FuseOps, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(self, *args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Refusal as e:
            raise pyfuse3.FUSEError(e.errno) from None
        except StoreError as e:
            level = logging.DEBUG if e.errno == errno.ENOENT else logging.ERROR
            log.log(level, "%s: %s%s", fn.__name__, e, hint_for(e.code))
            raise pyfuse3.FUSEError(e.errno) from None
        except FsError as e:
            log.warning("%s: %s", fn.__name__, e)
            raise pyfuse3.FUSEError(e.errno) from None
        except OSError as e:
            log.error("%s: local I/O error: %s", fn.__name__, e)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except Exception:
            log.exception("%s: unexpected error", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


async def forget_attributes(inode: int) -> None:
    """Make the kernel ask for the inode's attributes again before the open that found a
    new version returns: its cached size may be the old version's, and reads and appends
    would use it. Attributes only (no pages): the kernel takes no lock an open holds for
    that, so it is answered at once; a worker thread and a bound all the same, because a
    notification that blocked here would block the open."""
    with trio.move_on_after(FORGET_WAIT):
        try:
            await trio.to_thread.run_sync(
                pyfuse3.invalidate_inode, inode, True, abandon_on_cancel=True
            )
        except OSError as e:  # ENOENT: the kernel forgot the inode already
            log.debug("invalidate_inode(%d): %s", inode, e)


def attributes(e: Entry) -> pyfuse3.EntryAttributes:
    out = pyfuse3.EntryAttributes()
    out.st_ino = e.st_ino
    out.generation = e.generation
    out.entry_timeout = e.entry_timeout
    out.attr_timeout = e.attr_timeout
    out.st_mode = e.st_mode
    out.st_nlink = e.st_nlink
    out.st_uid = e.st_uid
    out.st_gid = e.st_gid
    out.st_rdev = e.st_rdev
    out.st_size = e.st_size
    out.st_blksize = e.st_blksize
    out.st_blocks = e.st_blocks
    out.st_atime_ns = e.st_atime_ns
    out.st_ctime_ns = e.st_ctime_ns
    out.st_mtime_ns = e.st_mtime_ns
    return out


Ctx = pyfuse3.RequestContext


class FuseOps(pyfuse3.Operations):
    # no lookups of "." and ".." (the kernel answers those), no writeback cache (close()
    # must see every byte: it is the upload)
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, fs: S3Fs) -> None:
        super().__init__()
        self.fs = fs

    # ------------------------------------------------------------ names and attributes
    @boundary
    async def lookup(self, parent_inode: int, name: bytes, ctx: Ctx) -> pyfuse3.EntryAttributes:
        return attributes(await self.fs.lookup(parent_inode, name, ctx))

    @boundary
    async def forget(self, inode_list: list[tuple[int, int]]) -> None:  # type: ignore[override]
        await self.fs.forget(inode_list)

    @boundary
    async def getattr(self, inode: int, ctx: Ctx) -> pyfuse3.EntryAttributes:
        return attributes(await self.fs.getattr(inode, ctx))

    @boundary
    async def setattr(
        self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
        fh: int | None, ctx: Ctx,
    ) -> pyfuse3.EntryAttributes:  # fmt: skip
        return attributes(await self.fs.setattr(inode, attr, fields, fh, ctx))

    @boundary
    async def statfs(self, ctx: Ctx) -> pyfuse3.StatvfsData:
        s = await self.fs.statfs(ctx)
        out = pyfuse3.StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                     "f_ffree", "f_favail", "f_namemax"):  # fmt: skip
            setattr(out, name, getattr(s, name))
        return out

    # ------------------------------------------------------------ directories
    @boundary
    async def opendir(self, inode: int, ctx: Ctx) -> int:
        return await self.fs.opendir(inode, ctx)

    @boundary
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        def reply(name: bytes, entry: Entry, next_id: int) -> bool:
            return bool(pyfuse3.readdir_reply(token, name, attributes(entry), next_id))

        await self.fs.readdir(fh, start_id, reply)

    @boundary
    async def releasedir(self, fh: int) -> None:
        await self.fs.releasedir(fh)

    @boundary
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        await self.fs.fsyncdir(fh, datasync)

    @boundary
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: Ctx
    ) -> pyfuse3.EntryAttributes:
        return attributes(await self.fs.mkdir(parent_inode, name, mode, ctx))

    @boundary
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Ctx) -> None:
        await self.fs.rmdir(parent_inode, name, ctx)

    # ------------------------------------------------------------ files
    @boundary
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Ctx
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        opened, entry = await self.fs.create(parent_inode, name, mode, flags, ctx)
        return pyfuse3.FileInfo(fh=opened.fh), attributes(entry)

    @boundary
    async def open(self, inode: int, flags: int, ctx: Ctx) -> pyfuse3.FileInfo:
        opened = await self.fs.open(inode, flags, ctx)
        if opened.changed:
            await forget_attributes(inode)
        # another version than the kernel may hold pages of (a same-size replacement
        # would otherwise be read from the page cache): drop them
        return pyfuse3.FileInfo(fh=opened.fh, keep_cache=not opened.changed)

    @boundary
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self.fs.read(fh, off, size)

    @boundary
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.fs.write(fh, off, buf)

    @boundary
    async def flush(self, fh: int) -> None:
        await self.fs.flush(fh)

    @boundary
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.fs.fsync(fh, datasync)

    @boundary
    async def release(self, fh: int) -> None:
        await self.fs.release(fh)

    @boundary
    async def unlink(self, parent_inode: int, name: bytes, ctx: Ctx) -> None:
        await self.fs.unlink(parent_inode, name, ctx)

    @boundary
    async def rename(
        self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
        flags: int, ctx: Ctx,
    ) -> None:  # fmt: skip
        await self.fs.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx)

    @boundary
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: Ctx
    ) -> pyfuse3.EntryAttributes:
        return attributes(await self.fs.symlink(parent_inode, name, target, ctx))

    @boundary
    async def readlink(self, inode: int, ctx: Ctx) -> bytes:
        return await self.fs.readlink(inode, ctx)

    @boundary
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Ctx
    ) -> pyfuse3.EntryAttributes:
        return attributes(await self.fs.link(inode, new_parent_inode, new_name, ctx))

    @boundary
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Ctx
    ) -> pyfuse3.EntryAttributes:
        return attributes(await self.fs.mknod(parent_inode, name, mode, rdev, ctx))

    # ------------------------------------------------------------ extended attributes
    @boundary
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Ctx) -> None:
        await self.fs.setxattr(inode, name, value, ctx)

    @boundary
    async def getxattr(self, inode: int, name: bytes, ctx: Ctx) -> bytes:
        return await self.fs.getxattr(inode, name, ctx)

    @boundary
    async def listxattr(self, inode: int, ctx: Ctx) -> list[bytes]:
        return await self.fs.listxattr(inode, ctx)

    @boundary
    async def removexattr(self, inode: int, name: bytes, ctx: Ctx) -> None:
        await self.fs.removexattr(inode, name, ctx)
