"""Every file type through the kernel (issue 15): regular, directory, symlink, fifo, unix
socket, character and block device, each created, stat'ed, chmod'ed, chown'ed, given
times, renamed onto every other type and unlinked; as root and as another user of an
allow_other mount; kept across a remount. Also binary xattrs across a remount and a
descriptor that outlives the name it was opened by."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Mount

pytestmark = pytest.mark.mounted

NOBODY = 65534
TIMES = (1_500_000_000_123_456_789, 1_600_000_000_987_654_321)  # atime, mtime (ns)


def make_fifo(p: Path) -> None:
    os.mkfifo(p, 0o640)


def make_socket(p: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(p))  # the kernel's mknod(S_IFSOCK): the name stays after close


def make_char(p: Path) -> None:
    os.mknod(p, stat.S_IFCHR | 0o640, os.makedev(1, 3))


def make_block(p: Path) -> None:
    os.mknod(p, stat.S_IFBLK | 0o640, os.makedev(7, 42))


def make_file(p: Path) -> None:
    p.write_bytes(b"content")
    os.chmod(p, 0o640)


def make_dir(p: Path) -> None:
    p.mkdir(0o750)


def make_link(p: Path) -> None:
    os.symlink("somewhere", p)


KINDS: dict[str, tuple[Callable[[Path], None], int]] = {
    "file": (make_file, stat.S_IFREG),
    "dir": (make_dir, stat.S_IFDIR),
    "link": (make_link, stat.S_IFLNK),
    "fifo": (make_fifo, stat.S_IFIFO),
    "socket": (make_socket, stat.S_IFSOCK),
    "char": (make_char, stat.S_IFCHR),
    "block": (make_block, stat.S_IFBLK),
}
RDEV = {"char": os.makedev(1, 3), "block": os.makedev(7, 42)}


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A mount root another user can reach (pytest's tmp_path is 0700)."""
    root = Path(tempfile.mkdtemp(prefix="s3fuse-posix-", dir="/tmp"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def as_nobody(fn: Callable[[], None]) -> str:
    """fn() in a forked child running as uid/gid 65534 (no supplementary groups): its
    failure as text, "" when it returned. A fork, not an exec: the test's interpreter may
    sit where that user cannot read."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only system calls, then _exit
        os.close(r)
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            fn()
            out = b""
        except BaseException as e:  # reported to the parent
            out = repr(e).encode() or b"failed"
        os.write(w, out)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        report = f.read().decode()
    os.waitpid(pid, 0)
    return report


def refused(err: int, fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except OSError as e:
        assert e.errno == err, (fn, args, e)
    else:
        raise AssertionError(f"{fn.__name__}{args} succeeded")


@pytest.mark.semantics("NAME-SPECIAL")
def test_every_file_type_is_created_changed_and_kept(
    mount_factory: Any, bucket: str, s3: Any, open_root: Path
) -> None:
    m: Mount = mount_factory(bucket, "-o", "allow_other", root=open_root)
    for name, (make, kind) in KINDS.items():
        p = m / name
        make(p)
        st = os.lstat(p)
        assert stat.S_IFMT(st.st_mode) == kind, name
        assert st.st_rdev == RDEV.get(name, 0), name
        if kind != stat.S_IFLNK:  # symlinks: chmod follows, chown -h and times alike
            os.chmod(p, 0o604)
        os.chown(p, NOBODY, NOBODY, follow_symlinks=False)
        os.utime(p, ns=TIMES, follow_symlinks=False)
        st = os.lstat(p)
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY), name
        assert st.st_mtime_ns == TIMES[1] and st.st_atime_ns == TIMES[0], name
        with pytest.raises(FileExistsError):
            os.mkfifo(p)
        with pytest.raises(FileExistsError):
            os.mkdir(p)
    # a fifo's I/O is the kernel's: nothing goes to S3
    fd = os.open(m / "fifo", os.O_RDONLY | os.O_NONBLOCK)
    try:
        with open(m / "fifo", "wb", buffering=0) as w:
            w.write(b"through the pipe")
        assert os.read(fd, 100) == b"through the pipe"
    finally:
        os.close(fd)
    md = s3.head_object(Bucket=bucket, Key="block")["Metadata"]
    assert int(md["mode"]) == stat.S_IFBLK | 0o604 and int(md["rdev"]) == os.makedev(7, 42)
    assert s3.head_object(Bucket=bucket, Key="fifo")["ContentLength"] == 0

    m.unmount()
    m2 = mount_factory(bucket, "-o", "allow_other", root=open_root)
    for name, (_, kind) in KINDS.items():
        st = os.lstat(m2 / name)
        assert stat.S_IFMT(st.st_mode) == kind, name
        if kind != stat.S_IFLNK:
            assert stat.S_IMODE(st.st_mode) == 0o604, name
        assert (st.st_uid, st.st_gid, st.st_rdev) == (NOBODY, NOBODY, RDEV.get(name, 0)), name
        assert (st.st_atime_ns, st.st_mtime_ns) == TIMES, name
    for name in KINDS:
        if name != "dir":
            os.unlink(m2 / name)
    os.rmdir(m2 / "dir")
    assert os.listdir(m2.path) == []


@pytest.mark.parametrize("source", [k for k in KINDS if k != "dir"])
def test_rename_onto_every_other_type(
    mount_factory: Any, bucket: str, source: str, open_root: Path
) -> None:
    m: Mount = mount_factory(bucket, root=open_root)
    for target, (make, kind) in KINDS.items():
        if target == source:
            continue
        KINDS[source][0](m / "src")
        make(m / "dst")
        if kind == stat.S_IFDIR:
            with pytest.raises(IsADirectoryError):
                os.rename(m / "src", m / "dst")
            os.rmdir(m / "dst")
            os.unlink(m / "src")
            continue
        os.rename(m / "src", m / "dst")
        st = os.lstat(m / "dst")
        assert stat.S_IFMT(st.st_mode) == KINDS[source][1], (source, target)
        assert st.st_rdev == RDEV.get(source, 0)
        assert not os.path.lexists(m / "src")
        os.unlink(m / "dst")
    # a directory onto a non-directory: ENOTDIR
    os.mkdir(m / "d")
    KINDS[source][0](m / "x")
    with pytest.raises(NotADirectoryError):
        os.rename(m / "d", m / "x")
    assert sorted(os.listdir(m.path)) == ["d", "x"]


def test_another_user_creates_every_type_and_meets_the_kernel_s_rules(
    mount_factory: Any, bucket: str, open_root: Path
) -> None:
    m: Mount = mount_factory(bucket, "-o", "allow_other", root=open_root)
    os.mkdir(m / "shared")
    os.chmod(m / "shared", 0o777)
    (m / "roots").write_bytes(b"r")
    d = m.path

    def nobody() -> None:
        os.mkfifo(d / "shared/fifo", 0o600)
        make_socket(d / "shared/sock")
        (d / "shared/file").write_bytes(b"")
        os.mkdir(d / "shared/dir")
        os.symlink("file", d / "shared/link")
        for n in ("fifo", "sock", "file", "dir"):
            st = os.lstat(d / "shared" / n)
            assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY), n
            os.chmod(d / "shared" / n, 0o640)
            os.utime(d / "shared" / n, ns=(1, 2))
        refused(errno.EPERM, os.chown, d / "shared/fifo", 0, 0)  # giving away: root only
        refused(errno.EPERM, os.chmod, d / "roots", 0o777)  # not the owner
        dev = os.makedev(1, 3)  # (0 would be a whiteout, which needs no privilege)
        refused(errno.EPERM, os.mknod, d / "shared/dev", stat.S_IFCHR | 0o600, dev)
        refused(errno.EACCES, os.mkfifo, d / "nope")  # the root directory: root's, 0755

    assert as_nobody(nobody) == ""
    names = sorted(os.listdir(m / "shared"))
    assert names == ["dir", "fifo", "file", "link", "sock"]
    assert stat.S_ISFIFO(os.lstat(m / "shared/fifo").st_mode)


@pytest.mark.semantics("NAME-XATTR-BYTES")
def test_binary_xattrs_round_trip_through_the_kernel_and_a_remount(
    mount_factory: Any, bucket: str, open_root: Path
) -> None:
    m: Mount = mount_factory(bucket, root=open_root)
    values = {"user.bin": bytes(range(256)), "user.text": "\u00e9t\u00e9".encode(),
              "user.empty": b"", "user.plain": b"v1"}  # fmt: skip
    (m / "f").write_bytes(b"x")
    for k, v in values.items():
        os.setxattr(m / "f", k, v)
    os.rename(m / "f", m / "g")
    m.unmount()
    m2 = mount_factory(bucket, root=open_root)
    for k, v in values.items():
        assert os.getxattr(m2 / "g", k) == v, k
    with pytest.raises(OSError) as e:
        os.setxattr(m2 / "g", "user.huge", os.urandom(1600))  # base64: over 2 KB
    assert e.value.errno == errno.E2BIG


@pytest.mark.semantics("NAME-OPEN-FD")
def test_a_descriptor_outlives_the_name_it_was_opened_by(mnt: Mount) -> None:
    (mnt / "f").write_bytes(b"old content")
    (mnt / "tmp").write_bytes(b"new content")
    with open(mnt / "f", "rb") as old:
        os.rename(mnt / "tmp", mnt / "f")  # an editor's or rsync's save
        assert old.read() == b"old content"
    assert (mnt / "f").read_bytes() == b"new content"
    with open(mnt / "f", "r+b") as f:
        os.unlink(mnt / "f")
        f.write(b"NEW")
        f.flush()
        f.seek(0)
        assert f.read() == b"NEW content"
    assert not (mnt / "f").exists()
