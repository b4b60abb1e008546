"""What the filesystem core takes and gives at its edge, in plain Python: the FUSE
adapter (s3fuse/fuse) converts between these and pyfuse3's types, and tests drive the
core with them directly, without a kernel."""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from s3fuse.errors import FsError

ROOT_INODE = 1  # FUSE's root inode number
RENAME_NOREPLACE = 1  # rename(2) flags, as renameat2 defines them
RENAME_EXCHANGE = 2
ENOATTR = errno.ENODATA  # getxattr of a name the file does not have


class Caller(Protocol):
    """Who asks (pyfuse3.RequestContext has these)."""

    @property
    def uid(self) -> int: ...
    @property
    def gid(self) -> int: ...


class AttrChanges(Protocol):
    """Which attributes a setattr changes (pyfuse3.SetattrFields has these)."""

    @property
    def update_mode(self) -> bool: ...
    @property
    def update_uid(self) -> bool: ...
    @property
    def update_gid(self) -> bool: ...
    @property
    def update_mtime(self) -> bool: ...
    @property
    def update_atime(self) -> bool: ...
    @property
    def update_size(self) -> bool: ...


class NewAttrs(Protocol):
    """The values of a setattr (pyfuse3.EntryAttributes has these)."""

    @property
    def st_mode(self) -> int: ...
    @property
    def st_uid(self) -> int: ...
    @property
    def st_gid(self) -> int: ...
    @property
    def st_size(self) -> int: ...
    @property
    def st_mtime_ns(self) -> int: ...
    @property
    def st_atime_ns(self) -> int: ...


@dataclass
class Entry:
    """A node's attributes as the kernel gets them, with how long it may keep them."""

    st_ino: int
    st_mode: int
    st_nlink: int
    st_uid: int
    st_gid: int
    st_size: int
    st_blksize: int
    st_blocks: int
    st_mtime_ns: int
    entry_timeout: float
    attr_timeout: float
    st_atime_ns: int
    st_ctime_ns: int
    st_rdev: int = 0
    generation: int = 0


@dataclass(frozen=True)
class Opened:
    fh: int
    # open() found a newer version than the kernel may have cached attributes of: the
    # adapter tells the kernel to forget them
    changed: bool = False


@dataclass(frozen=True)
class FsStats:
    f_bsize: int
    f_frsize: int
    f_blocks: int
    f_bfree: int
    f_bavail: int
    f_files: int
    f_ffree: int
    f_favail: int
    f_namemax: int


# readdir hands each entry to this (name, attributes, offset of the next one); False: the
# kernel's buffer is full, stop
Reply = Callable[[bytes, Entry, int], bool]


class Refusal(FsError):
    """An answer the caller expects now and then (ENOENT, EEXIST, ENOTEMPTY, ...): the
    adapter returns its errno without logging it."""

    def __init__(self, err: int) -> None:
        super().__init__(err, errno.errorcode.get(err, str(err)))


def refuse(err: int) -> Refusal:
    return Refusal(err)
