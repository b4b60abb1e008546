"""What an ETag says about an object's bytes, and the hash that reproduces it.

Pure logic (hashlib only). A plain PutObject's ETag is the body's MD5; a multipart
upload's is ``md5(md5(part 1) + ... + md5(part N))-N``. Neither holds under SSE-KMS or
SSE-C (the ETag is then opaque: sums_bytes).
"""

from __future__ import annotations

import hashlib

_HEX = frozenset("0123456789abcdef")


def sums_bytes(sse: str, *, sse_c: bool) -> bool:
    """Whether S3 computes an object's ETag from its bytes: not under SSE-KMS (DSSE
    included) or SSE-C, where the ETag is opaque. ``sse``: its x-amz-server-side-encryption."""
    return not sse_c and not sse.startswith("aws:kms")


def is_md5(etag: str) -> bool:
    return len(etag) == 32 and all(c in _HEX for c in etag)


def part_count(etag: str) -> int | None:
    """N for a multipart ETag ``<md5>-N``, else None."""
    digest, sep, count = etag.partition("-")
    if not sep or not is_md5(digest) or not count.isdigit() or int(count) < 1:
        return None
    return int(count)


def multipart(part_md5s: list[bytes]) -> str:
    return f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"


class ETagHasher:
    """The ETag of a byte stream fed in order: its MD5, or with part_size the multipart
    ETag of those bytes uploaded in parts of part_size."""

    def __init__(self, part_size: int | None = None) -> None:
        self.part_size = part_size
        self._part = hashlib.md5()
        self._in_part = 0
        self._parts: list[bytes] = []

    def update(self, data: bytes | memoryview) -> None:
        if self.part_size is None:
            self._part.update(data)
            return
        view = memoryview(data)
        while view:
            n = min(len(view), self.part_size - self._in_part)
            self._part.update(view[:n])
            self._in_part += n
            view = view[n:]
            if self._in_part == self.part_size:
                self._parts.append(self._part.digest())
                self._part, self._in_part = hashlib.md5(), 0

    def etag(self) -> str:
        if self.part_size is None:
            return self._part.hexdigest()
        parts = self._parts + ([self._part.digest()] if self._in_part or not self._parts else [])
        return multipart(parts)


MiB = 1 << 20
MAX_GUESSES = 16  # part sizes tried for a multipart object that does not say its own


def guessed_part_sizes(size: int, parts: int) -> list[int]:
    """Part sizes, whole MiB (what every common tool uses), that cut size bytes into
    exactly parts parts."""
    if parts == 1:
        return [max(size, 1)]
    low = size // parts + 1  # smaller: more parts
    high = -(-size // (parts - 1)) - 1 if parts > 1 else size  # larger: fewer parts
    first = -(-max(low, 1) // MiB)
    out = []
    for m in range(first, first + MAX_GUESSES):
        p = m * MiB
        if p > high:
            break
        if -(-size // p) == parts:
            out.append(p)
    return out


class ETagCheck:
    """Whether the bytes of a whole GET are the object its ETag describes.

    ``result()``: True (they are), False (they are not), None (the ETag says nothing
    that can be checked). For a multipart object whose part size is not known, every
    plausible part size is tried (``guessed``): no match can then also mean an unusual
    part size, which the caller tells from corruption by fetching again."""

    def __init__(self, etag: str, size: int, part_size: int | None = None) -> None:
        self.etag = etag
        self.guessed = False
        self._whole = hashlib.md5()
        parts = part_count(etag)
        sizes: list[int | None]
        if is_md5(etag):
            sizes = [None]
        elif parts is None:
            sizes = []
        elif part_size and -(-size // part_size) == parts:
            sizes = [part_size]
        else:
            sizes = list(guessed_part_sizes(size, parts))
            self.guessed = parts > 1
        self._hashers = [ETagHasher(s) for s in sizes]

    def update(self, data: bytes | memoryview) -> None:
        for h in self._hashers:
            h.update(data)
        if self.guessed:
            self._whole.update(data)

    def result(self) -> bool | None:
        if not self._hashers:
            return None
        return any(h.etag() == self.etag for h in self._hashers)

    def fingerprint(self) -> str:
        """The MD5 of the bytes (kept only when the part size was guessed)."""
        return self._whole.hexdigest()
