"""A spool entry's crash journal: one JSON record a line, the last complete line is the
entry's state.

A state change appends its record. Replacing the file instead (a temporary file renamed
over the journal) made ext4 write the temporary file's data out at the rename, about
0.25 ms on the event loop for each file closed, several times that on a busy disk. An
append is one write to the page cache.

What a crash can leave: a record cut short by a crash has no newline and is ignored,
so the entry keeps its earlier state; when that is ``open`` the file goes to recovered/
instead of being uploaded, and nothing is lost. An append that fails (spool full) is
cut off again at once, so a later record never joins a torn one. Journals written
before this format (one JSON object, no newline) read the same way.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from datetime import datetime
from typing import Any

# past this size the journal is rewritten (atomically) instead of appended to: a file
# renamed or rewritten many times while it stays open would otherwise grow it for ever
COMPACT_AT = 64 << 10


def _json_default(o: object) -> str:
    if isinstance(o, datetime):
        return o.isoformat()  # botocore takes ISO-8601 strings for timestamp parameters
    raise TypeError(f"cannot journal {type(o).__name__}")


def encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, default=_json_default).encode() + b"\n"


def parse(raw: bytes) -> dict[str, Any]:
    """The state a journal's bytes record. ValueError: no complete record."""
    lines = raw.split(b"\n")
    complete = lines[:-1] if len(lines) > 1 else lines  # one line, no newline: old format
    for line in reversed(complete):
        if line.strip():
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("journal record is not an object")
            return record
    raise ValueError("journal holds no complete record")


def read(path: str) -> dict[str, Any]:
    """The state the journal at path records (FileNotFoundError, ValueError)."""
    with open(path, "rb") as f:
        return parse(f.read())


def write_new(path: str, data: bytes) -> None:
    """Write a journal in place (the first one: until it is complete the data file is
    still empty, and an unreadable journal sends the entry to recovered/)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if os.write(fd, data) != len(data):
            raise OSError(errno.ENOSPC, "short write to the spool journal")
    finally:
        os.close(fd)


def replace(path: str, data: bytes) -> None:
    """Replace a journal atomically (a torn record must not take the old state with it)."""
    tmp = path + ".tmp"
    try:
        write_new(tmp, data)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.replace(tmp, path)


def append(path: str, data: bytes, size: int = 0) -> int:
    """Append a record to a journal of size bytes (0: not known); returns its new size.
    On failure the journal is left as it was (a partial record is cut off again)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        before = size or os.fstat(fd).st_size  # each syscall on the event loop counts
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, "short write to the spool journal")
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, before)
            raise
        return before + len(data)
    finally:
        os.close(fd)
