"""s3fuse beside its peers, the boto3 ceiling and the local-disk floor, on one S3 server.

Starts a moto server (or with --server rgw a Ceph RGW, scripts/rgw/start) on 127.0.0.1,
then for every workload and every target (s3fuse, s3fs, rclone mount when installed,
direct boto3, a local directory) uses a fresh bucket and a fresh mount, times the
workload, verifies every object (count, size, MD5; a run that lost data is marked FAILED)
and counts the S3 requests it caused (from the server's access log). Prints one table of
figures and ratios. Timings are for reading, never for pass/fail. The boto3 ceiling sends
the way s3fuse does (benchmarks/backends.py: Content-MD5, unsigned payloads over http, no
`Expect: 100-continue` for small bodies), so "x boto3" compares like with like.

    scripts/bench [--server moto|rgw] [--quick] [--only s3fuse,boto3] [--workloads small1,ls]
                  [--record]

Workloads: small1, small8 (4 KiB files, 1 and 8 writers), write (one large file), read
(cold sequential), ls (ls -l of objects written by another tool, cold), lswarm (again,
warm), lsmeta (objects carrying mode/uid/gid/mtime, on the tool's next mount), stat (by
name, cold), statmeta (by name, objects carrying metadata, a fresh mount), overwrite
(4 KiB in a large file), cptree (cp -r of a tree), mount (from the mount command to a
listing of the mount: `s3fuse mount` as users run it, returning when ready; the peers in
the foreground until their mount answers; boto3: a new Python process that lists).
"""

from __future__ import annotations

import argparse
import compileall
import concurrent.futures as cf
import functools
import hashlib
import mmap
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends import BACKENDS, Server  # beside this file

from s3fuse.model import blocksums
from s3fuse.model.meta import META_BLOCKS

MiB = 1 << 20


@dataclass
class Sizes:
    small_files: int = 300
    small_size: int = 4096
    parallel_files: int = 480
    large: int = 256 * MiB
    list_objects: int = 2000
    stat_names: int = 1000
    overwrite_file: int = 64 * MiB
    tree_files: int = 300

    @classmethod
    def quick(cls) -> Sizes:
        return cls(60, 4096, 96, 32 * MiB, 300, 200, 16 * MiB, 60)


# ------------------------------------------------------------------ targets
class Target:
    name = ""
    durable_close = True  # close() returns only after S3 has the object

    def __init__(self, server: Server, workdir: Path) -> None:
        self.server = server
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.mnt: Path | None = None
        self.last_dir: Path | None = None
        self.peak_rss_kb = 0

    def available(self) -> str | None:
        """None when usable, else why not."""
        return None

    def command(self, bucket: str, d: Path, mnt: Path) -> tuple[list[str], dict[str, str]]:
        """The foreground mount command and its environment."""
        raise NotImplementedError

    def mount(self, bucket: str, *, again: bool = False, poll: float = 0.05) -> Path:
        """Mount bucket in a fresh directory; again: in the previous mount's directory,
        with whatever state (spool, caches) the tool left there."""
        if again and self.last_dir is not None:
            d = self.last_dir
        else:
            d = self.last_dir = self.fresh_dir()
            (d / "mnt").mkdir()
        mnt = d / "mnt"
        cmd, env = self.command(bucket, d, mnt)
        self.log = d / "log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
        self._wait_mounted(mnt, self.name, poll)
        self.mnt = mnt
        return mnt

    def mount_as_users_do(self, bucket: str) -> Path:
        """The mount a user starts by hand, returned once it answers (the `mount` workload)."""
        return self.mount(bucket, poll=0.001)

    def _wait_mounted(self, mnt: Path, what: str, poll: float = 0.05) -> None:
        deadline = time.monotonic() + 60
        while not os.path.ismount(mnt):
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{what} exited {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not mount in 60s")
            time.sleep(poll)
        os.listdir(mnt)

    def uploads_done(self) -> int:
        return 0

    def rss_kb(self) -> int:
        if self.proc is None:
            return 0
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def unmount(self) -> None:
        if self.mnt is None:
            return
        self.peak_rss_kb = max(self.peak_rss_kb, self.rss_kb())
        for _ in range(100):
            if not os.path.ismount(self.mnt):
                break
            if (
                subprocess.run(["fusermount3", "-u", str(self.mnt)], capture_output=True).returncode
                == 0
            ):
                break
            time.sleep(0.1)
        else:
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True)
        if self.proc is not None:
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        self.mnt = None

    def fresh_dir(self) -> Path:
        d = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=self.workdir))
        return d


class S3fuse(Target):
    name = "s3fuse"
    extra: tuple[str, ...] = ()
    daemon_pid: int | None = None  # of a background mount (mount_as_users_do)

    def command(self, bucket: str, d: Path, mnt: Path) -> tuple[list[str], dict[str, str]]:
        env = dict(
            os.environ,
            AWS_ACCESS_KEY_ID=self.server.key_id,
            AWS_SECRET_ACCESS_KEY=self.server.secret,
        )
        return [sys.executable, "-m", "s3fuse", "mount", bucket, str(mnt), "--endpoint-url",
                self.server.url, "--foreground", "--spool-dir", str(d / "spool"), *self.extra,
                *shlex.split(os.environ.get("BENCH_S3FUSE_OPTS", ""))], env  # fmt: skip

    def mount_as_users_do(self, bucket: str) -> Path:
        """`s3fuse mount` without --foreground: it returns when the mount is ready, and
        that is when a user (or fstab, or a script) goes on."""
        d = self.last_dir = self.fresh_dir()
        mnt = d / "mnt"
        mnt.mkdir()
        cmd, env = self.command(bucket, d, mnt)
        cmd = [c for c in cmd if c != "--foreground"] + ["--log-file", str(d / "log")]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"s3fuse mount exited {r.returncode}: {r.stderr.strip()}")
        self.mnt, self.proc = mnt, None
        self.daemon_pid = int(r.stdout.split("(pid ", 1)[1].split(",", 1)[0])
        return mnt

    def unmount(self) -> None:
        pid, self.daemon_pid = self.daemon_pid, None
        super().unmount()
        deadline = time.monotonic() + 120
        while pid is not None and Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.01)  # the daemon of a background mount: not our child to wait for


class S3fuseExact(S3fuse):
    """s3fuse with -o attrs=exact: a HEAD per listed entry, as the peers do."""

    name = "s3fuse-exact"
    extra = ("-o", "attrs=exact")


class S3fs(Target):
    name = "s3fs"

    def available(self) -> str | None:
        return None if shutil.which("s3fs") else "s3fs not installed (apt-get install s3fs)"

    def command(self, bucket: str, d: Path, mnt: Path) -> tuple[list[str], dict[str, str]]:
        pw = d / "passwd"
        pw.write_text(f"{self.server.key_id}:{self.server.secret}\n")
        pw.chmod(0o600)
        return ["s3fs", bucket, str(mnt), "-f", "-o", f"url={self.server.url}",
                "-o", "use_path_request_style", "-o", f"passwd_file={pw}",
                "-o", "endpoint=us-east-1"], dict(os.environ)  # fmt: skip


class Rclone(Target):
    name = "rclone"
    durable_close = False  # uploads after close: timed until the bucket has the objects

    def available(self) -> str | None:
        return None if shutil.which("rclone") else "rclone not installed (apt-get install rclone)"

    def command(self, bucket: str, d: Path, mnt: Path) -> tuple[list[str], dict[str, str]]:
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        env["RCLONE_CONFIG"] = "/dev/null"
        return [
            "rclone",
            "mount",
            f":s3:{bucket}",
            str(mnt),
            "--s3-provider",
            "Other",
            "--s3-endpoint",
            self.server.url,
            "--s3-access-key-id",
            self.server.key_id,
            "--s3-secret-access-key",
            self.server.secret,
            "--s3-force-path-style",
            # after a multipart upload rclone HEADs ?versionId=null, which moto
            # answers 400: the upload is then retried forever
            "--s3-no-head",
            "--vfs-cache-mode",
            "writes",
            "--cache-dir",
            str(d / "cache"),
            "-v",
        ], env  # fmt: skip  (rclone's defaults: uploads 5 s after close)

    def uploads_done(self) -> int:
        return self.log.read_text(errors="replace").count(": Copied (")


class Local(Target):
    name = "local"

    def mount(self, bucket: str, *, again: bool = False, poll: float = 0.05) -> Path:
        if again and self.last_dir is not None:
            return self.last_dir
        self.last_dir = self.fresh_dir()
        return self.last_dir

    def unmount(self) -> None:
        pass


# ------------------------------------------------------------------ results
@dataclass
class Result:
    value: float  # in the workload's unit
    requests: int | None = None
    ok: bool = True
    note: str = ""


@dataclass
class Workload:
    name: str
    title: str
    unit: str  # files/s, MB/s, s
    higher_is_better: bool
    fs_run: Callable[[Bench, Target], Result]
    boto_run: Callable[[Bench], Result]
    results: dict[str, Result] = field(default_factory=dict)  # the median run of each
    runs: dict[str, list[Result]] = field(default_factory=dict)  # every run, round by round


def median(rs: list[Result]) -> Result:
    """The median run; a run that lost or corrupted data makes the whole result FAILED."""
    bad = [r for r in rs if not r.ok]
    if bad:
        return bad[0]
    return sorted(rs, key=lambda r: r.value)[len(rs) // 2]


PRIME = 768 * MiB


def prime_memory() -> None:
    """Touch and free PRIME bytes so the guest's free memory is backed by the host.

    This machine is a VM with free page reporting (virtio-balloon, page_reporting_order=11):
    memory freed for ~2 s is handed back to the host and the next touch of it faults in the
    hypervisor. The page cache a FUSE read fills, moto's buffers and the spool then copy at
    ~0.3-0.5 GB/s instead of several GB/s, at random (a cold read of 256 MiB: 250 or
    1000 MB/s for the same code). Pages just freed are reused first, so priming right before
    the clock makes every target start from backed memory."""
    read_buffer(PRIME).release()  # faulted in, then freed with the view


def timed(fn: Callable[[], Any]) -> float:
    prime_memory()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def read_buffer(size: int) -> memoryview:
    """A buffer for a timed read, its pages faulted in before the clock starts (a fresh
    page costs a fault on first touch: ~0.1 s per 256 MiB, the same for every target)."""
    buf = bytearray(size)
    buf[:: mmap.PAGESIZE] = b"\1" * len(range(0, size, mmap.PAGESIZE))
    return memoryview(buf)


def payload(i: int, size: int) -> bytes:
    seed = hashlib.sha256(str(i).encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class Bench:
    def __init__(self, server: Server, sizes: Sizes) -> None:
        self.server = server
        self.sizes = sizes

    # -------------------------------------------------------------- helpers
    def wait_uploaded(self, t: Target, count: int, timeout: float = 300) -> None:
        """For peers whose close() returns before the upload (rclone): wait until its log
        says count uploads finished. Polling S3 instead would disturb the measurement (a
        LIST alongside a PUT makes moto compute a wrong ETag; rclone then deletes its
        "corrupted" upload)."""
        deadline = time.monotonic() + timeout
        while t.uploads_done() < count and time.monotonic() < deadline:
            time.sleep(0.02)

    def verify(
        self, bucket: str, expected: Mapping[str, bytes | tuple[int, str]]
    ) -> tuple[bool, str]:
        have = self.server.objects(bucket)
        missing = [k for k in expected if k not in have]
        if missing:
            return False, f"{len(missing)} objects missing (e.g. {missing[0]})"
        for k, want in expected.items():
            size, md5 = (
                (len(want), hashlib.md5(want).hexdigest()) if isinstance(want, bytes) else want
            )
            if have[k] != size:
                return False, f"{k}: size {have[k]} != {size}"
            if self.server.md5_of(bucket, k) != md5:
                return False, f"{k}: content differs"
        return True, ""

    def _fs_writes(self, t: Target, files: dict[str, bytes], threads: int) -> Result:
        bucket = self.server.bucket()
        mnt = t.mount(bucket)
        offset = self.server.log_size()

        def write(item: tuple[str, bytes]) -> None:
            # as cp does: open, write, close (Python's buffered open() would add an
            # isatty() ioctl per file that real tools do not send)
            with open(mnt / item[0], "wb", buffering=0) as f:
                f.write(item[1])

        def run() -> None:
            if threads == 1:
                for item in files.items():
                    write(item)
            else:
                with cf.ThreadPoolExecutor(threads) as ex:
                    list(ex.map(write, files.items()))
            if not t.durable_close and t.name != "local":
                self.wait_uploaded(t, len(files))

        elapsed = timed(run)
        reqs = self.server.requests_since(offset, bucket) if t.name != "local" else None
        t.unmount()
        ok, note = self.verify(bucket, dict(files)) if t.name != "local" else (True, "")
        return Result(len(files) / elapsed, reqs, ok, note)

    def _boto_writes(self, files: dict[str, bytes], threads: int) -> Result:
        bucket = self.server.bucket()
        offset = self.server.log_size()
        s3 = self.server.s3

        def put(item: tuple[str, bytes]) -> None:
            import base64

            md5 = base64.b64encode(hashlib.md5(item[1]).digest()).decode()
            s3.put_object(Bucket=bucket, Key=item[0], Body=item[1], ContentMD5=md5)

        def run() -> None:
            with cf.ThreadPoolExecutor(threads) as ex:
                list(ex.map(put, files.items()))

        elapsed = timed(run)
        reqs = self.server.requests_since(offset, bucket)
        ok, note = self.verify(bucket, dict(files))
        return Result(len(files) / elapsed, reqs, ok, note)

    def small_files(self, n: int) -> dict[str, bytes]:
        return {f"f{i:05d}.dat": payload(i, self.sizes.small_size) for i in range(n)}

    # -------------------------------------------------------------- workloads
    def small1_fs(self, t: Target) -> Result:
        return self._fs_writes(t, self.small_files(self.sizes.small_files), 1)

    def small1_boto(self) -> Result:
        return self._boto_writes(self.small_files(self.sizes.small_files), 1)

    def small8_fs(self, t: Target) -> Result:
        return self._fs_writes(t, self.small_files(self.sizes.parallel_files), 8)

    def small8_boto(self) -> Result:
        return self._boto_writes(self.small_files(self.sizes.parallel_files), 8)

    def large_write_fs(self, t: Target) -> Result:
        size = self.sizes.large
        chunk = payload(7, MiB)
        md5 = hashlib.md5(chunk * (size // MiB)).hexdigest()
        bucket = self.server.bucket()
        mnt = t.mount(bucket)
        offset = self.server.log_size()

        def run() -> None:
            with open(mnt / "large.bin", "wb") as f:
                for _ in range(size // MiB):
                    f.write(chunk)
            if not t.durable_close:
                self.wait_uploaded(t, 1)

        elapsed = timed(run)
        reqs = self.server.requests_since(offset, bucket) if t.name != "local" else None
        t.unmount()
        ok, note = (
            self.verify(bucket, {"large.bin": (size, md5)}) if t.name != "local" else (True, "")
        )
        return Result(size / MiB / elapsed, reqs, ok, note)

    def large_write_boto(self) -> Result:
        import base64

        size = self.sizes.large
        chunk = payload(7, MiB)
        bucket = self.server.bucket()
        offset = self.server.log_size()
        body = chunk * (size // MiB)

        def run() -> None:
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
            self.server.s3.put_object(Bucket=bucket, Key="large.bin", Body=body, ContentMD5=md5)

        elapsed = timed(run)
        reqs = self.server.requests_since(offset, bucket)
        ok, note = self.verify(bucket, {"large.bin": (size, hashlib.md5(body).hexdigest())})
        return Result(size / MiB / elapsed, reqs, ok, note)

    def _seed_large(self, bucket: str) -> str:
        """The large object as s3fuse would have stored it: with its block checksums, so
        that s3fuse's cold read is the verified one its users get for their own files
        (the peers ignore the extra metadata)."""
        body = payload(9, MiB) * (self.sizes.large // MiB)
        sums = blocksums.ChunkSums()
        sums.update(body)
        md = {META_BLOCKS: blocksums.encode(len(body), sums.finish())}
        self.server.s3.put_object(Bucket=bucket, Key="large.bin", Body=body, Metadata=md)
        return hashlib.md5(body).hexdigest()

    def cold_read_fs(self, t: Target) -> Result:
        bucket = self.server.bucket()
        want = hashlib.md5(payload(9, MiB) * (self.sizes.large // MiB)).hexdigest()
        if t.name == "local":
            d = t.mount(bucket)
            (d / "large.bin").write_bytes(payload(9, MiB) * (self.sizes.large // MiB))
            subprocess.run(["sh", "-c", "sync; echo 1 > /proc/sys/vm/drop_caches"], check=False)
            mnt = d
        else:
            self._seed_large(bucket)
            mnt = t.mount(bucket)
        offset = self.server.log_size()
        buf = read_buffer(self.sizes.large)
        end = 0

        def run() -> None:  # like dd of=/dev/null: no work on the bytes inside the clock
            nonlocal end
            with open(mnt / "large.bin", "rb", buffering=0) as f:
                while n := f.readinto(buf[end : end + MiB]):
                    end += n

        elapsed = timed(run)
        reqs = self.server.requests_since(offset, bucket) if t.name != "local" else None
        t.unmount()
        ok = hashlib.md5(buf[:end]).hexdigest() == want
        return Result(self.sizes.large / MiB / elapsed, reqs, ok, "" if ok else "read bytes differ")

    def cold_read_boto(self) -> Result:
        bucket = self.server.bucket()
        want = self._seed_large(bucket)
        offset = self.server.log_size()
        buf = read_buffer(self.sizes.large)
        end = 0

        def run() -> None:
            nonlocal end
            body = self.server.s3.get_object(Bucket=bucket, Key="large.bin")["Body"]
            for chunk in body.iter_chunks(MiB):
                buf[end : end + len(chunk)] = chunk
                end += len(chunk)

        elapsed = timed(run)
        ok = hashlib.md5(buf[:end]).hexdigest() == want
        return Result(
            self.sizes.large / MiB / elapsed, self.server.requests_since(offset, bucket), ok
        )

    def _seed_many(self, bucket: str, metadata: bool = False) -> None:
        """list_objects small objects; metadata: with mode/uid/gid/mtime as s3fuse, s3fs
        and rclone write them (the files a mount wrote earlier)."""
        s3 = self.server.s3
        md = {"mode": "33188", "uid": "0", "gid": "0", "mtime": "1700000000"} if metadata else {}

        def put(i: int) -> None:
            s3.put_object(Bucket=bucket, Key=f"many/f{i:05d}", Body=b"x" * (i % 100), Metadata=md)

        with cf.ThreadPoolExecutor(16) as ex:
            list(ex.map(put, range(self.sizes.list_objects)))

    def _local_many(self, d: Path) -> Path:
        (d / "many").mkdir()
        for i in range(self.sizes.list_objects):
            (d / "many" / f"f{i:05d}").write_bytes(b"x" * (i % 100))
        return d

    def _ls(self, t: Target, warm: bool, remount: bool = False) -> Result:
        """ls -l of the many/ directory: cold, warm (listed just before), or remount (it
        carries s3fuse-style metadata and was listed by an earlier mount of the same tool,
        whose state directory the timed mount reuses)."""
        bucket = self.server.bucket()
        if t.name == "local":
            mnt = self._local_many(t.mount(bucket))
        else:
            self._seed_many(bucket, metadata=remount)
            mnt = t.mount(bucket)
        if warm or remount:
            subprocess.run(["ls", "-l", str(mnt / "many")], capture_output=True, check=True)
        if remount:
            t.unmount()
            mnt = t.mount(bucket, again=True)
        offset = self.server.log_size()
        out: list[str] = []

        def run() -> None:
            r = subprocess.run(
                ["ls", "-l", str(mnt / "many")], capture_output=True, text=True, check=True
            )
            out.append(r.stdout)

        elapsed = timed(run)
        reqs = self.server.requests_since(offset, bucket) if t.name != "local" else None
        t.unmount()
        lines = [ln for ln in out[0].splitlines() if ln.startswith("-")]
        ok = len(lines) == self.sizes.list_objects
        return Result(elapsed, reqs, ok, "" if ok else f"ls showed {len(lines)} files")

    def ls_cold_fs(self, t: Target) -> Result:
        return self._ls(t, warm=False)

    def ls_warm_fs(self, t: Target) -> Result:
        return self._ls(t, warm=True)

    def ls_remount_fs(self, t: Target) -> Result:
        return self._ls(t, warm=False, remount=True)

    def ls_boto(self) -> Result:
        bucket = self.server.bucket()
        self._seed_many(bucket)
        offset = self.server.log_size()
        n = [0]

        def run() -> None:
            n[0] = len(self.server.objects(bucket, "many/"))

        elapsed = timed(run)
        return Result(
            elapsed, self.server.requests_since(offset, bucket), n[0] == self.sizes.list_objects
        )

    def stat_fs(self, t: Target, metadata: bool = False) -> Result:
        bucket = self.server.bucket()
        if t.name == "local":
            mnt = self._local_many(t.mount(bucket))
        else:
            self._seed_many(bucket, metadata=metadata)
            mnt = t.mount(bucket)  # a fresh mount: no metadata cache of an earlier one
        offset = self.server.log_size()
        names = [mnt / "many" / f"f{i:05d}" for i in range(self.sizes.stat_names)]
        sizes: list[int] = []
        elapsed = timed(lambda: sizes.extend(os.stat(p).st_size for p in names))
        reqs = self.server.requests_since(offset, bucket) if t.name != "local" else None
        t.unmount()
        ok = sizes == [i % 100 for i in range(self.sizes.stat_names)]
        return Result(self.sizes.stat_names / elapsed, reqs, ok)

    def stat_meta_fs(self, t: Target) -> Result:
        return self.stat_fs(t, metadata=True)

    def stat_boto(self, metadata: bool = False) -> Result:
        bucket = self.server.bucket()
        self._seed_many(bucket, metadata=metadata)
        offset = self.server.log_size()
        sizes: list[int] = []
        s3 = self.server.s3
        elapsed = timed(lambda: sizes.extend(
            s3.head_object(Bucket=bucket, Key=f"many/f{i:05d}")["ContentLength"]
            for i in range(self.sizes.stat_names)))  # fmt: skip
        ok = sizes == [i % 100 for i in range(self.sizes.stat_names)]
        return Result(
            self.sizes.stat_names / elapsed, self.server.requests_since(offset, bucket), ok
        )

    def mount_fs(self, t: Target) -> Result:
        """From the mount command to a listing of the mount that shows the bucket's file."""
        bucket = self.server.bucket()
        if t.name != "local":
            self.server.s3.put_object(Bucket=bucket, Key="ready.txt", Body=b"ready\n")
        offset = self.server.log_size()
        seen: list[str] = []

        def run() -> None:
            mnt = t.mount_as_users_do(bucket)
            seen.extend(os.listdir(mnt))

        elapsed = timed(run)
        reqs = self.server.requests_since(offset, bucket) if t.name != "local" else None
        t.unmount()
        ok = t.name == "local" or "ready.txt" in seen
        return Result(elapsed, reqs, ok, "" if ok else f"the mount showed {seen[:5]}")

    def mount_boto(self) -> Result:
        """The same with a new Python process that imports boto3, makes a client and lists
        the bucket: the start-up floor of a Python tool on this machine."""
        bucket = self.server.bucket()
        self.server.s3.put_object(Bucket=bucket, Key="ready.txt", Body=b"ready\n")
        offset = self.server.log_size()
        code = (
            "import boto3, sys; c = boto3.client('s3', endpoint_url=sys.argv[1], "
            "region_name='us-east-1'); c.head_bucket(Bucket=sys.argv[2]); "
            "print(*[o['Key'] for o in c.list_objects_v2(Bucket=sys.argv[2])['Contents']])"
        )
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.server.key_id,
                   AWS_SECRET_ACCESS_KEY=self.server.secret)  # fmt: skip
        out: list[str] = []
        elapsed = timed(lambda: out.append(subprocess.run(
            [sys.executable, "-c", code, self.server.url, bucket], env=env, capture_output=True,
            text=True, check=True).stdout))  # fmt: skip
        ok = out[0].split() == ["ready.txt"]
        return Result(elapsed, self.server.requests_since(offset, bucket), ok)

    def _overwrite_expect(self) -> tuple[bytes, int, bytes]:
        body = payload(3, MiB) * (self.sizes.overwrite_file // MiB)
        mid = len(body) // 2
        patch = b"P" * 4096
        return body, mid, patch

    def overwrite_fs(self, t: Target) -> Result:
        body, mid, patch = self._overwrite_expect()
        bucket = self.server.bucket()
        if t.name == "local":
            mnt = t.mount(bucket)
            (mnt / "big.bin").write_bytes(body)
        else:
            self.server.s3.put_object(Bucket=bucket, Key="big.bin", Body=body)
            mnt = t.mount(bucket)
        offset = self.server.log_size()
        want = body[:mid] + patch + body[mid + len(patch) :]

        def run() -> None:
            with open(mnt / "big.bin", "r+b") as f:
                f.seek(mid)
                f.write(patch)
            if not t.durable_close:
                self.wait_uploaded(t, 1)

        elapsed = timed(run)
        reqs = self.server.requests_since(offset, bucket) if t.name != "local" else None
        t.unmount()
        ok, note = self.verify(bucket, {"big.bin": want}) if t.name != "local" else (True, "")
        return Result(elapsed, reqs, ok, note)

    def overwrite_boto(self) -> Result:
        import base64

        body, mid, patch = self._overwrite_expect()
        bucket = self.server.bucket()
        s3 = self.server.s3
        s3.put_object(Bucket=bucket, Key="big.bin", Body=body)
        offset = self.server.log_size()

        def run() -> None:
            data = bytearray(s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read())
            data[mid : mid + len(patch)] = patch
            md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
            s3.put_object(Bucket=bucket, Key="big.bin", Body=bytes(data), ContentMD5=md5)

        elapsed = timed(run)
        reqs = self.server.requests_since(offset, bucket)
        ok, note = self.verify(bucket, {"big.bin": body[:mid] + patch + body[mid + len(patch) :]})
        return Result(elapsed, reqs, ok, note)

    def _tree(self, root: Path) -> dict[str, bytes]:
        files = {}
        for i in range(self.sizes.tree_files):
            rel = f"src/pkg{i % 10}/sub{i % 3}/mod{i:04d}.py"
            data = payload(i, 1024 + (i * 977) % 63000)
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            files[rel] = data
        return files

    def cp_tree_fs(self, t: Target) -> Result:
        src = Path(tempfile.mkdtemp(dir=t.workdir))
        files = self._tree(src)
        bucket = self.server.bucket()
        mnt = t.mount(bucket)
        offset = self.server.log_size()

        def run() -> None:
            subprocess.run(["cp", "-r", str(src / "src"), str(mnt)], check=True)
            if not t.durable_close:
                self.wait_uploaded(t, len(files))

        elapsed = timed(run)
        reqs = self.server.requests_since(offset, bucket) if t.name != "local" else None
        t.unmount()
        ok, note = self.verify(bucket, files) if t.name != "local" else (True, "")
        shutil.rmtree(src, ignore_errors=True)
        return Result(elapsed, reqs, ok, note)

    def cp_tree_boto(self) -> Result:
        import base64

        src = Path(tempfile.mkdtemp())
        files = self._tree(src)
        bucket = self.server.bucket()
        offset = self.server.log_size()
        s3 = self.server.s3

        def run() -> None:
            for rel in files:
                data = (src / rel).read_bytes()
                md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
                s3.put_object(Bucket=bucket, Key=rel, Body=data, ContentMD5=md5)

        elapsed = timed(run)
        reqs = self.server.requests_since(offset, bucket)
        ok, note = self.verify(bucket, files)
        shutil.rmtree(src, ignore_errors=True)
        return Result(elapsed, reqs, ok, note)


def workloads(b: Bench) -> list[Workload]:
    s = b.sizes
    return [
        Workload("small1", f"{s.small_files} x 4 KiB files, 1 writer", "files/s", True,
                 Bench.small1_fs, Bench.small1_boto),
        Workload("small8", f"{s.parallel_files} x 4 KiB files, 8 writers", "files/s", True,
                 Bench.small8_fs, Bench.small8_boto),
        Workload("write", f"{s.large // MiB} MiB sequential write", "MB/s", True,
                 Bench.large_write_fs, Bench.large_write_boto),
        Workload("read", f"{s.large // MiB} MiB cold sequential read", "MB/s", True,
                 Bench.cold_read_fs, Bench.cold_read_boto),
        Workload("ls", f"ls -l of {s.list_objects} foreign objects, cold", "s", False,
                 Bench.ls_cold_fs, Bench.ls_boto),
        Workload("lswarm", f"ls -l of {s.list_objects} objects, warm", "s", False,
                 Bench.ls_warm_fs, Bench.ls_boto),
        Workload("lsmeta", f"ls -l of {s.list_objects} objects with metadata, next mount", "s",
                 False, Bench.ls_remount_fs, Bench.ls_boto),
        Workload("stat", f"stat of {s.stat_names} names (cold)", "stats/s", True,
                 Bench.stat_fs, Bench.stat_boto),
        Workload("statmeta", f"stat of {s.stat_names} names carrying metadata (fresh mount)",
                 "stats/s", True, Bench.stat_meta_fs, functools.partial(Bench.stat_boto,
                                                                         metadata=True)),
        Workload("overwrite", f"4 KiB overwrite in a {s.overwrite_file // MiB} MiB file", "s",
                 False, Bench.overwrite_fs, Bench.overwrite_boto),
        Workload("cptree", f"cp -r of {s.tree_files} files in 30 dirs", "s", False,
                 Bench.cp_tree_fs, Bench.cp_tree_boto),
        Workload("mount", "mount until a listing answers (boto3: a process that lists)", "s",
                 False, Bench.mount_fs, Bench.mount_boto),
    ]  # fmt: skip


# ------------------------------------------------------------------ report
def fmt(r: Result | None, unit: str) -> str:
    if r is None:
        return "-"
    v = f"{r.value:.3f}" if unit == "s" else f"{r.value:.1f}"
    return v if r.ok else f"FAILED({v}: {r.note})"


def ratio(w: Workload, a: str, b: str) -> str:
    """a against b in "better" terms: the median of the ratios of runs made in the same
    round (a and b ran minutes apart at most, so drift of the machine cancels out)."""
    ra, rb = w.results.get(a), w.results.get(b)
    if not ra or not rb or not ra.ok or not rb.ok:
        return "-"
    pairs = [(x.value, y.value) for x, y in zip(w.runs.get(a, []), w.runs.get(b, []), strict=False)
             if x.value > 0 and y.value > 0]  # fmt: skip
    if not pairs:
        return "-"
    xs = sorted(x / y if w.higher_is_better else y / x for x, y in pairs)
    return f"{xs[len(xs) // 2]:.2f}x"


def report(ws: list[Workload], names: list[str], sizes: Sizes) -> str:
    cols = [n for n in ["s3fuse", "s3fuse-exact", "s3fs", "rclone", "boto3", "local"] if n in names]
    head = [
        "workload",
        "unit",
        *cols,
        "s3fuse/boto3",
        "s3fuse/s3fs",
        "s3fuse/rclone",
        "S3 requests (" + "/".join(c for c in cols if c != "local") + ")",
    ]
    rows = [head]
    for w in ws:
        reqs = "/".join(
            str(w.results[c].requests) if c in w.results and w.results[c].requests is not None
            else "-" for c in cols if c != "local")  # fmt: skip
        rows.append([w.title, w.unit, *[fmt(w.results.get(c), w.unit) for c in cols],
                     ratio(w, "s3fuse", "boto3"), ratio(w, "s3fuse", "s3fs"),
                     ratio(w, "s3fuse", "rclone"), reqs])  # fmt: skip
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    lines.insert(1, "|" + "---|" * len(head))
    return "\n".join(lines)


def machine_line() -> str:
    load = os.getloadavg()
    return (
        f"{time.strftime('%Y-%m-%d %H:%M')} UTC, {platform.node()}, {os.cpu_count()} cores, "
        f"load {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}, Python {platform.python_version()}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument(
        "--only", default="", help="targets: s3fuse,s3fuse-exact,s3fs,rclone,boto3,local"
    )
    ap.add_argument("--workloads", default="", help="comma list of workload names")
    ap.add_argument(
        "--server",
        choices=sorted(BACKENDS),
        default="moto",
        help="the S3 server every target runs on: moto (default) or a Ceph RGW "
        "started for the run (scripts/rgw/start; installs Ceph when missing)",
    )
    ap.add_argument("--record", action="store_true", help="append the table to RESULTS.md")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each workload per target, interleaved; the median is shown "
                         "(default 3)")  # fmt: skip
    args = ap.parse_args()
    # s3fuse as installed runs from bytecode (pip compiles it); an editable checkout under
    # PYTHONDONTWRITEBYTECODE would compile every module at each mount and time that too
    compileall.compile_dir(Path(__file__).resolve().parent.parent / "s3fuse", quiet=1)
    sizes = Sizes.quick() if args.quick else Sizes()
    work = Path(tempfile.mkdtemp(prefix="s3fuse-bench-"))
    server = BACKENDS[args.server](work)
    os.environ.update(AWS_ACCESS_KEY_ID=server.key_id, AWS_SECRET_ACCESS_KEY=server.secret,
                      AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
    server.warm_bytes = sizes.large
    b = Bench(server, sizes)
    only = [x for x in args.only.split(",") if x]
    targets: list[Target] = []
    for cls in (S3fuse, S3fuseExact, S3fs, Rclone, Local):
        target = cls(server, work)
        if only and target.name not in only:
            continue
        why = target.available()
        if why:
            print(f"skipping {target.name}: {why}", file=sys.stderr)
            continue
        targets.append(target)
    names = [t.name for t in targets] + ([] if only and "boto3" not in only else ["boto3"])
    ws = workloads(b)
    if args.workloads:
        keep = set(args.workloads.split(","))
        ws = [w for w in ws if w.name in keep]
    stop = threading.Event()
    try:
        for w in ws:
            server.restart()
            runs: dict[str, list[Result]] = {}
            for rep in range(args.repeat):  # interleaved: drift of the machine hits all
                for t in targets:
                    print(f"[bench] {w.name:9} {t.name:12} #{rep + 1}", end=" ", file=sys.stderr,
                          flush=True)  # fmt: skip
                    try:
                        r = w.fs_run(b, t)
                    except Exception as e:  # a crashed peer is a result, not the end of the run
                        r = Result(0.0, None, False, f"{type(e).__name__}: {e}"[:120])
                        t.unmount()
                    runs.setdefault(t.name, []).append(r)
                    print(fmt(r, w.unit), w.unit, f"({r.requests} requests)", file=sys.stderr)
                    server.empty_all()
                if "boto3" in names:
                    r = w.boto_run(b)
                    runs.setdefault("boto3", []).append(r)
                    print(f"[bench] {w.name:9} {'boto3':12} #{rep + 1} {fmt(r, w.unit)} {w.unit}",
                          file=sys.stderr)  # fmt: skip
                    server.empty_all()
            w.runs = runs
            w.results = {name: median(rs) for name, rs in runs.items()}
    finally:
        stop.set()
        for t in targets:
            t.unmount()
        server.stop()
    rss = ", ".join(f"{t.name} {t.peak_rss_kb / 1024:.0f} MB" for t in targets
                    if t.peak_rss_kb)  # fmt: skip
    table = report(ws, names, sizes)
    text = (
        f"\n### {machine_line()}, server {server.kind}{' (quick)' if args.quick else ''}"
        f"\n\n{table}\n\n"
        f"Peak RSS of the file-system process: {rss}\n"
    )
    print(text)
    if args.record:
        with open(Path(__file__).parent / "RESULTS.md", "a") as f:
            f.write(text)
    if not os.environ.get("BENCH_KEEP"):
        shutil.rmtree(work, ignore_errors=True)
    failed = [w.name for w in ws for r in w.results.values() if not r.ok]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
