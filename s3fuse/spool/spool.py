"""The local write buffer: one spool file per file being written, plus a crash journal.

Layout of a spool directory (0700, one per bucket/prefix/endpoint):
    lock                  flock'ed by the running daemon
    NNNN.data             the file's bytes (0600)
    NNNN.json             journal: key, state, upload headers
    NNNN.upload           id of a multipart upload under way (aborted if a daemon dies)
    recovered/            files that were still open when a daemon died
    meta.db               HEAD answers kept across mounts (metacache.py; not the spool's)

Journal states: ``open`` (being written; after a crash it is moved to recovered/, since
uploading it could store a partial file), ``closing`` (close() started the upload; after
a crash it is uploaded). A spool file whose upload S3 acknowledged has no journal.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import trio

from s3fuse.errors import CONFLICT, CORRUPTION, TRANSIENT, UNREACHABLE, FsError, StoreError
from s3fuse.model import blocksums
from s3fuse.model.etag import ETagHasher
from s3fuse.model.meta import META_BLOCKS
from s3fuse.model.xattrs import META_LIMIT, meta_size
from s3fuse.s3.client import Store
from s3fuse.s3.types import PutResult
from s3fuse.spool.hashing import Hasher

log = logging.getLogger(__name__)

PUT_ATTEMPTS = 3
# requests after which a ChecksumMismatch means S3 now holds the corrupted bytes
STORED_OPS = ("PutObject", "CompleteMultipartUpload")

# Files up to this size are read from the spool into memory for the PutObject: cheaper than
# a file object for botocore to seek and read (most files written through a mount are small)
SMALL_BODY = 1 << 20

OPEN = "open"
CLOSING = "closing"
CLEAN = "clean"


@dataclass
class Kept:
    """A closed file whose recovery upload failed: a live entry and its journaled headers."""

    entry: SpoolEntry
    headers: dict[str, Any]


@dataclass
class Recovery:
    uploaded: list[str] = field(default_factory=list)  # keys stored
    moved: list[str] = field(default_factory=list)  # paths under recovered/
    kept: list[Kept] = field(default_factory=list)
    aborted: int = 0  # multipart uploads a dead daemon left open


class SpoolError(FsError):
    """The local spool cannot take the data (full, unwritable, in use)."""


def _md5_of_file(path: str) -> bytes:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.digest()


def _chunk_sums_of_file(path: str) -> list[int]:
    sums = blocksums.ChunkSums()
    with open(path, "rb") as f:
        while chunk := f.read(blocksums.CHUNK):
            sums.update(chunk)
    return sums.finish()


def _etag_of_file(path: str, part_size: int) -> str:
    h = ETagHasher(part_size)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.etag()


def _json_default(o: object) -> str:
    if isinstance(o, datetime):
        return o.isoformat()  # botocore takes ISO-8601 strings for timestamp parameters
    raise TypeError(f"cannot journal {type(o).__name__}")


@dataclass
class SpoolEntry:
    """The spooled bytes of one file. Writes keep a running MD5 while they are sequential,
    so close() does not re-read the file; any other write pattern re-hashes at upload."""

    spool: Spool
    id: str
    key: str
    fd: int
    size: int = 0
    dirty_gen: int = 0
    uploaded_gen: int = 0
    state: str = CLEAN
    lock: trio.Lock = field(default_factory=trio.Lock)
    _hashed: int = 0  # bytes [0, _hashed) went to _hasher; -1 when the hash is invalid
    last_md5: str | None = None  # hex MD5 of the last acknowledged upload
    base_etag: str | None = None  # ETag of the stored version this content started from
    write_error: int | None = None  # a write failed (spool full): never upload this content

    async def hashed_md5(self) -> bytes | None:
        """The MD5 computed while the data arrived (None: written out of sequence)."""
        return await self._hasher.digest() if self._hashed == self.size else None

    data_path: str = ""
    journal_path: str = ""
    _journaled: bool = False  # a journal file exists

    def __post_init__(self) -> None:
        self._hasher = Hasher(self.spool.nursery)
        self.data_path = os.path.join(self.spool.dir, self.id + ".data")
        self.journal_path = os.path.join(self.spool.dir, self.id + ".json")

    @property
    def dirty(self) -> bool:
        return self.dirty_gen != self.uploaded_gen

    # -------------------------------------------------------------- data
    async def write(self, off: int, buf: bytes) -> int:
        self.touch()  # journal first: bytes S3 has not acknowledged are never unjournaled
        try:
            n = os.pwrite(self.fd, buf, off)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                log.error(
                    "spool %s is full: write to %r refused; this file will not be "
                    "uploaded (it would be incomplete)",
                    self.spool.dir,
                    self.key,
                )
                self.write_error = e.errno
            raise
        if self._hashed == off and off + n < self.spool.multipart_threshold:
            self._hashed += n
            await self._hasher.add(buf if n == len(buf) else buf[:n])
        else:
            # overwrite or hole: re-hash from the file at upload; or so large that it goes
            # up in parts, each hashed on its own (a whole-file MD5 would be wasted work)
            self._hashed = -1
        self.size = max(self.size, off + n)
        return n

    def read(self, off: int, size: int) -> bytes:
        return os.pread(self.fd, size, off)

    def truncate(self, size: int) -> None:
        self.touch()
        os.ftruncate(self.fd, size)
        if size == 0:
            self._hasher, self._hashed = Hasher(self.spool.nursery), 0
        elif size != self._hashed:
            self._hashed = -1
        self.size = size

    def touch(self) -> None:
        """Mark the spooled content as changed (a new dirty generation)."""
        self.dirty_gen = self.uploaded_gen + 1 if not self.dirty else self.dirty_gen
        if self.state != OPEN:
            self.set_state(OPEN)

    def reset_hash_from_file(self) -> None:
        self._hashed = -1

    async def digest(self) -> bytes:
        md5 = await self.hashed_md5()
        if md5 is not None:
            return md5
        return await trio.to_thread.run_sync(_md5_of_file, self.data_path)

    # -------------------------------------------------------------- journal
    def set_state(
        self,
        state: str,
        headers: dict[str, Any] | None = None,
        conditions: dict[str, str] | None = None,
    ) -> None:
        self.state = state
        if state == CLEAN:
            if self._journaled:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.journal_path)
                self._journaled = False
            return
        record = {
            "key": self.key,
            "state": state,
            "time": time.time(),
            "headers": headers or {},
            "conditions": conditions or {},
        }
        data = json.dumps(record, default=_json_default).encode()
        # The first journal is written in place: until it is complete the data file is
        # empty, and recovery moves an entry with an unreadable journal to recovered/.
        # Later states replace it atomically (a torn CLOSING record must not be lost).
        path = self.journal_path + ".tmp" if self._journaled else self.journal_path
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                if os.write(fd, data) != len(data):
                    raise OSError(errno.ENOSPC, "short write to the spool journal")
            finally:
                os.close(fd)
        except OSError as e:
            if not (
                state == CLOSING and self._journaled and e.errno in (errno.ENOSPC, errno.EDQUOT)
            ):
                raise
            # The spool filled up: the journal still says "open", which only makes a crash
            # during this upload move the file to recovered/ instead of uploading it.
            with contextlib.suppress(OSError):
                os.unlink(path)
            log.warning("spool %s is full: %r is uploaded without its 'closing' journal (a "
                        "crash meanwhile would move it to recovered/)", self.spool.dir,
                        self.key)  # fmt: skip
            return
        if self._journaled:
            os.replace(path, self.journal_path)
        self._journaled = True

    def close_fd(self) -> None:
        """Let go of the file, keeping its bytes and journal (for a later mount)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def close(self) -> None:
        """Drop the local copy (only once S3 has it, or the file was deleted)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)
        for p in (self.data_path, self.journal_path) if self._journaled else (self.data_path,):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
        self._journaled = False


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
    ) -> None:
        self.dir = directory
        self.store = store
        # S3 takes at most 5 GiB in one PutObject: larger files always go multipart
        self.multipart_threshold = min(multipart_threshold, 5 << 30)
        self.part_size = part_size
        self.part_concurrency = part_concurrency
        # beyond botocore's own retries: how long an upload keeps trying through an
        # unreachable or failing (5xx) server, e.g. one that restarts
        self.retry_window = retry_window
        self.in_flight: dict[str, list[int]] = {}  # key -> [bytes sent, size], for status
        self._ids = itertools.count(1)
        self._lock_fd = -1
        self.failed: dict[str, str] = {}  # key -> last upload error, for status
        # where spool entries hash their data in the background (set by the daemon;
        # without it, data is hashed as it is written)
        self.nursery: trio.Nursery | None = None

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
            md5 = await entry.digest() if entry.size < self.multipart_threshold else None
            data = os.pread(entry.fd, entry.size, 0) if entry.size <= SMALL_BODY else None
            try:
                res = await self.send(entry.key, entry.data_path, entry.size, headers,
                                      conditions, md5=md5, data=data)  # fmt: skip
            except StoreError as e:
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

    async def send(
        self,
        key: str,
        path: str,
        size: int,
        headers: dict[str, Any],
        conditions: dict[str, str] | None,
        *,
        md5: bytes | None = None,
        data: bytes | None = None,
    ) -> PutResult:
        """The bytes of a spool file to S3: one PutObject with Content-MD5 below the
        multipart threshold, else a multipart upload with per-part MD5. Bytes that S3
        rejects as corrupted (BadDigest) or stores with another MD5 are sent again from
        the spool, a bounded number of times. `data`: the file's bytes, read already."""
        progress = self.in_flight[key] = [0, size]
        deadline = time.monotonic() + self.retry_window
        delay = 0.5
        sums = await self._block_sums(key, path, size, headers)
        if sums is not None:
            md = headers.get("Metadata") or {}
            headers = {**headers, "Metadata": {**md, META_BLOCKS: sums}}
        while True:
            try:
                res = await self._send_once(
                    key, path, size, headers, conditions, md5, progress, data
                )
                if sums is not None:
                    res.metadata[META_BLOCKS] = sums
                return res
            except StoreError as e:
                if e.code == "ChecksumMismatch" and e.op in STORED_OPS:
                    await self._remove_corrupted(key, e)
                if e.code in CONFLICT and conditions:
                    landed = await self._landed(key, path, size, md5)
                    if landed is not None:
                        landed.metadata.update({META_BLOCKS: sums} if sums else {})
                        return landed
                if e.code not in TRANSIENT or time.monotonic() + delay > deadline:
                    raise
                log.warning("upload of %r: %s; trying again in %.1f s (the server may be "
                            "restarting)", key, e.code, delay)  # fmt: skip
                await trio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 8.0)
            finally:
                self.in_flight.pop(key, None)

    @staticmethod
    async def _block_sums(key: str, path: str, size: int, headers: dict[str, Any]) -> str | None:
        """The block checksums of a large file (blocksums.py), if they fit in the metadata
        beside the user's; without them its ranged reads cannot be checked."""
        if not blocksums.needed(size):
            return None
        chunk_sums = await trio.to_thread.run_sync(_chunk_sums_of_file, path)
        value = blocksums.encode(size, chunk_sums)
        md = {**(headers.get("Metadata") or {}), META_BLOCKS: value}
        if meta_size(md) > META_LIMIT:
            log.warning("%r: no room for block checksums beside its metadata; its ranged "
                        "reads will not be verified", key)  # fmt: skip
            return None
        return value

    async def _landed(self, key: str, path: str, size: int, md5: bytes | None) -> PutResult | None:
        """After a failed condition: whether S3 holds exactly these bytes, because this
        very upload landed and only its answer was lost (botocore then resent it, and the
        resent request's condition no longer holds). Not a conflict then."""
        current = await self.store.head(key)
        if current is None or current.size != size:
            return None
        if size >= self.multipart_threshold:
            want = await trio.to_thread.run_sync(_etag_of_file, path, self.part_size)
        else:
            digest = md5 if md5 is not None else await trio.to_thread.run_sync(_md5_of_file, path)
            want = digest.hex()
        if current.etag != want:
            return None
        log.warning("%r: S3 already holds this upload (its first answer was lost)", key)
        return PutResult(current.etag, current.version_id)

    @staticmethod
    def _track_upload(data_path: str, key: str, upload_id: str | None) -> None:
        """Keep the id of a multipart upload under way beside its spool file, so that a
        daemon killed meanwhile does not leave its parts behind (abandoned_uploads)."""
        path = data_path.removesuffix(".data") + ".upload"
        if upload_id is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        # without the record only the cleanup of the parts is lost
        with contextlib.suppress(OSError), open(path, "w") as f:
            json.dump({"key": key, "upload_id": upload_id or None}, f)

    async def abort_abandoned(self) -> int:
        """Abort the multipart uploads this spool started and a dead daemon left open
        (their parts cost storage until aborted). Returns how many were aborted."""
        aborted = 0
        for name in sorted(os.listdir(self.dir)):
            if not name.endswith(".upload"):
                continue
            path = os.path.join(self.dir, name)
            try:
                with open(path) as f:
                    rec = json.load(f)
                if rec["upload_id"] is None:
                    # killed while the upload was being created: its id never came back.
                    # (An upload of the same key by another host now fails and is retried
                    # there: its close() reports it, its bytes stay in its spool.)
                    n = await self.store.abort_uploads_of(str(rec["key"]))
                    if n:
                        log.warning("recovery: aborted %d unfinished multipart upload(s) of %r "
                                    "whose creation a crash interrupted",
                                    n, rec["key"])  # fmt: skip
                    aborted += n
                    os.unlink(path)
                    continue
                await self.store.abort_upload(str(rec["key"]), str(rec["upload_id"]))
            except (OSError, ValueError, KeyError) as e:
                log.warning("recovery: unreadable upload record %s (%s); removed", path, e)
            except StoreError as e:
                log.error("recovery: could not abort the unfinished multipart upload of %r "
                          "(%s); tried again at the next mount", rec.get("key"), e)  # fmt: skip
                continue
            else:
                aborted += 1
                log.warning("recovery: aborted the unfinished multipart upload of %r",
                            rec["key"])  # fmt: skip
            os.unlink(path)
        return aborted

    async def _remove_corrupted(self, key: str, e: StoreError) -> None:
        """A server that does not check Content-MD5 stored bytes that changed in transit
        (its ETag says so): never leave an object nobody closed. The bytes stay here."""
        try:
            await self.store.delete(key)
        except StoreError as de:
            log.error("%r: S3 holds a corrupted copy (%s) that could not be removed: %s",
                      key, e.message, de)  # fmt: skip
            return
        log.error("%r: S3 stored a corrupted copy (%s); it was removed", key, e.message)

    async def _send_once(
        self,
        key: str,
        path: str,
        size: int,
        headers: dict[str, Any],
        conditions: dict[str, str] | None,
        md5: bytes | None,
        progress: list[int],
        data: bytes | None = None,
    ) -> PutResult:
        self.in_flight[key] = progress
        progress[0] = 0
        if size >= self.multipart_threshold:
            return await self.store.put_multipart(
                key, path, size=size, part_size=self.part_size, headers=headers,
                conditions=conditions, concurrency=self.part_concurrency,
                on_progress=lambda n: progress.__setitem__(0, progress[0] + n),
                track=lambda upload_id: self._track_upload(path, key, upload_id),
            )  # fmt: skip
        if md5 is None:
            md5 = await trio.to_thread.run_sync(_md5_of_file, path)
        for attempt in range(1, PUT_ATTEMPTS + 1):
            try:
                with contextlib.ExitStack() as stack:
                    body = data if data is not None else stack.enter_context(open(path, "rb"))
                    res = await self.store.put(
                        key, body, md5=md5, size=size,
                        headers={**headers, **(conditions or {})},
                    )  # fmt: skip
                progress[0] = size
                return res
            except StoreError as e:
                if e.code not in CORRUPTION or attempt == PUT_ATTEMPTS:
                    raise
                log.warning(
                    "upload of %r was corrupted in transit (%s: %s); sending it again "
                    "from the spool (attempt %d of %d)",
                    key, e.code, e.message, attempt + 1, PUT_ATTEMPTS,
                )  # fmt: skip
        raise AssertionError("unreachable")

    # -------------------------------------------------------------- crash recovery
    async def recover(self) -> Recovery:
        """Deal with what a dead daemon left: upload closed files, move open ones to
        recovered/. A closed file whose upload fails again is handed back (``kept``) as a
        live entry: the mount shows its bytes, and a later write or unlink of the file
        supersedes it (it is never replayed over newer data). Never deletes data that S3
        has not acknowledged."""
        out = Recovery()
        out.aborted = await self.abort_abandoned()
        found: list[tuple[str, str, str, dict[str, Any]]] = []  # id, data, journal, record
        for name in sorted(os.listdir(self.dir)):
            if not name.endswith(".data"):
                continue
            entry_id = name[: -len(".data")]
            data = os.path.join(self.dir, name)
            journal = os.path.join(self.dir, entry_id + ".json")
            try:
                with open(journal) as f:
                    record = json.load(f)
            except FileNotFoundError:
                os.unlink(data)  # no journal: S3 acknowledged it
                continue
            except (OSError, ValueError):
                record = {"key": f"unknown-{entry_id}", "state": OPEN}
            found.append((entry_id, data, journal, record))
        # ids grow: of several closed entries for one key, the newest is the file's content
        newest = {str(r.get("key", "")): i for i, _, _, r in found if r.get("state") == CLOSING}
        unreachable: str | None = None
        for entry_id, data, journal, record in found:
            key = str(record.get("key", ""))
            if record.get("state") != CLOSING:
                self._recovered(out, data, journal, key, "was still open when the daemon "
                                "died; not uploaded (it could be partial)")  # fmt: skip
            elif newest[key] != entry_id:
                why = "was closed again later (a newer version is in the spool); not uploaded"
                self._recovered(out, data, journal, key, why)
            else:
                code = await self._recover_closed(out, entry_id, data, journal, key, record,
                                                  unreachable=unreachable)  # fmt: skip
                if code in UNREACHABLE:
                    unreachable = code
        if unreachable is not None:
            log.error("recovery: the server cannot be reached (%s); the closed files not "
                      "stored yet are kept, shown by the mount and uploaded later",
                      unreachable)  # fmt: skip
        return out

    async def _recover_closed(
        self, out: Recovery, entry_id: str, data: str, journal: str, key: str,
        record: dict[str, Any], *, unreachable: str | None = None,
    ) -> str | None:  # fmt: skip
        """Upload a closed entry, or keep it (``out.kept``) when that fails. With
        unreachable (the error of an earlier upload that says the server cannot be reached)
        it is kept without a try: recovery must not hold the mount back for minutes.
        Returns the error code of a failed upload."""
        headers = record.get("headers") or {}
        conditions = record.get("conditions") or None
        size = os.path.getsize(data)
        code = unreachable
        if code is None:
            try:
                await self.send(key, data, size, headers, conditions)
            except StoreError as e:
                if e.code in CONFLICT:
                    self._recovered(out, data, journal, key, f"was changed by another writer "
                                    f"({e.code}); S3 keeps theirs")  # fmt: skip
                    return None
                self.failed[key] = f"{e.code}: {e.message}"
                code = e.code
            else:
                os.unlink(journal)
                os.unlink(data)
                out.uploaded.append(key)
                log.warning("recovery: uploaded %r, whose close() had started before a crash",
                            key)  # fmt: skip
                return None
        else:
            self.failed[key] = f"{code}: not tried at start-up (the server was unreachable)"
        try:
            fd = os.open(data, os.O_RDWR)
        except OSError as oe:
            log.error("recovery: upload of %r failed (%s) and its spool file cannot be "
                      "opened (%s); kept in %s", key, code, oe, data)  # fmt: skip
            return code
        entry = SpoolEntry(self, entry_id, key, fd, size=size, dirty_gen=1, state=CLOSING,
                           _hashed=-1, _journaled=True)  # fmt: skip
        if conditions and "IfMatch" in conditions:
            entry.base_etag = conditions["IfMatch"].strip('"')
        out.kept.append(Kept(entry, headers))
        if unreachable is None:
            log.error("recovery: upload of %r failed (%s); kept in %s, shown by the mount "
                      "and tried again later", key, code, data)  # fmt: skip
        return code

    def _recovered(self, out: Recovery, data: str, journal: str, key: str, why: str) -> None:
        dest = self.quarantine(data, key)
        os.unlink(journal)
        out.moved.append(dest)
        log.warning("recovery: %r %s. Its bytes are in %s", key, why, dest)

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
