"""Sums of a spool file read from disk, in a worker thread (when they could not be
computed while the data arrived): its MD5, its multipart ETag, its block checksums."""

from __future__ import annotations

import hashlib

from s3fuse.model import blocksums
from s3fuse.model.etag import ETagHasher


def md5_of_file(path: str) -> bytes:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.digest()


def chunk_sums_of_file(path: str) -> list[int]:
    sums = blocksums.ChunkSums()
    with open(path, "rb") as f:
        while chunk := f.read(blocksums.CHUNK):
            sums.update(chunk)
    return sums.finish()


def etag_of_file(path: str, part_size: int) -> str:
    h = ETagHasher(part_size)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.etag()
