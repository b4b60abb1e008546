"""Through the kernel: real shell tools on a mount, objects checked with boto3."""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from s3fuse import kernel
from tests.conftest import Mount
from tests.servers import RecordingProxy

pytestmark = pytest.mark.mounted


def sh(cmd: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=True, **kw)


def obj(s3: Any, bucket: str, key: str) -> tuple[bytes, dict[str, Any]]:
    r = s3.get_object(Bucket=bucket, Key=key)
    return r["Body"].read(), r


def puts_of(proxy: RecordingProxy, bucket: str, key: str) -> list[Any]:
    path = f"/{bucket}/{quote(key)}"
    return [r for r in proxy.requests("PUT") if r.key_path == path]


def test_cp_cat_ls_and_content_md5(
    mnt: Mount, s3: Any, proxy: RecordingProxy, tmp_path: Any
) -> None:
    src = tmp_path / "src.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    src.write_bytes(data)
    sh(f"cp {src} {mnt / 'copy.bin'}")
    body, r = obj(s3, mnt.bucket, "copy.bin")
    assert body == data
    md5 = hashlib.md5(data)
    assert r["ETag"].strip('"') == md5.hexdigest()
    puts = puts_of(proxy, mnt.bucket, "copy.bin")
    assert len(puts) == 1, "one PutObject per closed file"
    assert puts[0].headers["content-md5"] == base64.b64encode(md5.digest()).decode()
    assert puts[0].body_md5 == md5.hexdigest()
    meta = r["Metadata"]
    assert int(meta["mode"]) == stat.S_IFREG | 0o644
    assert meta["uid"] == str(os.getuid()) and meta["gid"] == str(os.getgid())
    assert abs(float(meta["mtime"]) - os.stat(src).st_mtime) < 120
    assert sh(f"cat {mnt / 'copy.bin'} | md5sum").stdout.split()[0] == md5.hexdigest()
    out = sh(f"ls -l {mnt.path}").stdout
    assert "copy.bin" in out and str(len(data)) in out


def test_echo_mkdir_rmdir_rm(mnt: Mount, s3: Any) -> None:
    sh(f"echo hello > {mnt / 'hello.txt'}")
    body, r = obj(s3, mnt.bucket, "hello.txt")
    assert body == b"hello\n" and r["ContentType"] == "text/plain"
    sh(f"mkdir -p {mnt / 'a/b/c'}")
    for marker in ("a/", "a/b/", "a/b/c/"):
        body, r = obj(s3, mnt.bucket, marker)
        assert body == b"" and stat.S_ISDIR(int(r["Metadata"]["mode"]))
    sh(f"echo deep > {mnt / 'a/b/c/deep.txt'}")
    with pytest.raises(OSError) as e:
        os.rmdir(mnt / "a/b/c")
    assert e.value.errno == errno.ENOTEMPTY
    os.unlink(mnt / "a/b/c/deep.txt")
    os.rmdir(mnt / "a/b/c")
    assert "Contents" not in s3.list_objects_v2(Bucket=mnt.bucket, Prefix="a/b/c")
    sh(f"mkdir -p {mnt / 'a/x/y'} && echo 1 > {mnt / 'a/x/y/f'} && rm -r {mnt / 'a'}")
    assert "Contents" not in s3.list_objects_v2(Bucket=mnt.bucket, Prefix="a")
    assert sorted(os.listdir(mnt.path)) == ["hello.txt"]


def test_empty_file_and_touch(mnt: Mount, s3: Any) -> None:
    sh(f"touch {mnt / 'empty'} && : > {mnt / 'empty2'}")
    for k in ("empty", "empty2"):
        body, _ = obj(s3, mnt.bucket, k)
        assert body == b""
    assert os.stat(mnt / "empty").st_size == 0


def test_names_with_spaces_and_unicode(mnt: Mount, s3: Any) -> None:
    names = ["with space.txt", "ünïcødé ✓.txt", "percent%20plus+hash#q?.txt"]
    for n in names:
        (mnt.path / n).write_bytes(n.encode())
    for n in names:
        assert obj(s3, mnt.bucket, n)[0] == n.encode()
    assert sorted(os.listdir(mnt.path)) == sorted(names)
    for n in names:
        assert (mnt.path / n).read_bytes() == n.encode()


@pytest.mark.semantics("HDR-INTEROP")
def test_foreign_objects_and_implicit_dirs(mnt: Mount, s3: Any) -> None:
    s3.put_object(Bucket=mnt.bucket, Key="ext/deep/er/file.txt", Body=b"from elsewhere")
    s3.put_object(Bucket=mnt.bucket, Key="ext/top.bin", Body=b"\0" * 10)
    assert sorted(os.listdir(mnt / "ext")) == ["deep", "top.bin"]
    st = os.stat(mnt / "ext/deep/er")
    assert stat.S_ISDIR(st.st_mode)
    f = os.stat(mnt / "ext/deep/er/file.txt")
    assert stat.S_ISREG(f.st_mode) and stat.S_IMODE(f.st_mode) == 0o644
    assert f.st_size == 14 and f.st_uid == os.getuid()
    assert (mnt / "ext/deep/er/file.txt").read_bytes() == b"from elsewhere"
    # writing into an implicit directory works too
    (mnt / "ext/deep/new.txt").write_bytes(b"n")
    assert obj(s3, mnt.bucket, "ext/deep/new.txt")[0] == b"n"


def test_listing_more_than_1000_entries(mnt: Mount, s3: Any) -> None:
    for i in range(1234):
        s3.put_object(Bucket=mnt.bucket, Key=f"big/f{i:05d}", Body=b"")
    names = os.listdir(mnt / "big")
    assert len(names) == 1234 and len(set(names)) == 1234
    out = sh(f"ls -l {mnt / 'big'} | wc -l").stdout.strip()
    assert int(out) == 1235  # plus the "total" line


def test_ranged_reads_not_whole_object(mnt: Mount, s3: Any, proxy: RecordingProxy) -> None:
    size = 64 * 1024 * 1024
    s3.put_object(Bucket=mnt.bucket, Key="large.bin", Body=b"\1" * size)
    proxy.clear()
    with open(mnt / "large.bin", "rb") as f:
        f.seek(40 * 1024 * 1024)
        assert f.read(4096) == b"\1" * 4096
    gets = [r for r in proxy.requests("GET") if r.key_path.endswith("/large.bin")]
    assert gets and all("range" in r.headers for r in gets)
    fetched = 0
    for r in gets:
        a, b = r.headers["range"].removeprefix("bytes=").split("-")
        fetched += int(b) - int(a) + 1
    assert fetched <= 8 * 1024 * 1024, "a small read must not download the object"
    digest = sh(f"dd if={mnt / 'large.bin'} bs=1M status=none | md5sum").stdout.split()[0]
    assert digest == hashlib.md5(b"\1" * size).hexdigest()


def test_dd_write_and_read_own_writes(mnt: Mount, s3: Any) -> None:
    sh(f"dd if=/dev/zero of={mnt / 'dd.bin'} bs=1M count=5 status=none")
    assert obj(s3, mnt.bucket, "dd.bin")[0] == b"\0" * (5 << 20)
    with open(mnt / "rw.txt", "w+b") as f:
        f.write(b"abcdef")
        f.flush()
        f.seek(0)
        assert f.read() == b"abcdef"  # before close, from the spool
        with pytest.raises(s3.exceptions.ClientError):
            s3.head_object(Bucket=mnt.bucket, Key="rw.txt")  # not stored before close
    assert obj(s3, mnt.bucket, "rw.txt")[0] == b"abcdef"


@pytest.mark.semantics("STORE-IDEMPOTENT")
def test_upload_idempotent_per_generation(mnt: Mount, s3: Any, proxy: RecordingProxy) -> None:
    fd = os.open(mnt / "dup.txt", os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, b"one")
    fd2 = os.dup(fd)
    fd3 = os.dup(fd)
    os.close(fd2)  # flush: uploads
    os.close(fd3)  # flush again: nothing changed, no second PUT
    assert len(puts_of(proxy, mnt.bucket, "dup.txt")) == 1
    os.write(fd, b" two")
    os.close(fd)
    assert len(puts_of(proxy, mnt.bucket, "dup.txt")) == 2
    body, r = obj(s3, mnt.bucket, "dup.txt")
    assert body == b"one two"
    assert int(r["Metadata"]["mode"]) == stat.S_IFREG | 0o600
    # opened and closed without writing: not uploaded again
    with open(mnt / "dup.txt", "r+b") as f:
        assert f.read() == b"one two"
    assert len(puts_of(proxy, mnt.bucket, "dup.txt")) == 2


@pytest.mark.semantics("STORE-FSYNC")
def test_fsync_stores_before_close(mnt: Mount, s3: Any) -> None:
    with open(mnt / "synced", "wb") as f:
        f.write(b"durable")
        f.flush()
        os.fsync(f.fileno())
        assert obj(s3, mnt.bucket, "synced")[0] == b"durable"


def test_overwrite_partial_and_append(mnt: Mount, s3: Any) -> None:
    s3.put_object(Bucket=mnt.bucket, Key="edit.txt", Body=b"0123456789")
    with open(mnt / "edit.txt", "r+b") as f:
        f.seek(3)
        f.write(b"abc")
    assert obj(s3, mnt.bucket, "edit.txt")[0] == b"012abc6789"
    with open(mnt / "edit.txt", "ab") as f:
        f.write(b"++")
    assert obj(s3, mnt.bucket, "edit.txt")[0] == b"012abc6789++"
    with open(mnt / "edit.txt", "wb") as f:
        f.write(b"new")
    assert obj(s3, mnt.bucket, "edit.txt")[0] == b"new"


@pytest.mark.semantics("HDR-INTEROP")
def test_remount_shows_stored_metadata(mount_factory: Any, bucket: str, s3: Any) -> None:
    m = mount_factory(bucket)
    p = m / "kept.sh"
    p.write_bytes(b"#!/bin/sh\n")
    os.chmod(p, 0o750)
    os.utime(p, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    m.unmount()
    r = s3.head_object(Bucket=bucket, Key="kept.sh")
    assert int(r["Metadata"]["mode"]) == stat.S_IFREG | 0o750
    assert r["Metadata"]["mtime"] == "1600000000"
    m2 = mount_factory(bucket)
    st = os.stat(m2 / "kept.sh")
    assert stat.S_IMODE(st.st_mode) == 0o750
    assert st.st_mtime_ns == 1_600_000_000_000_000_000
    m2.unmount()
    # the same after a listing (readdirplus) came first
    m3 = mount_factory(bucket)
    assert "-rwxr-x---" in sh(f"ls -l {m3.path}").stdout
    assert os.stat(m3 / "kept.sh").st_mtime_ns == 1_600_000_000_000_000_000


def test_name_too_long_for_s3(mnt: Mount) -> None:
    d = mnt.path
    parts = ["d" * 200] * 5  # each name fine for POSIX, the key > 1024 bytes
    path = str(d)
    with pytest.raises(OSError) as e:
        for p in parts:
            path = os.path.join(path, p)
            os.mkdir(path)
        with open(os.path.join(path, "f" * 100), "wb"):
            pass
    assert e.value.errno == errno.ENAMETOOLONG


def test_sequential_read_streams_and_random_reads_are_right(
    mnt: Mount, s3: Any, proxy: RecordingProxy
) -> None:
    data = os.urandom(40 * 1024 * 1024)
    s3.put_object(Bucket=mnt.bucket, Key="stream.bin", Body=data)
    os.stat(mnt / "stream.bin")
    proxy.clear()
    digest = sh(f"cat {mnt / 'stream.bin'} | md5sum").stdout.split()[0]
    assert digest == hashlib.md5(data).hexdigest()
    gets = [r for r in proxy.requests("GET") if r.key_path.endswith("/stream.bin")]
    assert len(gets) <= 2, "a sequential reader is served by one streaming GET"
    rnd = __import__("random").Random(7)
    with open(mnt / "stream.bin", "rb", buffering=0) as f:
        for _ in range(40):
            off = rnd.randrange(len(data))
            n = rnd.choice([1, 4096, 200_000, 3_000_000])
            f.seek(off)
            assert f.read(n) == data[off : off + n]


def test_exact_ls_then_one_stat_heads_one_and_ls_l_heads_in_bulk(
    mount_factory: Any, bucket: str, s3: Any, proxy: RecordingProxy
) -> None:
    mnt = mount_factory(bucket, "-o", "attrs=exact")
    for i in range(60):
        s3.put_object(Bucket=mnt.bucket, Key=f"d/f{i:02d}", Body=b"x" * i)
    os.listdir(mnt / "d")
    proxy.clear()
    assert os.stat(mnt / "d/f07").st_size == 7
    heads = [r for r in proxy.requests("HEAD") if "/d/f" in r.path]
    assert len(heads) == 1, "ls then one stat must not fetch every sibling"
    out = sh(f"ls -l {mnt / 'd'}").stdout
    assert out.count("-rw-r--r--") == 60
    heads = [r for r in proxy.requests("HEAD") if "/d/f" in r.path]
    assert len(heads) == 60  # each sibling once, in parallel


def test_auto_ls_l_of_foreign_objects_is_one_list_and_a_sample(
    mnt: Mount, s3: Any, proxy: RecordingProxy
) -> None:
    for i in range(60):
        s3.put_object(Bucket=mnt.bucket, Key=f"d/f{i:02d}", Body=b"x" * i)
    proxy.clear()
    out = sh(f"ls -l --time-style=+%s {mnt / 'd'}").stdout
    assert out.count("-rw-r--r--") == 60
    heads = [r for r in proxy.requests("HEAD") if "/d/f" in r.path]
    assert 1 <= len(heads) <= 5, "a sample, not a HEAD per entry"
    assert len([r for r in proxy.requests("GET") if "prefix=d%2F" in r.path]) == 1
    want = s3.head_object(Bucket=mnt.bucket, Key="d/f33")
    st = os.stat(mnt / "d/f33")
    assert st.st_size == 33
    assert int(st.st_mtime) == int(want["LastModified"].timestamp())
    for i in range(60):  # stat by name: still no HEAD per entry
        assert os.stat(mnt / f"d/f{i:02d}").st_size == i
    assert len([r for r in proxy.requests("HEAD") if "/d/f" in r.path]) == len(heads)


def test_auto_ls_l_shows_s3fuse_metadata_fetched_in_bulk(
    mnt: Mount, s3: Any, proxy: RecordingProxy
) -> None:
    """A directory whose objects carry mode/uid/gid/mtime (written through s3fuse, s3fs
    or rclone): every entry's metadata is fetched, so ls -l shows what is stored."""
    for i in range(40):
        md = {"mode": str(stat.S_IFREG | 0o751), "uid": "123", "gid": "45", "mtime": "1500000000"}
        s3.put_object(Bucket=mnt.bucket, Key=f"d/f{i:02d}", Body=b"x" * i, Metadata=md)
    proxy.clear()
    out = sh(f"ls -ln {mnt / 'd'}").stdout
    assert out.count("-rwxr-x--x 1 123 45") == 40, out
    for i in range(40):
        st = os.stat(mnt / f"d/f{i:02d}")
        assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (0o751, 1_500_000_000 * 10**9)
    heads = [r for r in proxy.requests("HEAD") if "/d/f" in r.path]
    assert 40 <= len(heads) <= 45  # once each (the sample included)


def test_auto_metadata_outside_the_sample_shows_once_looked_at(
    mnt: Mount, s3: Any, proxy: RecordingProxy
) -> None:
    """The sample saw a foreign directory; one file in it carries metadata all the same.
    Reading its xattrs, writing it or renaming it HEADs it first: its mode is kept."""
    for i in range(30):
        s3.put_object(Bucket=mnt.bucket, Key=f"d/f{i:02d}", Body=b"x")
    md = {"mode": str(stat.S_IFREG | 0o700)}
    s3.put_object(Bucket=mnt.bucket, Key="d/odd", Body=b"y", Metadata=md)
    os.listdir(mnt / "d")
    with open(mnt / "d/odd", "ab") as f:  # a write re-sends the stored mode
        f.write(b"z")
    r = s3.head_object(Bucket=mnt.bucket, Key="d/odd")
    assert int(r["Metadata"]["mode"]) == stat.S_IFREG | 0o700
    assert s3.get_object(Bucket=mnt.bucket, Key="d/odd")["Body"].read() == b"yz"
    os.rename(mnt / "d/odd", mnt / "d/odd2")
    r = s3.head_object(Bucket=mnt.bucket, Key="d/odd2")
    assert int(r["Metadata"]["mode"]) == stat.S_IFREG | 0o700
    assert stat.S_IMODE(os.stat(mnt / "d/odd2").st_mode) == 0o700


def test_auto_relisting_a_directory_heads_nothing_it_knows(
    mount_factory: Any, bucket: str, s3: Any, proxy: RecordingProxy
) -> None:
    """After cache_ttl the listing is fetched again and attrs=auto judges it again: the
    entries it samples were HEADed before and the listing shows the same versions, so
    the second ls -l is one LIST and no HEAD."""
    mnt = mount_factory(bucket, "-o", "cache_ttl=1,meta_cache=0")
    for i in range(20):
        md = {"mode": str(stat.S_IFREG | 0o640), "uid": "7", "gid": "8", "mtime": "1400000000"}
        s3.put_object(Bucket=bucket, Key=f"d/f{i:02d}", Body=b"x" * i, Metadata=md)
    first = sh(f"ls -ln {mnt / 'd'}").stdout
    time.sleep(1.5)  # listing and attributes are stale now
    proxy.clear()
    assert sh(f"ls -ln {mnt / 'd'}").stdout == first
    assert [r.path for r in proxy.requests("HEAD") if "/d/f" in r.path] == []
    assert len([r for r in proxy.requests("GET") if "prefix=d%2F" in r.path]) == 1


def test_auto_metadata_cache_makes_ls_l_one_list_on_the_next_mount(
    mnt: Mount, s3: Any, proxy: RecordingProxy
) -> None:
    """HEAD answers are kept in the spool directory: after a remount, ls -l of a directory
    whose objects carry s3fuse metadata is one LIST; objects changed since (new content,
    or new metadata only) are HEADed again and show what S3 holds now."""
    for i in range(30):
        md = {"mode": str(stat.S_IFREG | 0o600 + i), "uid": "7", "gid": "8", "mtime": "1400000000"}
        s3.put_object(Bucket=mnt.bucket, Key=f"d/f{i:02d}", Body=b"x" * i, Metadata=md)
    first = sh(f"ls -ln {mnt / 'd'}").stdout
    assert len([r for r in proxy.requests("HEAD") if "/d/f" in r.path]) >= 30
    mnt.unmount()
    time.sleep(1.1)  # what follows gets another LastModified second
    md = {"mode": str(stat.S_IFREG | 0o640), "uid": "9", "gid": "9", "mtime": "1400000000"}
    s3.copy_object(Bucket=mnt.bucket, Key="d/f03", CopySource={"Bucket": mnt.bucket,
                   "Key": "d/f03"}, Metadata=md, MetadataDirective="REPLACE")  # fmt: skip
    s3.put_object(Bucket=mnt.bucket, Key="d/f04", Body=b"new!", Metadata=md)
    mnt.start()
    proxy.clear()
    out = sh(f"ls -ln {mnt / 'd'}").stdout
    lines = {ln.split()[-1]: ln.split()[:5] for ln in out.splitlines()[1:]}
    assert lines["f03"] == ["-rw-r-----", "1", "9", "9", "3"]
    assert lines["f04"] == ["-rw-r-----", "1", "9", "9", "4"]
    assert lines["f05"] == ["-rw----r-x", "1", "7", "8", "5"]
    unchanged = [ln for ln in first.splitlines()[1:] if ln.split()[-1] not in ("f03", "f04")]
    assert [ln for ln in out.splitlines()[1:] if ln.split()[-1] not in ("f03", "f04")] == unchanged
    heads = sorted(r.key_path for r in proxy.requests("HEAD") if "/d/f" in r.path)
    assert heads == [f"/{mnt.bucket}/d/f03", f"/{mnt.bucket}/d/f04"], heads
    assert len([r for r in proxy.requests("GET") if "prefix=d%2F" in r.path]) == 1


def test_kernel_read_ahead_window_is_raised(
    mount_factory: Any, bucket: str, tmp_path: Path
) -> None:
    """Sequential readers get 1 MiB READs (the kernel's default window is 128 KiB). Set
    before the mount is reported ready; once a CI run found it back at 128 right after,
    so the daemon checks it every status interval (1 s) and sets it again: within 3 s
    here, and to the window the kernel was handed back, it is set again."""
    m = mount_factory(bucket)
    dev = kernel.device_of(os.path.realpath(m.path))
    assert dev is not None
    bdi = Path(f"/sys/class/bdi/{dev}/read_ahead_kb")

    def window_becomes(value: str) -> bool:
        deadline = time.monotonic() + 3
        while bdi.read_text().strip() != value and time.monotonic() < deadline:
            time.sleep(0.1)
        return bdi.read_text().strip() == value

    assert window_becomes("1024")
    bdi.write_text("128")  # reset behind the daemon's back
    assert window_becomes("1024")
    m.unmount()
    m2 = mount_factory(bucket, "-o", "read_ahead_kb=0", root=tmp_path / "other")
    dev = kernel.device_of(os.path.realpath(m2.path))
    assert Path(f"/sys/class/bdi/{dev}/read_ahead_kb").read_text().strip() == "128"
