"""Mapping between file-system paths and S3 keys.

A *path* is relative to the mount root, without leading or trailing slash ("" is the
root). A *key* is the full S3 key, including the mount's prefix. Directories are key
prefixes ending in "/"; an empty directory is a zero-byte marker object "dir/".

Rule for keys that POSIX cannot show (documented in SEMANTICS.md, "Names"): a listing entry
whose name is empty (``a//b``), ``.`` or ``..``, or longer than 255 bytes is hidden;
it is never mapped to a path, so it can never be reached or written through the mount.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from s3fuse.errors import FsError

MAX_KEY_BYTES = 1024  # S3's limit on a key, prefix included
MAX_NAME_BYTES = 255  # POSIX NAME_MAX


class NameError_(FsError):
    """A name that cannot become (part of) an S3 key; carries the errno to report."""


def normalize_prefix(prefix: str) -> str:
    """'a/b' or '/a/b/' -> 'a/b/'; '' stays ''."""
    parts = [p for p in prefix.split("/") if p]
    for p in parts:
        if p in (".", ".."):
            raise ValueError(f"prefix may not contain '.' or '..' segments: {prefix!r}")
    return "/".join(parts) + "/" if parts else ""


def decode_name(name: bytes) -> str:
    """A name the kernel hands us -> str, or NameError_ with the errno to return."""
    if len(name) > MAX_NAME_BYTES:
        raise NameError_(errno.ENAMETOOLONG, "name longer than 255 bytes")
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        # S3 keys are UTF-8; a name that is not cannot be stored.
        raise NameError_(errno.EINVAL, "name is not valid UTF-8; S3 keys must be") from None
    if not text or text in (".", "..") or "/" in text or "\0" in text:
        raise NameError_(errno.EINVAL, "invalid file name")
    return text


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


def basename(path: str) -> str:
    return path.rpartition("/")[2]


def listable_name(name: str) -> bool:
    """Whether a name found in a listing can be shown as a directory entry."""
    return (
        bool(name)
        and name not in (".", "..")
        and "\0" not in name
        and len(name.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES
    )


@dataclass(frozen=True)
class KeyMap:
    """Path <-> key for one mount (bucket prefix)."""

    prefix: str = ""

    def file_key(self, path: str) -> str:
        key = self.prefix + path
        self.check_len(key)
        return key

    def dir_prefix(self, path: str) -> str:
        """Key prefix of a directory's children (also its marker key)."""
        return self.prefix + path + "/" if path else self.prefix

    def marker_key(self, path: str) -> str:
        key = self.dir_prefix(path)
        self.check_len(key)
        return key

    def path_of(self, key: str) -> str | None:
        """Key -> path, or None when the key is outside the prefix or not showable."""
        if not key.startswith(self.prefix):
            return None
        rest = key[len(self.prefix) :].rstrip("/")
        if not rest:
            return ""
        parts = rest.split("/")
        if not all(listable_name(p) for p in parts):
            return None
        return rest

    @staticmethod
    def check_len(key: str) -> None:
        if len(key.encode("utf-8")) > MAX_KEY_BYTES:
            raise NameError_(errno.ENAMETOOLONG, "S3 key would exceed 1024 bytes")
