"""The local write buffer: one spool file per file being written, plus a crash journal.

Layout of a spool directory (0700, one per bucket/prefix/endpoint):
    lock                  flock'ed by the running daemon
    NNNN.data             the file's bytes (0600)
    NNNN.json             journal: key, state, upload headers (journal.py)
    NNNN.upload           id of a multipart upload under way (aborted if a daemon dies)
    recovered/            files that were still open when a daemon died
    meta.db               HEAD answers kept across mounts (metacache.py; not the spool's)

Journal states: ``open`` (being written; after a crash it is moved to recovered/, since
uploading it could store a partial file), ``closing`` (close() started the upload; after
a crash it is uploaded). A spool file whose upload S3 acknowledged has no journal.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import logging
import os
import shutil
import time
from typing import TYPE_CHECKING, Any

from s3fuse.errors import CONFLICT, StoreError
from s3fuse.s3.types import PutResult
from s3fuse.spool import recovery, upload
from s3fuse.spool.entry import CLEAN, CLOSING, OPEN, SpoolEntry, SpoolError
from s3fuse.spool.recovery import Recovery
from s3fuse.spool.stream import PART_GROWTH, Streamer
from s3fuse.spool.upload import SMALL_BODY
from s3fuse.tasks import Background

if TYPE_CHECKING:
    from s3fuse.s3.client import Store

log = logging.getLogger(__name__)


class Spool:
    def __init__(
        self,
        directory: str,
        store: Store,
        *,
        multipart_threshold: int = 512 << 20,
        part_size: int = 16 << 20,
        part_concurrency: int = 4,
        retry_window: float = 30.0,
        tasks: Background | None = None,
        stream_threshold: int = 0,
    ) -> None:
        self.dir = directory
        self.store = store
        # S3 takes at most 5 GiB in one PutObject: larger files always go multipart
        self.multipart_threshold = min(multipart_threshold, 5 << 30)
        self.part_size = part_size
        self.part_concurrency = part_concurrency
        # a file written sequentially past this size uploads its parts while it is
        # written (stream.py); 0: never
        self.stream_threshold = stream_threshold
        self.part_growth = PART_GROWTH  # a streamed upload doubles its parts after so many
        # beyond botocore's own retries: how long an upload keeps trying through an
        # unreachable or failing (5xx) server, e.g. one that restarts
        self.retry_window = retry_window
        self.in_flight: dict[str, list[int]] = {}  # key -> [bytes sent, size], for status
        self._ids = itertools.count(1)
        self._lock_fd = -1
        self.failed: dict[str, str] = {}  # key -> last upload error, for status
        # where spool entries hash their data while it is written (without it, or while
        # the mount does not serve, data is hashed in the writing handler)
        self.tasks = tasks

    # -------------------------------------------------------------- set-up
    def open(self) -> None:
        """Create (0700) and lock the directory; refuse if another daemon holds it."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)
        fd = os.open(os.path.join(self.dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolError(
                errno.EBUSY,
                f"spool directory {self.dir} is in use by another s3fuse process "
                "(the same bucket is mounted already; use another --spool-dir)",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        existing = [int(n.split(".")[0]) for n in os.listdir(self.dir) if n[0].isdigit()]
        self._ids = itertools.count(max(existing, default=0) + 1)

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def new(self, key: str) -> SpoolEntry:
        entry_id = f"{next(self._ids):08d}"
        path = os.path.join(self.dir, entry_id + ".data")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as e:
            raise SpoolError(e.errno or errno.EIO, f"cannot create spool file: {e}") from e
        entry = SpoolEntry(self, entry_id, key, fd)
        try:
            entry.set_state(OPEN)
        except OSError as e:
            entry.close()
            raise SpoolError(e.errno or errno.EIO, f"cannot write spool journal: {e}") from e
        return entry

    async def fill(self, entry: SpoolEntry, key: str, expect_etag: str | None = None) -> None:
        """Copy the stored object into a fresh spool file (before a partial overwrite)."""
        with os.fdopen(os.dup(entry.fd), "r+b") as f:
            f.seek(0)
            n = await self.store.download(key, f, expect_etag=expect_etag)
            f.flush()
        entry.size = n
        entry.reset_hash_from_file()

    # -------------------------------------------------------------- upload
    def streams(self, entry: SpoolEntry, off: int, n: int) -> bool:
        """Whether the write of n bytes at off should start the entry's streamed upload:
        an append that takes the file past the stream threshold, while background tasks
        run to send the parts."""
        return (
            entry.stream is None
            and self.stream_threshold > 0
            and entry.size >= self.stream_threshold
            and off + n == entry.size
            and entry.write_error is None
            and self.tasks is not None
            and self.tasks.running
        )

    async def start_stream(self, entry: SpoolEntry, headers: dict[str, Any]) -> None:
        """Begin the entry's multipart upload with the headers it would be stored with
        now; a failure to begin is no failure of the write (the close sends it whole)."""
        assert self.tasks is not None  # streams() said so
        streamer = Streamer(self, entry, headers, self.tasks)
        try:
            await streamer.start()
        except StoreError as e:
            log.warning("%r: could not begin its upload while it is written (%s); the "
                        "close sends it whole", entry.key, e)  # fmt: skip
            return
        entry.stream = streamer
        await streamer.feed(entry.size)

    async def finish_stream(
        self, streamer: Streamer, entry: SpoolEntry, headers: dict[str, Any],
        conditions: dict[str, str] | None,
    ) -> PutResult | None:  # fmt: skip
        """The streamed upload completed, or None: the file goes up the ordinary way
        (which retries through a failing server; a lost race is the caller's to judge)."""
        try:
            return await streamer.finish(entry.size, headers, conditions)
        except StoreError as e:
            if conditions and e.code in CONFLICT:
                raise
            log.warning("%r: completing its streamed upload failed (%s); sending it whole",
                        entry.key, e)  # fmt: skip
            return None

    async def commit(
        self,
        entry: SpoolEntry,
        headers: dict[str, Any],
        conditions: dict[str, str] | None = None,
    ) -> PutResult | None:
        """Upload the entry if it changed since its last upload (idempotent per dirty
        generation). The journal says ``closing`` while S3 has not acknowledged it."""
        async with entry.lock:
            if not entry.dirty:
                return None
            gen = entry.dirty_gen
            entry.set_state(CLOSING, headers, conditions)
            streamer, entry.stream = entry.stream, None
            res = None
            md5 = None
            try:
                if streamer is not None:
                    res = await self.finish_stream(streamer, entry, headers, conditions)
                if res is None:
                    if entry.size < self.multipart_threshold:
                        md5 = await entry.digest()
                    data = os.pread(entry.fd, entry.size, 0) if entry.size <= SMALL_BODY else None
                    res = await self.send(entry.key, entry.data_path, entry.size, headers,
                                          conditions, md5=md5, data=data)  # fmt: skip
            except StoreError as e:
                if conditions and e.code in CONFLICT:
                    raise  # not a failure: the caller resends unquoted or keeps ours aside
                self.failed[entry.key] = f"{e.code}: {e.message}"
                log.error(
                    "upload of %r failed (%s: %s); its data stays in the spool at %s",
                    entry.key, e.code, e.message, entry.data_path,
                )  # fmt: skip
                raise
            self.failed.pop(entry.key, None)
            entry.uploaded_gen = gen
            entry.base_etag = res.etag
            if md5 is None:
                md5 = await entry.hashed_md5()
            entry.last_md5 = md5.hex() if md5 is not None else None
            if not entry.dirty:
                entry.set_state(CLEAN)
            log.debug("stored %r (%d bytes, etag %s)", entry.key, entry.size, res.etag)
            return res

    # -------------------------------------------------------------- crash recovery
    async def send(
        self, key: str, path: str, size: int, headers: dict[str, Any],
        conditions: dict[str, str] | None, *, md5: bytes | None = None,
        data: bytes | None = None,
    ) -> PutResult:  # fmt: skip
        return await upload.send(self, key, path, size, headers, conditions, md5=md5, data=data)

    async def recover(self) -> Recovery:
        return await recovery.recover(self)

    def quarantine(self, data_path: str, key: str) -> str:
        """Move a spool file to recovered/ (never deleted); returns its new path."""
        dest = self._recovery_path(key)
        os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
        shutil.move(data_path, dest)
        return dest

    def _recovery_path(self, key: str) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        safe = key.replace("/", "%2F") or "unnamed"
        base = os.path.join(self.dir, "recovered", stamp, safe[:200])
        path = base
        for i in itertools.count(1):
            if not os.path.exists(path):
                return path
            path = f"{base}.{i}"
        raise AssertionError("unreachable")
