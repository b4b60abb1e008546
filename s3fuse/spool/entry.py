"""One file's spooled bytes and its crash journal (see spool.py for the layout)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from s3fuse.errors import FsError
from s3fuse.spool import journal
from s3fuse.spool.filesums import md5_of_file
from s3fuse.spool.hashing import Hasher

if TYPE_CHECKING:
    from s3fuse.spool.spool import Spool
    from s3fuse.spool.stream import Streamer

log = logging.getLogger(__name__)

OPEN = "open"
CLOSING = "closing"
CLEAN = "clean"


class SpoolError(FsError):
    """The local spool cannot take the data (full, unwritable, in use)."""


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
    stream: Streamer | None = None  # its multipart upload under way while it is written

    async def hashed_md5(self) -> bytes | None:
        """The MD5 computed while the data arrived (None: written out of sequence)."""
        return await self._hasher.digest() if self._hashed == self.size else None

    data_path: str = ""
    journal_path: str = ""
    _journaled: bool = False  # a journal file exists
    _journal_size: int = 0  # its bytes written by this entry (0: not known)

    def __post_init__(self) -> None:
        self._hasher = Hasher(self.spool.tasks)
        self.data_path = os.path.join(self.spool.dir, self.id + ".data")
        self.journal_path = os.path.join(self.spool.dir, self.id + ".json")

    @property
    def dirty(self) -> bool:
        return self.dirty_gen != self.uploaded_gen

    # -------------------------------------------------------------- data
    async def write(self, off: int, buf: bytes) -> int:
        self.touch()  # journal first: bytes S3 has not acknowledged are never unjournaled
        if self.stream is not None and off < self.stream.sent_end:
            self.drop_stream("a write behind the parts already sent")
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
        streaming = self.stream is not None
        if self._hashed == off and off + n < self.spool.multipart_threshold and not streaming:
            self._hashed += n
            await self._hasher.add(buf if n == len(buf) else buf[:n])
        else:
            # overwrite or hole: re-hash from the file at upload; or so large that it goes
            # up in parts (now, streamed, or at close), each hashed on its own: a
            # whole-file MD5 would be wasted work
            self._hashed = -1
        self.size = max(self.size, off + n)
        return n

    def read(self, off: int, size: int) -> bytes:
        return os.pread(self.fd, size, off)

    def truncate(self, size: int) -> None:
        self.touch()
        if self.stream is not None and size < self.stream.sent_end:
            self.drop_stream("truncated below the parts already sent")
        os.ftruncate(self.fd, size)
        if size == 0:
            self._hasher, self._hashed = Hasher(self.spool.tasks), 0
        elif size != self._hashed:
            self._hashed = -1
        self.size = size

    def drop_stream(self, why: str) -> None:
        """The streamed upload will not be completed (it is aborted in the background)."""
        if self.stream is not None:
            self.stream.cannot_complete(why)
            self.stream = None

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
        return await trio.to_thread.run_sync(md5_of_file, self.data_path)

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
        data = journal.encode(record)
        try:
            if not self._journaled:
                journal.write_new(self.journal_path, data)
                self._journal_size = len(data)
            elif self._journal_size + len(data) > journal.COMPACT_AT:
                journal.replace(self.journal_path, data)
                self._journal_size = len(data)
            else:
                self._journal_size = journal.append(self.journal_path, data, self._journal_size)
        except OSError as e:
            if not (
                state == CLOSING and self._journaled and e.errno in (errno.ENOSPC, errno.EDQUOT)
            ):
                raise
            # The spool filled up: the journal still says "open", which only makes a crash
            # during this upload move the file to recovered/ instead of uploading it.
            log.warning("spool %s is full: %r is uploaded without its 'closing' journal (a "
                        "crash meanwhile would move it to recovered/)", self.spool.dir,
                        self.key)  # fmt: skip
            return
        self._journaled = True

    def close_fd(self) -> None:
        """Let go of the file, keeping its bytes and journal (for a later mount)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def close(self) -> None:
        """Drop the local copy (only once S3 has it, or the file was deleted)."""
        self.drop_stream("its file was deleted or replaced")
        with contextlib.suppress(OSError):
            os.close(self.fd)
        for p in (self.data_path, self.journal_path) if self._journaled else (self.data_path,):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
        self._journaled = False
