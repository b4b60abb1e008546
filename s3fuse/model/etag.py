"""What an ETag says about an object's bytes, and the hash that reproduces it.

Pure logic (hashlib only). A plain PutObject's ETag is the body's MD5; a multipart
upload's is ``md5(md5(part 1) + ... + md5(part N))-N``. Neither holds under SSE-KMS or
SSE-C (the ETag is then opaque: sums_bytes).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

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


MAX_PARTS = 10_000  # S3's limit per multipart upload
MAX_PART = 5 << 30  # S3's largest part
MAX_OBJECT = 5 << 40  # S3's largest object
_GROWN = re.compile(r"([1-9][0-9]*)x2/([1-9][0-9]*)")


@dataclass(frozen=True)
class PartPlan:
    """How an upload cuts its bytes into parts: `size` bytes each, or, with `every`,
    doubled after every `every` parts (at most 5 GiB a part). A streamed upload starts
    before its size is known, so its parts grow: with 16 MiB and every 1000, the 10,000
    parts S3 allows hold more than 5 TiB (S3's largest object), and a file below 16 GiB
    is cut as with a fixed size. Written to the object's metadata (META_PART_SIZE) as
    "16777216" or "16777216x2/1000", so that a reader can recompute its ETag."""

    size: int
    every: int = 0

    def length(self, num: int) -> int:
        """The length of part `num` (1-based) when it is not the last."""
        if not self.every:
            return self.size
        return min(self.size << min((num - 1) // self.every, 40), MAX_PART)

    def count(self, total: int) -> int:
        """How many parts `total` bytes make (at least one)."""
        if not self.every:
            return max(1, -(-total // self.size))
        parts = 0
        while True:
            length = self.length(parts + 1)
            run = self.every * length
            if total <= run or length == MAX_PART:
                return parts + max(1, -(-total // length))
            parts, total = parts + self.every, total - run

    @classmethod
    def growing(cls, size: int, every: int) -> PartPlan:
        """Parts of `size` doubled after every `every` parts, or sooner where that would
        not hold S3's largest object (5 TiB) in 10,000 parts (a small part size)."""
        while every > 1 and cls(size, every).count(MAX_OBJECT) > MAX_PARTS:
            every -= max(1, every // 20)
        return cls(size, every)

    def settled(self, parts: int) -> PartPlan:
        """The same cut, stated as simply as an upload of `parts` parts allows."""
        return PartPlan(self.size) if parts <= self.every else self

    def encode(self) -> str:
        return f"{self.size}x2/{self.every}" if self.every else str(self.size)

    @classmethod
    def parse(cls, text: str) -> PartPlan | None:
        if text.isdigit() and int(text) > 0:
            return cls(int(text))
        m = _GROWN.fullmatch(text)
        return cls(int(m[1]), int(m[2])) if m else None


def part_size_for(size: int, part_size: int) -> int:
    """The part size of an upload of `size` bytes whose size is known: at least S3's
    5 MiB, and large enough that the parts stay within S3's 10,000."""
    return max(part_size, 5 << 20, -(-size // MAX_PARTS))


class ETagHasher:
    """The ETag of a byte stream fed in order: its MD5, or with a part plan (a part
    size) the multipart ETag of those bytes uploaded in its parts."""

    def __init__(self, plan: PartPlan | int | None = None) -> None:
        self.plan = PartPlan(plan) if isinstance(plan, int) else plan
        self._part = hashlib.md5()
        self._in_part = 0
        self._parts: list[bytes] = []
        self._limit = self.plan.length(1) if self.plan else 0

    def update(self, data: bytes | memoryview) -> None:
        if self.plan is None:
            self._part.update(data)
            return
        view = memoryview(data)
        while view:
            n = min(len(view), self._limit - self._in_part)
            self._part.update(view[:n])
            self._in_part += n
            view = view[n:]
            if self._in_part == self._limit:
                self._parts.append(self._part.digest())
                self._part, self._in_part = hashlib.md5(), 0
                self._limit = self.plan.length(len(self._parts) + 1)

    def etag(self) -> str:
        if self.plan is None:
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

    def __init__(self, etag: str, size: int, plan: PartPlan | None = None) -> None:
        self.etag = etag
        self.guessed = False
        self._whole = hashlib.md5()
        parts = part_count(etag)
        sizes: list[PartPlan | int | None]
        if is_md5(etag):
            sizes = [None]
        elif parts is None:
            sizes = []
        elif plan is not None and plan.count(size) == parts:
            sizes = [plan]
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
