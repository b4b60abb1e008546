"""Reading a stored object without downloading it first.

- An object up to SMALL bytes is read with one GET, checked against its ETag.
- A reader that starts at offset 0, or has read 4 MiB in sequence, gets a *stream*: one
  ranged GET from its offset to the end, read ahead in the background (at most WINDOW
  bytes beyond what was asked for),
  so the next read is usually already in memory. The kernel's own read-ahead sends reads
  out of order; `keep` bytes behind the newest read stay for them (keep_for: KEEP, or
  twice the mount's read_ahead_kb: a 16 MiB window sent READs 19 MiB behind the newest).
- A read far from the previous one is a single ranged GET (never a whole-object
  download for a small read).
- With block checksums (blocksums.py) every range is whole blocks, and no byte of a
  block is handed out before the whole block matched its sum: a stream starts at a block
  boundary and shows each block once it is checked; a random read fetches its blocks. A
  mismatch ends the stream; the read then goes through `fetch`, which fetches again.
Memory per reader is bounded by WINDOW + keep + one block.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from s3fuse.errors import StoreError
from s3fuse.model import blocksums
from s3fuse.tasks import Background

if TYPE_CHECKING:
    from s3fuse.s3.client import Store

log = logging.getLogger(__name__)

SMALL = blocksums.WHOLE_READ_MAX
WINDOW = 32 << 20
KEEP = 4 << 20
PIECE = 1 << 20
RANDOM_READ = 1 << 20
# a stream opens once this much was read in sequence (more than the kernel's own
# read-ahead fetches for one small read)
STREAM_AFTER = 4 << 20
START_WINDOW = 4 << 20  # a new stream reads this far ahead; doubling to WINDOW


def keep_for(read_ahead_kb: int) -> int:
    """Bytes a stream keeps behind the newest read for the kernel's read-ahead: it has
    READs under way across its whole window, and they arrive out of order. With less,
    the reads behind fell out of the stream and went one ranged GET each (a 16 MiB
    window on moto: 25 MB/s instead of 400)."""
    return max(KEEP, 2 * (read_ahead_kb << 10))


# (start, end, whole object) -> (offset, bytes from offset covering [start, end))
Fetch = Callable[[int, int, bool], Awaitable[tuple[int, bytes]]]


class Stream:
    def __init__(
        self, store: Store, key: str, start: int, end: int, tasks: Background,
        sums: blocksums.BlockSums | None = None, pin: dict[str, str] | None = None,
        keep: int = KEEP,
    ) -> None:  # fmt: skip
        self.store, self.key, self.end, self.sums, self.keep = store, key, end, sums, keep
        self.pin = pin  # GetObject's VersionId/IfMatch: the version the file was opened at
        if sums is not None:
            start = sums.span(start, start)[0]
        self.offsets: list[int] = []
        self.pieces: list[bytes] = []
        self.base = start  # offset of the first piece kept
        self.filled = start  # end of what arrived
        self.want = start  # end of the newest read
        self.error: BaseException | None = None
        self.closed = False
        self.window = START_WINDOW
        self.active: list[int] = []  # offsets of reads under way: their bytes stay
        self._changed = trio.Event()
        tasks.start_soon(self._pump)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _wait(self) -> None:
        await self._changed.wait()

    async def _pump(self) -> None:
        arrived = self.filled
        unchecked: list[bytes] = []  # of the block under way (with sums)
        summed = blocksums.ChunkSums()  # its sums, kept as the pieces arrive
        try:
            body = await self.store.open_stream(self.key, self.filled, self.end, self.pin)
            try:
                while arrived < self.end and not self.closed:
                    if arrived == self.filled and self.filled - self.want >= self.window:
                        await self._wait()
                        continue
                    n = min(PIECE, self.end - arrived)
                    data = await self.store.read_stream(body, n, self.key)
                    if not data:
                        raise StoreError("IncompleteBody", "the GET ended early", key=self.key)
                    arrived += len(data)
                    unchecked.append(data)
                    if self.sums is not None:
                        summed.update(data)  # ~0.25 ms a piece: no thread hop, no copy
                        if arrived % self.sums.block_size and arrived < self.end:
                            continue  # the block is not complete yet
                        self._check(summed.finish())
                        summed = blocksums.ChunkSums()
                    self._show(unchecked)
                    unchecked = []
            finally:
                self.store.close_stream(body)
        except Exception as e:  # handed to the reader waiting for these bytes
            self.error = e
            self._notify()

    def _check(self, chunk_sums: list[int]) -> None:
        """The block that starts at self.filled has arrived whole: it must match."""
        assert self.sums is not None
        if self.sums.matches(self.filled, chunk_sums):
            return
        self.store.stats.corrupted()
        log.warning("read-ahead of %r: bytes at %d do not match their block checksum "
                    "(corrupted in transit?); they are fetched again",
                    self.key, self.filled)  # fmt: skip
        raise StoreError("ChecksumMismatch", f"bytes at {self.filled} of a GET do not match "
                         "their block checksum", key=self.key)  # fmt: skip

    def _show(self, pieces: list[bytes]) -> None:
        """Make the pieces readable (with sums: a whole block that matched)."""
        for data in pieces:
            self.offsets.append(self.filled)
            self.pieces.append(data)
            self.filled += len(data)
        # the kernel reads ahead in parallel: a read may still wait for bytes far behind
        # the newest one
        floor = min([self.want - self.keep, *self.active])
        while self.offsets and self.offsets[0] + len(self.pieces[0]) <= floor:
            self.base += len(self.pieces[0])
            del self.offsets[0], self.pieces[0]
        self._notify()

    def can_serve(self, off: int) -> bool:
        return self.error is None and not self.closed and self.base <= off <= self.filled + WINDOW

    async def read(self, off: int, size: int) -> bytes:
        self.active.append(off)
        try:
            return await self._read(off, size)
        finally:
            self.active.remove(off)

    async def _read(self, off: int, size: int) -> bytes:
        end = min(off + size, self.end)
        if end > self.want:
            self.want = end
            if self.filled - self.want < self.window // 2:
                self.window = min(self.window * 2, WINDOW)  # the reader keeps up: go further
            self._notify()  # the pump may read further now
        while self.filled < end and self.error is None and not self.closed:
            await self._wait()
        if self.filled < end:
            if self.error is not None:
                raise self.error
            # closed under this read (the reader moved to a new stream): nobody will
            # fill it any more, and a waiting kernel READ would hang the application
            raise StoreError("ReadAheadClosed", f"the stream closed before {end}", key=self.key)
        i = bisect.bisect_right(self.offsets, off) - 1
        if i < 0 or off < self.base:  # dropped meanwhile (never expected): read directly
            raise StoreError("ReadAheadMissed", f"bytes at {off} left the window", key=self.key)
        out = []
        pos = off
        while pos < end:
            piece, start = self.pieces[i], self.offsets[i]
            out.append(piece[pos - start : end - start])
            pos = start + len(piece)
            i += 1
        return b"".join(out)

    def close(self) -> None:
        self.closed = True
        self._notify()


class Reader:
    def __init__(
        self, store: Store, key: str, size: int, fetch: Fetch, tasks: Background,
        sums: blocksums.BlockSums | None = None, pin: dict[str, str] | None = None,
        keep: int = KEEP,
    ) -> None:  # fmt: skip
        self.store, self.key, self.size, self.sums = store, key, size, sums
        self.pin, self.keep = pin, keep
        self.fetch = fetch  # ranged GET, checked (whole objects: ETag; ranges: block sums)
        self.tasks = tasks
        self.stream: Stream | None = None
        self.last_end = 0
        self.sequential = 0  # bytes read in a (nearly) sequential run
        self.buf_start = 0
        self.buf = b""

    async def read(self, off: int, size: int) -> bytes:
        if off >= self.size or size <= 0:
            return b""
        size = min(size, self.size - off)
        if self.buf_start <= off and off + size <= self.buf_start + len(self.buf):
            data = self.buf[off - self.buf_start : off - self.buf_start + size]
        elif self.size <= SMALL:
            self.buf_start, self.buf = await self.fetch(0, self.size, True)
            data = self.buf[off : off + size]
        elif self.stream is not None and self.stream.can_serve(off):
            data = await self._stream_read(off, size)
        elif off == 0 or (abs(off - self.last_end) <= PIECE and self.sequential >= STREAM_AFTER):
            self.close()
            self.stream = Stream(
                self.store, self.key, off, self.size, self.tasks, self.sums, self.pin,
                self.keep,
            )  # fmt: skip
            data = await self._stream_read(off, size)
        else:
            end = min(self.size, off + max(size, RANDOM_READ))
            self.buf_start, self.buf = await self.fetch(off, end, False)
            data = self.buf[off - self.buf_start : off - self.buf_start + size]
        near = abs(off - self.last_end) <= PIECE
        self.sequential = self.sequential + len(data) if near else len(data)
        self.last_end = off + len(data)
        return data

    async def _stream_read(self, off: int, size: int) -> bytes:
        stream = self.stream
        assert stream is not None
        try:
            return await stream.read(off, size)
        except StoreError as e:
            log.warning("read-ahead of %r failed (%s); reading the range directly", self.key, e)
            if self.stream is stream:
                self.close()  # not a newer stream another read started meanwhile
            self.buf_start, self.buf = await self.fetch(off, off + size, False)
            return self.buf[off - self.buf_start : off - self.buf_start + size]

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
