"""The running MD5 of a file written in sequence, computed while its data arrives.

hashlib releases the GIL for large updates, so a worker thread hashes one chunk while
the next WRITE is handled: at close the digest is ready and the spool file is not read
again. Small chunks (a 4 KiB file) are hashed at once: a thread hop would cost more.
"""

from __future__ import annotations

import hashlib
from collections import deque

import trio

from s3fuse.tasks import Background

INLINE = 64 << 10  # chunks below this are hashed in the handler itself
WINDOW = 8 << 20  # at most this many bytes wait to be hashed; the writer waits beyond


class Hasher:
    def __init__(self, tasks: Background | None) -> None:
        self._md5 = hashlib.md5()
        self._tasks = tasks
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._idle = trio.Event()
        self._idle.set()
        self._room = trio.lowlevel.ParkingLot()
        self._broken = False  # the hashing task was cancelled: the digest is unknown

    async def add(self, data: bytes) -> None:
        """Append data (in order: callers serialise their writes)."""
        if self._broken:
            return  # the digest is unknown anyway: the spool file is hashed at upload
        if (
            self._tasks is None
            or not self._tasks.running
            or (not self._queue and len(data) < INLINE)
        ):
            self._md5.update(data)
            return
        while self._queued >= WINDOW and not self._broken:
            await self._room.park()
        self._queue.append(data)
        self._queued += len(data)
        if self._idle.is_set():
            self._idle = trio.Event()
            self._tasks.start_soon(self._run)

    async def _run(self) -> None:
        try:
            while self._queue:
                data = self._queue[0]
                await trio.to_thread.run_sync(self._md5.update, data)
                self._queue.popleft()
                self._queued -= len(data)
                self._room.unpark_all()
        except BaseException:
            self._broken = True
            self._room.unpark_all()
            raise
        finally:
            self._idle.set()

    async def digest(self) -> bytes | None:
        """The MD5 of everything added, once hashed; None if hashing was interrupted."""
        await self._idle.wait()
        if self._broken or self._queue:
            return None
        return self._md5.digest()
