"""Block checksums that let a *ranged* read be verified before its bytes are handed out.

An ETag (MD5 or multipart) only checks a whole download. For an object larger than a
whole-GET read, s3fuse stores ``x-amz-meta-s3fuse-blocks: <size>:<block size>:<sums>`` when it
uploads: the object is cut in blocks (a whole number of CHUNKs, at most MAX_BLOCKS of
them), each summed as the CRC32 of the big-endian CRC32s of its CHUNKs. A reader fetches
whole blocks and checks each before it returns a byte. CRC32 catches any error burst of
up to 32 bits and random damage with odds 2^-32 per block: a transit check, not a defence
against someone who forges data (they could forge the metadata as well).

The sums are known when the upload starts (the spool has the whole file), so they go in
the metadata of the PutObject or CreateMultipartUpload itself. Pure logic (zlib only).
"""

from __future__ import annotations

import base64
import struct
import zlib
from dataclasses import dataclass

WHOLE_READ_MAX = 8 << 20  # objects up to this size are read whole, checked by their ETag
CHUNK = 4 << 20
MAX_BLOCKS = 96  # 384 bytes of sums, 512 characters of metadata
MAX_BLOCK = 64 << 20  # a reader holds a block: bounded memory (objects up to 6 GiB)
SUM = 4


def needed(size: int) -> bool:
    """Whether an object of this size gets block sums: read in ranges, and not so large
    that its blocks would not fit a reader's memory."""
    return size > WHOLE_READ_MAX and block_size_for(size) <= MAX_BLOCK


def block_size_for(size: int) -> int:
    chunks = max(1, -(-size // CHUNK))
    return CHUNK * -(-chunks // MAX_BLOCKS)


class ChunkSums:
    """CRC32s of consecutive CHUNK-sized pieces of a stream fed in order."""

    def __init__(self) -> None:
        self.sums: list[int] = []
        self._crc = 0
        self._in_chunk = 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = min(len(view), CHUNK - self._in_chunk)
            self._crc = zlib.crc32(view[:n], self._crc)
            self._in_chunk += n
            view = view[n:]
            if self._in_chunk == CHUNK:
                self.sums.append(self._crc)
                self._crc, self._in_chunk = 0, 0

    def finish(self) -> list[int]:
        return self.sums + ([self._crc] if self._in_chunk else [])


def _combine(chunk_sums: list[int]) -> int:
    return zlib.crc32(struct.pack(f">{len(chunk_sums)}I", *chunk_sums))


def encode(size: int, chunk_sums: list[int]) -> str:
    """The metadata value for an object of size bytes with these CHUNK sums."""
    bs = block_size_for(size)
    per = bs // CHUNK
    blocks = [_combine(chunk_sums[i : i + per]) for i in range(0, len(chunk_sums), per)]
    raw = struct.pack(f">{len(blocks)}I", *blocks)
    return f"{size}:{bs}:{base64.urlsafe_b64encode(raw).decode().rstrip('=')}"


@dataclass(frozen=True)
class BlockSums:
    size: int
    block_size: int
    sums: tuple[int, ...]

    @classmethod
    def parse(cls, value: str | None, size: int) -> BlockSums | None:
        """The sums from the metadata value, or None if absent, malformed, or not for an
        object of this size (the metadata of another version)."""
        if not value:
            return None
        size_text, _, rest = value.partition(":")
        bs_text, _, b64 = rest.partition(":")
        try:
            of_size, bs = int(size_text), int(bs_text)
            raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
        except ValueError:
            return None
        count = -(-size // bs) if bs > 0 else -1
        if of_size != size or bs <= 0 or bs % CHUNK or len(raw) != SUM * count:
            return None
        return cls(size, bs, struct.unpack(f">{count}I", raw))

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The block-aligned range [s, e) covering [start, end)."""
        s = start // self.block_size * self.block_size
        e = min(self.size, -(-end // self.block_size) * self.block_size)
        return s, e

    def matches(self, start: int, chunk_sums: list[int]) -> bool:
        """Whether the block at `start` (a block boundary) has these CHUNK sums."""
        index = start // self.block_size
        return index < len(self.sums) and _combine(chunk_sums) == self.sums[index]

    def check(self, start: int, data: bytes | memoryview) -> int | None:
        """None if data (beginning at the block boundary start, whole blocks, the last
        one possibly short at the object's end) matches its sums, else the offset of
        the first block that does not."""
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            block = view[pos : pos + self.block_size]
            sums = ChunkSums()
            sums.update(block)
            if not self.matches(start + pos, sums.finish()):
                return start + pos
            pos += len(block)
        return None
