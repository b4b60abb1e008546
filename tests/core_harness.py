"""Driving the filesystem core without a kernel: the daemon's own wiring (Daemon builds
the store, spool and core from a MountConfig), a trio loop with the nursery the daemon
would give, and helpers that do what the kernel does for a system call (resolve a path
by lookups, create + write + flush + release, ...). Tests call the core's handlers
directly and get the same exceptions the FUSE adapter maps to errnos."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from s3fuse.config import MountConfig, apply_options
from s3fuse.core.fs import S3Fs
from s3fuse.core.types import ROOT_INODE, Entry
from s3fuse.daemon import Daemon
from s3fuse.errors import FsError


@dataclass
class Ctx:
    uid: int = os.getuid()
    gid: int = os.getgid()
    pid: int = 0
    umask: int = 0o022


CTX = Ctx()


class ModeOnly:
    update_mode = True
    update_uid = update_gid = update_mtime = update_atime = update_size = False


class Mode:
    def __init__(self, mode: int) -> None:
        self.st_mode = mode
        self.st_uid = self.st_gid = self.st_size = self.st_mtime_ns = self.st_atime_ns = 0


class Core:
    """One core over a bucket, as a mount would have it, plus path-level helpers."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.fs: S3Fs = daemon.fs

    async def ino(self, path: str) -> int:
        ino = ROOT_INODE
        for part in [p for p in path.split("/") if p]:
            ino = (await self.fs.lookup(ino, part.encode(), CTX)).st_ino
        return ino

    async def stat(self, path: str) -> Entry:
        return await self.fs.getattr(await self.ino(path), CTX)

    def _split(self, path: str) -> tuple[str, bytes]:
        parent, _, name = path.rpartition("/")
        return parent, name.encode()

    async def write(self, path: str, data: bytes, *, append: bool = False) -> None:
        """open(O_CREAT|O_WRONLY[|O_TRUNC|O_APPEND]), write, close (flush + release)."""
        parent, name = self._split(path)
        pino = await self.ino(parent)
        try:
            ino = (await self.fs.lookup(pino, name, CTX)).st_ino
        except FsError as e:
            if e.errno != errno.ENOENT:
                raise
            opened, _ = await self.fs.create(pino, name, 0o644, os.O_WRONLY, CTX)
            off = 0
        else:
            flags = os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC)
            opened = await self.fs.open(ino, flags, CTX)
            off = (await self.fs.getattr(ino, CTX)).st_size if append else 0
        try:
            for i in range(0, len(data), 128 << 10):  # the kernel's largest WRITE
                off += await self.fs.write(opened.fh, off, data[i : i + (128 << 10)])
            await self.fs.flush(opened.fh)
        finally:
            await self.fs.release(opened.fh)

    async def pread(self, path: str, off: int, size: int) -> bytes:
        """One read at off, as a random read through the kernel would ask it."""
        opened = await self.fs.open(await self.ino(path), os.O_RDONLY, CTX)
        try:
            return await self.fs.read(opened.fh, off, size)
        finally:
            await self.fs.release(opened.fh)

    async def read(self, path: str) -> bytes:
        ino = await self.ino(path)
        opened = await self.fs.open(ino, os.O_RDONLY, CTX)
        out = []
        try:
            off = 0
            while chunk := await self.fs.read(opened.fh, off, 1 << 20):
                out.append(chunk)
                off += len(chunk)
        finally:
            await self.fs.release(opened.fh)
        return b"".join(out)

    async def listdir(self, path: str) -> list[str]:
        fh = await self.fs.opendir(await self.ino(path), CTX)
        names: list[str] = []

        def reply(name: bytes, entry: Entry, next_id: int) -> bool:
            names.append(name.decode())
            return True

        try:
            await self.fs.readdir(fh, 0, reply)
        finally:
            await self.fs.releasedir(fh)
        return sorted(n for n in names if n not in (".", ".."))

    async def mkdir(self, path: str) -> None:
        parent, name = self._split(path)
        await self.fs.mkdir(await self.ino(parent), name, stat.S_IFDIR | 0o755, CTX)

    async def unlink(self, path: str) -> None:
        parent, name = self._split(path)
        await self.fs.unlink(await self.ino(parent), name, CTX)

    async def getxattr(self, path: str, name: str) -> bytes:
        return await self.fs.getxattr(await self.ino(path), name.encode(), CTX)

    async def setxattr(self, path: str, name: str, value: bytes) -> None:
        await self.fs.setxattr(await self.ino(path), name.encode(), value, CTX)

    async def chmod(self, path: str, mode: int) -> None:
        await self.fs.setattr(await self.ino(path), Mode(mode), ModeOnly(), None, CTX)

    async def rename(self, old: str, new: str, flags: int = 0) -> None:
        (op, on), (np, nn) = self._split(old), self._split(new)
        await self.fs.rename(await self.ino(op), on, await self.ino(np), nn, flags, CTX)


def _daemon(bucket: str, endpoint: str, spool: Path, options: tuple[str, ...]) -> Daemon:
    cfg = MountConfig(bucket=bucket, mountpoint=str(spool / "unused-mountpoint"),
                      endpoint_url=endpoint, spool_dir=str(spool))  # fmt: skip
    apply_options(cfg, list(options))
    cfg.validate()
    daemon = Daemon(cfg)
    daemon.open()
    return daemon


@contextlib.asynccontextmanager
async def _serving(daemon: Daemon, unmount: bool) -> AsyncIterator[Core]:
    """The daemon's life around a body: crash recovery, then serving; what is still
    pending is uploaded at the end, as at unmount (unmount=False: the daemon dies)."""
    rec = await daemon.spool.recover()
    await daemon.fs.adopt(rec.kept)
    async with daemon.tasks.serving() as nursery:
        try:
            yield Core(daemon)
        finally:
            if unmount:
                with trio.CancelScope(shield=True):
                    await daemon.fs.upload_pending()
            nursery.cancel_scope.cancel()


def run_core(
    bucket: str, endpoint: str, spool: Path, body: Callable[[Core], Awaitable[Any]],
    *options: str, unmount: bool = True,
) -> Any:  # fmt: skip
    """Run body(core) in a trio loop over a core wired as the daemon wires it (crash
    recovery first, then the nursery for read-ahead and hashing); what is still pending
    is uploaded at the end, as at unmount (unmount=False: the daemon dies instead)."""
    daemon = _daemon(bucket, endpoint, spool, options)

    async def main() -> Any:
        async with _serving(daemon, unmount) as core:
            return await body(core)

    try:
        return trio.run(main)
    finally:
        daemon.close()


def run_hosts(
    bucket: str, endpoint: str | list[str], spools: list[Path],
    body: Callable[[list[Core]], Awaitable[Any]], *options: str,
) -> Any:  # fmt: skip
    """body(cores): several cores over one bucket in one trio loop, each with its own
    spool and caches: the hosts of a fleet that share a bucket, without kernels. One
    endpoint for all, or one per host (gateways of one cluster)."""
    endpoints = endpoint if isinstance(endpoint, list) else [endpoint] * len(spools)
    daemons = [
        _daemon(bucket, url, spool, options) for url, spool in zip(endpoints, spools, strict=True)
    ]

    async def main() -> Any:
        async with contextlib.AsyncExitStack() as stack:
            cores = [await stack.enter_async_context(_serving(d, True)) for d in daemons]
            return await body(cores)

    try:
        return trio.run(main)
    finally:
        for d in daemons:
            d.close()


def on_host(
    server: Any, tmp_path: Path, body: Callable[[Core, str, Any], Awaitable[None]],
    *options: str, setup: Callable[[Any, str], None] | None = None,
) -> str:  # fmt: skip
    """body(core, bucket, tool) on one host over a new bucket of server (a conftest
    Backend), boto3 as another client (straight to the server, not through the proxy);
    setup(tool, bucket) before the host starts. Returns the bucket."""
    bucket = server.bucket()
    tool = server.client()
    if setup is not None:
        setup(tool, bucket)
    run_hosts(bucket, server.proxy.url, [tmp_path / "host"],
              lambda cores: body(cores[0], bucket, tool), *options)  # fmt: skip
    return bucket


def body_of(tool: Any, bucket: str, key: str) -> bytes | None:
    """An object's bytes as another client reads them, None when there is none."""
    try:
        return bytes(tool.get_object(Bucket=bucket, Key=key)["Body"].read())
    except tool.exceptions.NoSuchKey:
        return None


async def refused(errno_: int, op: Awaitable[Any]) -> None:
    """op fails with FsError(errno_)."""
    with pytest.raises(FsError) as e:
        await op
    assert e.value.errno == errno_, e.value
