"""POSIX as a conformance suite checks it, on the core without a kernel (issue 15): special
files (fifos, sockets, devices) as zero-byte objects, user xattrs of any bytes, ctime and
the parent's times, atime. Each persistence claim is checked by a second mount (a new core
over the same bucket) and by what another client sees in S3. The kernel path (mknod(2),
bind(2), a fifo's I/O) is in test_posix.py."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from s3fuse.core.types import ROOT_INODE, Entry
from tests.conftest import Backend
from tests.core_harness import CTX, Core, on_host, refused, run_core
from tests.servers import MotoServer, RecordingProxy

KINDS = {
    "fifo": (stat.S_IFIFO, 0),
    "socket": (stat.S_IFSOCK, 0),
    "char": (stat.S_IFCHR, os.makedev(1, 3)),
    "block": (stat.S_IFBLK, os.makedev(7, 42)),
}


def head_meta(s3: Any, bucket: str, key: str) -> dict[str, str]:
    return dict(s3.head_object(Bucket=bucket, Key=key)["Metadata"])


async def mknod(c: Core, path: str, kind: int, rdev: int, perms: int = 0o640) -> Entry:
    parent, _, name = path.rpartition("/")
    return await c.fs.mknod(await c.ino(parent), name.encode(), kind | perms, rdev, CTX)


class Times:
    """A setattr of atime and/or mtime, as utimensat(2) sends it."""

    update_mode = update_uid = update_gid = update_size = False

    def __init__(self, *, atime_ns: int | None = None, mtime_ns: int | None = None) -> None:
        self.update_atime, self.update_mtime = atime_ns is not None, mtime_ns is not None
        self.st_atime_ns, self.st_mtime_ns = atime_ns or 0, mtime_ns or 0
        self.st_mode = self.st_uid = self.st_gid = self.st_size = 0


@pytest.mark.semantics("NAME-SPECIAL")
def test_special_files_are_zero_byte_objects_that_survive_a_remount(
    moto: MotoServer, s3: Any, bucket: str, tmp_path: Path
) -> None:
    async def make(c: Core) -> None:
        await c.mkdir("/d")
        for name, (kind, rdev) in KINDS.items():
            e = await mknod(c, f"/d/{name}", kind, rdev)
            assert (stat.S_IFMT(e.st_mode), e.st_rdev, e.st_size) == (kind, rdev, 0)
        await mknod(c, "/d/plain", 0, 0)  # mknod(2) of a regular file: an empty file
        # EEXIST for any existing type (the kernel asks lookup first; this is its answer)
        for name in [*KINDS, "plain"]:
            await c.ino(f"/d/{name}")

    run_core(bucket, moto.url, tmp_path / "one", make)
    for name, (kind, rdev) in KINDS.items():
        md = head_meta(s3, bucket, f"d/{name}")
        assert int(md["mode"]) == kind | 0o640
        assert ("rdev" in md) == bool(rdev) and int(md.get("rdev", 0)) == rdev
        body = s3.get_object(Bucket=bucket, Key=f"d/{name}")["Body"].read()
        assert body == b""
    assert int(head_meta(s3, bucket, "d/plain")["mode"]) == stat.S_IFREG | 0o640

    async def check(c: Core) -> None:
        assert await c.listdir("/d") == sorted([*KINDS, "plain"])
        for name, (kind, rdev) in KINDS.items():
            st = await c.stat(f"/d/{name}")
            assert (st.st_mode, st.st_rdev, st.st_size) == (kind | 0o640, rdev, 0)
        # chmod, rename and unlink like any file; the type stays
        await c.chmod("/d/fifo", 0o604)
        await c.rename("/d/fifo", "/d/fifo2")
        await c.rename("/d/char", "/d/plain")  # onto another type
        await c.unlink("/d/socket")
        await refused(errno.EINVAL, c.fs.readlink(await c.ino("/d/block"), CTX))

    run_core(bucket, moto.url, tmp_path / "two", check)

    async def after(c: Core) -> None:
        assert await c.listdir("/d") == ["block", "fifo2", "plain"]
        assert (await c.stat("/d/fifo2")).st_mode == stat.S_IFIFO | 0o604
        st = await c.stat("/d/plain")
        assert (stat.S_IFMT(st.st_mode), st.st_rdev) == (stat.S_IFCHR, os.makedev(1, 3))

    run_core(bucket, moto.url, tmp_path / "three", after)


def test_mknod_refuses_what_is_no_file_type(moto: MotoServer, bucket: str, tmp_path: Path) -> None:
    async def body(c: Core) -> None:
        await refused(errno.EINVAL, mknod(c, "/x", stat.S_IFDIR, 0))
        await refused(errno.ENOENT, c.ino("/x"))

    run_core(bucket, moto.url, tmp_path / "spool", body)


BINARY_VALUES = {
    "user.bin": bytes(range(256)),
    "user.empty": b"",
    "user.utf8": "d\u00e9j\u00e0 vu \u2713".encode(),
    "user.padded": b"  two spaces each side  ",
    "user.lines": b"one\ntwo\r\n",
    "user.lookalike": b"s3fuse-b64:AAAA",
    "user.plain": b"text/plain; charset=utf-8",
}


@pytest.mark.semantics("NAME-XATTR-BYTES")
def test_user_xattrs_of_any_bytes_round_trip_through_a_remount_and_a_copy(
    moto: MotoServer, s3: Any, bucket: str, tmp_path: Path
) -> None:
    async def write(c: Core) -> None:
        await c.write("/f", b"data")
        for name, value in BINARY_VALUES.items():
            await c.setxattr("/f", name, value)
            assert await c.getxattr("/f", name) == value
        await c.rename("/f", "/g")  # a CopyObject carries them

    run_core(bucket, moto.url, tmp_path / "one", write)
    md = head_meta(s3, bucket, "g")
    assert md["plain"] == "text/plain; charset=utf-8"  # plain text stays readable as is
    assert md["utf8"].startswith("=?UTF-8?B?")

    async def read(c: Core) -> None:
        for name, value in BINARY_VALUES.items():
            assert await c.getxattr("/g", name) == value, name
        names = await c.fs.listxattr(await c.ino("/g"), CTX)
        assert set(BINARY_VALUES) <= {n.decode() for n in names}

    run_core(bucket, moto.url, tmp_path / "two", read)


def test_the_metadata_limit_counts_the_encoded_size(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    async def body(c: Core) -> None:
        await c.write("/f", b"x")
        await c.setxattr("/f", "user.fits", b"a" * 1900)  # plain: 1,900 bytes
        await c.setxattr("/f", "user.fits", b"")
        # 1,500 raw bytes are 2,000 once base64: over S3's 2 KB
        await refused(errno.E2BIG, c.setxattr("/f", "user.big", b"\x00" * 1500))
        await refused(errno.ENODATA, c.getxattr("/f", "user.big"))

    run_core(bucket, moto.url, tmp_path / "spool", body)


@pytest.mark.semantics("NAME-TIMES")
def test_ctime_follows_every_change_and_is_stored(
    moto: MotoServer, s3: Any, bucket: str, tmp_path: Path
) -> None:
    async def body(c: Core) -> None:
        await c.write("/f", b"x")
        before = await c.stat("/f")
        await trio.sleep(0.02)
        await c.chmod("/f", 0o600)
        st = await c.stat("/f")
        assert st.st_ctime_ns > before.st_ctime_ns and st.st_mtime_ns == before.st_mtime_ns
        await trio.sleep(0.02)
        await c.rename("/f", "/g")
        assert (await c.stat("/g")).st_ctime_ns > st.st_ctime_ns

    run_core(bucket, moto.url, tmp_path / "one", body)
    md = head_meta(s3, bucket, "g")
    assert float(md["ctime"]) > float(md["mtime"])  # s3fs's key, seconds[.nanoseconds]

    async def again(c: Core) -> None:
        st = await c.stat("/g")
        assert st.st_ctime_ns > st.st_mtime_ns

    run_core(bucket, moto.url, tmp_path / "two", again)


def test_atime_and_mtime_are_set_apart_with_nanoseconds(
    moto: MotoServer, s3: Any, bucket: str, tmp_path: Path
) -> None:
    atime, mtime = 1_500_000_000_123_456_789, 1_600_000_000_987_654_321

    async def body(c: Core) -> None:
        await c.write("/f", b"x")
        ino = await c.ino("/f")
        both = Times(atime_ns=atime, mtime_ns=mtime)
        await c.fs.setattr(ino, both, both, None, CTX)
        st = await c.stat("/f")
        assert (st.st_atime_ns, st.st_mtime_ns) == (atime, mtime)
        # UTIME_OMIT for mtime: only atime changes
        changes = Times(atime_ns=atime + 1)
        await c.fs.setattr(ino, changes, changes, None, CTX)
        st = await c.stat("/f")
        assert (st.st_atime_ns, st.st_mtime_ns) == (atime + 1, mtime)

    run_core(bucket, moto.url, tmp_path / "one", body)
    md = head_meta(s3, bucket, "f")
    assert int(md["mtime"].split(".")[0]) == mtime // 10**9  # s3fs reads the seconds

    async def again(c: Core) -> None:
        st = await c.stat("/f")
        assert (st.st_atime_ns, st.st_mtime_ns) == (atime + 1, mtime)

    run_core(bucket, moto.url, tmp_path / "two", again)


@pytest.mark.semantics("NAME-TIMES")
def test_a_directory_s_times_change_with_its_names(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    async def body(c: Core) -> None:
        await c.mkdir("/d")
        seen = (await c.stat("/d")).st_mtime_ns
        root = (await c.fs.getattr(ROOT_INODE, CTX)).st_mtime_ns
        assert root >= seen  # mkdir changed the root's names
        steps = [
            lambda: c.write("/d/f", b"x"),
            lambda: mknod(c, "/d/p", stat.S_IFIFO, 0),
            lambda: c.rename("/d/f", "/d/g"),
            lambda: c.unlink("/d/g"),
            lambda: c.mkdir("/d/sub"),
            lambda: c.fs.rmdir(ROOT_INODE, b"nothing-here", CTX),
        ]
        for step in steps[:-1]:
            await trio.sleep(0.02)
            await step()
            st = await c.stat("/d")
            assert st.st_mtime_ns > seen and st.st_ctime_ns == st.st_mtime_ns
            seen = st.st_mtime_ns
        # past the trust window the directory is asked of S3 again: its times stay
        await trio.sleep(1.2)
        assert (await c.stat("/d")).st_mtime_ns == seen
        await refused(errno.ENOENT, steps[-1]())

    run_core(bucket, moto.url, tmp_path / "spool", body)


MiB = 1 << 20


async def open_read(c: Core, path: str) -> int:
    return (await c.fs.open(await c.ino(path), os.O_RDONLY, CTX)).fh


@pytest.mark.semantics("NAME-OPEN-FD")
def test_a_descriptor_keeps_its_file_when_a_rename_replaces_the_name(
    moto: MotoServer, s3: Any, bucket: str, tmp_path: Path
) -> None:
    async def body(c: Core) -> None:
        await c.write("/f", b"the old file")
        await c.write("/tmp", b"the new one")
        ro = await open_read(c, "/f")
        rw = (await c.fs.open(await c.ino("/f"), os.O_RDWR, CTX)).fh
        await c.rename("/tmp", "/f")
        assert await c.fs.read(ro, 0, 100) == b"the old file"
        # its writes go to the old file: they neither come back nor touch the new one
        await c.fs.write(rw, 0, b"THE")
        await c.fs.flush(rw)
        assert await c.fs.read(ro, 0, 100) == b"THE old file"
        for fh in (ro, rw):
            await c.fs.release(fh)
        assert await c.read("/f") == b"the new one"

    run_core(bucket, moto.url, tmp_path / "spool", body)
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == b"the new one"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["f"]


@pytest.mark.semantics("NAME-OPEN-FD")
@pytest.mark.parametrize("versioning", [True, False])
def test_a_descriptor_never_reads_another_client_s_replacement_mixed_in(
    server: Backend, tmp_path: Path, versioning: bool
) -> None:
    """A large file (read by ranges) replaced by another client after this descriptor
    read a part of it: the rest comes from the version it opened (versioned bucket), or
    the read fails with ESTALE; never the new version's bytes. A new open reads the new
    version. On moto and Ceph RGW (GetObject VersionId / If-Match)."""
    old, new = os.urandom(12 * MiB), os.urandom(12 * MiB)

    async def body(c: Core, bucket: str, tool: Any) -> None:
        await c.write("/big", old)
        fh = await open_read(c, "/big")
        near, far = 6 * MiB, 1 * MiB  # random reads: each a ranged GET of its blocks
        assert await c.fs.read(fh, near, 4096) == old[near : near + 4096]
        await trio.to_thread.run_sync(lambda: tool.put_object(Bucket=bucket, Key="big", Body=new))
        if versioning:
            assert await c.fs.read(fh, far, 4096) == old[far : far + 4096]
        else:
            await refused(errno.ESTALE, c.fs.read(fh, far, 4096))
        await c.fs.release(fh)
        await trio.sleep(1.1)  # past the trust window: the next open asks S3
        fresh = await open_read(c, "/big")
        assert await c.fs.read(fresh, far, 4096) == new[far : far + 4096]
        await c.fs.release(fresh)

    def versioned(tool: Any, bucket: str) -> None:
        if versioning:
            tool.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    on_host(server, tmp_path, body, "meta_cache=0", setup=versioned)


def test_link_counts_of_directories_and_of_an_unlinked_open_file(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    async def body(c: Core) -> None:
        for d in ("/a", "/b", "/a/x", "/a/y"):
            await c.mkdir(d)
        await c.write("/a/f", b"x")  # files are no links of their directory
        assert (await c.stat("/a")).st_nlink == 4
        assert (await c.stat("/b")).st_nlink == 2
        await c.rename("/a/x", "/b/x")
        assert [(await c.stat(d)).st_nlink for d in ("/a", "/b")] == [3, 3]
        await c.fs.rmdir(await c.ino("/a"), b"y", CTX)
        assert (await c.stat("/a")).st_nlink == 2
        fh = await open_read(c, "/a/f")
        ino = await c.ino("/a/f")
        await c.unlink("/a/f")
        assert (await c.fs.getattr(ino, CTX)).st_nlink == 0  # fstat of the open descriptor
        await c.fs.release(fh)

    run_core(bucket, moto.url, tmp_path / "one", body)

    async def listed(c: Core) -> None:  # another mount counts them from a listing
        await c.listdir("/b")
        assert (await c.stat("/b")).st_nlink == 3

    run_core(bucket, moto.url, tmp_path / "two", listed)


@pytest.mark.parametrize("how", ["rename over", "unlink"])
def test_in_a_versioned_bucket_a_reader_keeps_its_version_without_a_download(
    bucket: str, s3: Any, proxy: RecordingProxy, tmp_path: Path, how: str
) -> None:
    """Reads pinned to the version the descriptor opened outlive the name: nothing is
    brought into the spool when the name goes (a large file would be downloaded whole)."""
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    old = os.urandom(3 * MiB)

    async def body(c: Core) -> None:
        await c.write("/f", old)
        await c.write("/tmp", b"the new one")
        fh = await open_read(c, "/f")
        await c.stat("/f")  # its version id is known (the upload's answer)
        proxy.clear()
        if how == "unlink":
            await c.unlink("/f")
        else:
            await c.rename("/tmp", "/f")
        assert proxy.requests("GET", "/f") == []  # no download of the old file
        assert await c.fs.read(fh, 0, 3 * MiB) == old
        gets = proxy.requests("GET", "/f")
        assert gets and all("versionId=" in r.path for r in gets)  # by the version it opened
        await c.fs.release(fh)

    run_core(bucket, proxy.url, tmp_path / "spool", body)
