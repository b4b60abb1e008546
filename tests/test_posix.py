"""The POSIX behaviour real programs rely on, through the kernel, checked in S3."""

from __future__ import annotations

import ctypes
import errno
import os
import shlex
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Mount
from tests.servers import RecordingProxy

pytestmark = pytest.mark.mounted

RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)


def renameat2(old: Path, new: Path, flags: int) -> None:
    if _libc.renameat2(AT_FDCWD, bytes(old), AT_FDCWD, bytes(new), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def sh(cmd: str, cwd: Path | None = None) -> str:
    """cmd in bash, in cwd. The shell changes into cwd itself: subprocess's own chdir
    runs in a vfork()ed child while this process (Python 3.11) holds its interpreter lock,
    so a lookup the mount must ask S3 about, through the recording proxy that lives in this
    process, could not be answered (the mount's read timeout, then the test, failed)."""
    if cwd is not None:
        cmd = f"cd {shlex.quote(str(cwd))} && {cmd}"
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True)
    assert r.returncode == 0, f"{cmd}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def keys(s3: Any, bucket: str, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.update(o["Key"] for o in page.get("Contents", []))
    return out


def body(s3: Any, bucket: str, key: str) -> bytes:
    data: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


# ------------------------------------------------------------------ rename
@pytest.mark.semantics("NAME-RENAME")
def test_rename_file_keeps_every_header(mnt: Mount, s3: Any) -> None:
    p = mnt / "a.txt"
    fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o640)
    os.write(fd, b"content")
    for k, v in {
        "user.s3.storage_class": "STANDARD_IA",
        "user.s3.sse": "AES256",
        "user.s3.grant_read": 'uri="http://acs.amazonaws.com/groups/global/AllUsers"',
        "user.s3.tagging": "t=1",
        "user.s3.cache_control": "max-age=5",
        "user.note": "kept",
    }.items():
        os.setxattr(p, k, v.encode())
    os.close(fd)
    os.utime(p, ns=(1_500_000_000_000_000_000,) * 2)
    os.rename(p, mnt / "b.txt")
    assert keys(s3, mnt.bucket) == {"b.txt"}
    h = s3.head_object(Bucket=mnt.bucket, Key="b.txt")
    assert h["StorageClass"] == "STANDARD_IA" and h["ServerSideEncryption"] == "AES256"
    assert h["CacheControl"] == "max-age=5" and h["Metadata"]["note"] == "kept"
    assert int(h["Metadata"]["mode"]) == stat.S_IFREG | 0o640
    assert h["Metadata"]["mtime"] == "1500000000"
    grants = s3.get_object_acl(Bucket=mnt.bucket, Key="b.txt")["Grants"]
    assert any(g["Grantee"].get("URI", "").endswith("AllUsers") for g in grants)
    assert s3.get_object_tagging(Bucket=mnt.bucket, Key="b.txt")["TagSet"] == [
        {"Key": "t", "Value": "1"}
    ]
    assert (mnt / "b.txt").read_bytes() == b"content"
    assert not (mnt / "a.txt").exists()


@pytest.mark.semantics("NAME-RENAME")
def test_rename_over_existing_and_flags(mnt: Mount, s3: Any) -> None:
    (mnt / "x").write_bytes(b"new")
    (mnt / "y").write_bytes(b"old")
    with pytest.raises(OSError) as e:
        renameat2(mnt / "x", mnt / "y", RENAME_NOREPLACE)
    assert e.value.errno == errno.EEXIST
    with pytest.raises(OSError) as e:
        renameat2(mnt / "x", mnt / "y", RENAME_EXCHANGE)
    assert e.value.errno in (errno.EINVAL, errno.ENOTSUP)
    assert body(s3, mnt.bucket, "y") == b"old"
    os.rename(mnt / "x", mnt / "y")
    assert keys(s3, mnt.bucket) == {"y"} and body(s3, mnt.bucket, "y") == b"new"
    renameat2(mnt / "y", mnt / "z", RENAME_NOREPLACE)
    assert keys(s3, mnt.bucket) == {"z"}


def test_rename_directory_with_contents(mnt: Mount, s3: Any) -> None:
    for i in range(1003):  # more than one LIST page
        s3.put_object(Bucket=mnt.bucket, Key=f"src/f{i:04d}", Body=str(i).encode())
    s3.put_object(
        Bucket=mnt.bucket,
        Key="src/sub/deep.txt",
        Body=b"deep",
        StorageClass="ONEZONE_IA",
        Metadata={"k": "v"},
    )
    os.rename(mnt / "src", mnt / "dst")
    assert keys(s3, mnt.bucket, "src/") == set()
    moved = keys(s3, mnt.bucket, "dst/")
    assert len(moved) == 1004
    assert body(s3, mnt.bucket, "dst/f0500") == b"500"
    h = s3.head_object(Bucket=mnt.bucket, Key="dst/sub/deep.txt")
    assert h["StorageClass"] == "ONEZONE_IA" and h["Metadata"] == {"k": "v"}
    assert len(os.listdir(mnt / "dst")) == 1004
    assert (mnt / "dst/sub/deep.txt").read_bytes() == b"deep"
    assert not (mnt / "src").exists()


@pytest.mark.semantics("NAME-RENAME")
def test_failed_directory_rename_loses_nothing(mnt: Mount, s3: Any, proxy: RecordingProxy) -> None:
    for i in range(20):
        s3.put_object(Bucket=mnt.bucket, Key=f"d/f{i:02d}", Body=b"x")

    def fault(r: Any) -> Any:
        # every attempt to copy one of the objects fails (retries included)
        if "x-amz-copy-source" in r.headers and r.key_path.endswith("/e/f10"):
            return 500
        return None

    proxy.fault = fault
    try:
        with pytest.raises(OSError) as e:
            os.rename(mnt / "d", mnt / "e")
        assert e.value.errno == errno.EIO
    finally:
        proxy.fault = None
    assert keys(s3, mnt.bucket, "d/") == {f"d/f{i:02d}" for i in range(20)}
    assert keys(s3, mnt.bucket, "e/") == set()  # the copies made were removed
    assert "every object stays under its old name" in mnt.log_text()


def test_rename_open_file_being_written(mnt: Mount, s3: Any) -> None:
    with open(mnt / "draft", "wb") as f:
        f.write(b"part one ")
        os.rename(mnt / "draft", mnt / "final")
        f.write(b"part two")
    assert keys(s3, mnt.bucket) == {"final"}
    assert body(s3, mnt.bucket, "final") == b"part one part two"
    # the same for a stored file that is rewritten while renamed
    with open(mnt / "final", "r+b") as f:
        f.seek(0)
        f.write(b"PART")
        os.rename(mnt / "final", mnt / "moved")
    assert keys(s3, mnt.bucket) == {"moved"}
    assert body(s3, mnt.bucket, "moved") == b"PART one part two"


def test_rename_into_new_directory_and_mv_tree(mnt: Mount, s3: Any) -> None:
    sh(f"mkdir -p {mnt / 'a/b'} && echo 1 > {mnt / 'a/b/one'} && mkdir {mnt / 'z'}")
    sh(f"mv {mnt / 'a'} {mnt / 'z'}/")
    assert keys(s3, mnt.bucket) == {"z/", "z/a/", "z/a/b/", "z/a/b/one"}
    assert (mnt / "z/a/b/one").read_text() == "1\n"
    with pytest.raises(OSError) as e:
        os.rename(mnt / "z", mnt / "z/a/inside")
    assert e.value.errno == errno.EINVAL


# ------------------------------------------------------------------ content changes
def test_truncate_grow_shrink_and_sparse(mnt: Mount, s3: Any) -> None:
    p = mnt / "t.bin"
    p.write_bytes(b"0123456789")
    os.truncate(p, 4)
    assert body(s3, mnt.bucket, "t.bin") == b"0123"
    os.truncate(p, 8)
    assert body(s3, mnt.bucket, "t.bin") == b"0123\0\0\0\0"
    with open(p, "r+b") as f:
        f.seek(20)
        f.write(b"end")
    assert body(s3, mnt.bucket, "t.bin") == b"0123" + b"\0" * 16 + b"end"
    with open(p, "r+b") as f:
        f.truncate(2)
    assert body(s3, mnt.bucket, "t.bin") == b"01"
    assert os.stat(p).st_size == 2


def test_o_trunc_never_downloads(mnt: Mount, s3: Any, proxy: RecordingProxy) -> None:
    s3.put_object(Bucket=mnt.bucket, Key="big", Body=b"z" * (4 << 20))
    os.stat(mnt / "big")
    proxy.clear()
    with open(mnt / "big", "wb") as f:
        f.write(b"small")
    downloads = [r for r in proxy.requests("GET") if r.path.endswith("/big")]  # not ?acl
    assert not downloads
    assert body(s3, mnt.bucket, "big") == b"small"


@pytest.mark.semantics("HDR-INTEROP")
def test_chmod_chown_touch_persist_across_remount(mount_factory: Any, bucket: str, s3: Any) -> None:
    m = mount_factory(bucket)
    sh(
        f"echo x > {m / 'f'} && chmod 600 {m / 'f'} && chown 1234:5678 {m / 'f'}"
        f" && touch -d '2001-02-03 04:05:06 UTC' {m / 'f'} && touch {m / 'new'}"
    )
    sh(f"mkdir {m / 'd'} && chmod 700 {m / 'd'}")
    assert body(s3, bucket, "new") == b""
    m.unmount()
    m2 = mount_factory(bucket)
    st = os.stat(m2 / "f")
    assert stat.S_IMODE(st.st_mode) == 0o600 and (st.st_uid, st.st_gid) == (1234, 5678)
    assert st.st_mtime == 981173106
    assert stat.S_IMODE(os.stat(m2 / "d").st_mode) == 0o700
    assert (m2 / "f").read_text() == "x\n"


def test_symlinks_s3fs_style(mount_factory: Any, bucket: str, s3: Any) -> None:
    m = mount_factory(bucket)
    (m / "real").write_bytes(b"data")
    os.symlink("real", m / "link")
    os.symlink("../nowhere/at/all", m / "dangling")
    assert os.readlink(m / "link") == "real"
    assert (m / "link").read_bytes() == b"data"
    assert os.readlink(m / "dangling") == "../nowhere/at/all"
    assert not (m / "dangling").exists() and (m / "dangling").is_symlink()
    r = s3.get_object(Bucket=bucket, Key="link")
    assert r["Body"].read() == b"real"
    assert stat.S_ISLNK(int(r["Metadata"]["mode"]))
    # a symlink written by s3fs-fuse (or any tool following its convention)
    s3.put_object(
        Bucket=bucket,
        Key="foreign-link",
        Body=b"real",
        Metadata={"mode": str(stat.S_IFLNK | 0o777)},
    )
    m.unmount()
    m2 = mount_factory(bucket)
    assert os.readlink(m2 / "link") == "real"
    assert os.readlink(m2 / "foreign-link") == "real"
    assert stat.S_ISLNK(os.lstat(m2 / "dangling").st_mode)
    os.rename(m2 / "link", m2 / "link2")
    assert os.readlink(m2 / "link2") == "real"


def test_hard_links_refused(mnt: Mount) -> None:
    (mnt / "f").write_bytes(b"x")
    with pytest.raises(OSError) as e:
        os.link(mnt / "f", mnt / "g")
    assert e.value.errno == errno.EPERM


def test_unlink_open_file(mnt: Mount, s3: Any) -> None:
    (mnt / "gone").write_bytes(b"still readable")
    with open(mnt / "gone", "r+b") as f:
        os.unlink(mnt / "gone")
        assert keys(s3, mnt.bucket) == set()
        assert f.read() == b"still readable"
        f.write(b" and writable")
        f.seek(0)
        assert f.read() == b"still readable and writable"
    assert keys(s3, mnt.bucket) == set()  # close did not resurrect it
    assert not (mnt / "gone").exists()


def test_o_excl_asks_s3(mnt: Mount, s3: Any) -> None:
    os.listdir(mnt.path)  # a cached listing that does not know the key yet
    s3.put_object(Bucket=mnt.bucket, Key="race", Body=b"theirs")
    with pytest.raises(FileExistsError):
        os.open(mnt / "race", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    assert body(s3, mnt.bucket, "race") == b"theirs"


def test_statfs_and_fsync_dir(mnt: Mount) -> None:
    out = sh(f"df -P {mnt.path}").splitlines()[-1].split()
    assert int(out[1]) > 1 << 30  # total 1K-blocks: large
    fd = os.open(mnt.path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_odd_names_round_trip(mnt: Mount, s3: Any) -> None:
    # "\n" is left out: moto's router answers 404 to a key with a newline (AWS and RGW
    # take it; the name maps to the key unchanged)
    names = ["100%", "a+b", "what?", "#hash", "sp ace", "ünï ✓"]
    for n in names:
        (mnt / n).write_bytes(n.encode())
    assert keys(s3, mnt.bucket) == set(names)
    assert sorted(os.listdir(mnt.path)) == sorted(names)
    for n in names:
        assert (mnt / n).read_bytes() == n.encode()


# ------------------------------------------------------------------ programs
def test_git(mnt: Mount) -> None:
    repo = mnt / "repo"
    repo.mkdir()
    env = "GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@e GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@e"
    sh(
        "git init -q . && echo hi > README && git add README && "
        f"{env} git commit -qm first && echo more >> README && "
        f"{env} git commit -qam second && git log --oneline && git fsck",
        cwd=repo,
    )
    log = sh("git log --format=%s", cwd=repo)
    assert log.split() == ["second", "first"]
    assert sh("git status --porcelain", cwd=repo) == ""


def test_tar_round_trip_with_symlinks(mnt: Mount, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d/file").write_bytes(os.urandom(70000))
    os.symlink("d/file", src / "ln")
    os.chmod(src / "d/file", 0o751)
    sh(f"tar -C {tmp_path} -cf {tmp_path}/a.tar src && tar -C {mnt.path} -xpf {tmp_path}/a.tar")
    assert os.readlink(mnt / "src/ln") == "d/file"
    assert (mnt / "src/d/file").read_bytes() == (src / "d/file").read_bytes()
    assert stat.S_IMODE(os.stat(mnt / "src/d/file").st_mode) == 0o751
    assert int(os.stat(mnt / "src/d/file").st_mtime) == int(os.stat(src / "d/file").st_mtime)
    sh(
        f"tar -C {mnt.path} -cf {tmp_path}/b.tar src && mkdir {tmp_path}/out && "
        f"tar -C {tmp_path}/out -xf {tmp_path}/b.tar"
    )
    assert os.readlink(tmp_path / "out/src/ln") == "d/file"
    assert (tmp_path / "out/src/d/file").read_bytes() == (src / "d/file").read_bytes()


def test_rsync_twice_transfers_nothing(mnt: Mount, tmp_path: Path) -> None:
    src = tmp_path / "tree"
    for i in range(12):
        p = src / f"d{i % 3}" / f"f{i}"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(100 + i))
    os.symlink("d0/f0", src / "lnk")
    sh(f"rsync -a {src}/ {mnt / 'dst'}/")
    second = sh(f"rsync -ai {src}/ {mnt / 'dst'}/")
    assert second.strip() == "", f"second rsync changed: {second}"
    sh(f"diff -r {src} {mnt / 'dst'}")


def test_sqlite(mnt: Mount) -> None:
    db = mnt / "db.sqlite"
    sh(f"sqlite3 {db} 'create table t(x); insert into t values (1),(2),(3);'")
    assert sh(f"sqlite3 {db} 'select sum(x) from t;'").strip() == "6"
    sh(f"sqlite3 {db} 'insert into t values (4);'")
    assert sh(f"sqlite3 {db} 'select count(*) from t;'").strip() == "4"


def test_sed_in_place_and_cp_a(mnt: Mount, s3: Any, tmp_path: Path) -> None:
    (mnt / "conf").write_text("a=1\nb=2\n")
    sh(f"sed -i 's/b=2/b=3/' {mnt / 'conf'}")
    assert (mnt / "conf").read_text() == "a=1\nb=3\n"
    assert body(s3, mnt.bucket, "conf") == b"a=1\nb=3\n"
    assert {k for k in keys(s3, mnt.bucket) if k.startswith("sed")} == set()
    src = tmp_path / "keep.sh"
    src.write_text("#!/bin/sh\n")
    os.chmod(src, 0o754)
    os.utime(src, ns=(1_234_567_890_000_000_000,) * 2)
    sh(f"cp -a {src} {mnt / 'keep.sh'}")
    st = os.stat(mnt / "keep.sh")
    assert stat.S_IMODE(st.st_mode) == 0o754 and st.st_mtime_ns == 1_234_567_890_000_000_000
    h = s3.head_object(Bucket=mnt.bucket, Key="keep.sh")
    assert h["Metadata"]["mtime"] == "1234567890"
