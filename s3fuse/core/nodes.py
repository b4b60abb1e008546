"""The core's records: its configuration, a node of the inode table (a file, directory or
symlink, with what is known of its stored object), and open file/directory handles."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

import trio

from s3fuse.core.readahead import Reader
from s3fuse.core.types import refuse
from s3fuse.model.meta import Attrs, Defaults
from s3fuse.spool.entry import SpoolEntry


@dataclass(frozen=True)
class FsConfig:
    defaults: Defaults
    cache_ttl: float = 1.0  # our listing/attribute/negative caches (config.trust_ttl)
    # close-to-open: open() asks S3 for the current version of a stored file (off when
    # the mount was told it is the only writer: a cache_ttl longer than kernel_ttl)
    revalidate_open: bool = True
    kernel_ttl: float = 1.0  # entry/attr timeout handed to the kernel
    read_only: bool = False
    mount_defaults: dict[str, str] = field(default_factory=dict)  # -o storage_class=... etc.
    sse_c: bool = False  # the mount encrypts with a customer key (SSE-C)
    conflict_detect: bool = False  # conditional writes (-o conflict=detect)
    # where attributes of listed entries come from: "exact" HEADs every entry for s3fuse's
    # mode/uid/gid/mtime; "listing" trusts the listing (size, LastModified) alone; "auto"
    # HEADs a sample of each directory and trusts its listing when no sampled object
    # carries s3fuse/s3fs/rclone metadata (a directory written by other tools)
    attrs: str = "auto"
    meta_style: str = "s3fs"  # which attribute keys uploads carry (model/meta.py STYLES)
    read_ahead_kb: int = 1024  # the kernel's read-ahead: how far behind a read may come

    def check_writable(self) -> None:
        if self.read_only:
            raise refuse(errno.EROFS)


@dataclass(eq=False)
class Node:
    ino: int
    path: str
    attrs: Attrs
    stored: bool = False  # an object (or dir marker) exists in S3
    etag: str = ""
    full: bool = False  # attrs include s3fuse metadata (HEAD or local)
    listed: bool = False  # attrs from a listing trusted to stand in for a HEAD
    aws_meta: bool = False  # its object carries AWS's file-* keys: kept up to date
    own_meta: bool = False  # the HEAD showed mode/uid/gid/mtime metadata
    fetched: float = 0.0  # monotonic time the attrs were last checked
    lookups: int = 0
    opens: int = 0
    entry: SpoolEntry | None = None
    unlinked: bool = False
    lock: trio.Lock = field(default_factory=trio.Lock)
    # xattrs: header values by short name (for a directory: the defaults of its files),
    # user metadata (x-amz-meta-*, s3fuse's own keys excluded), read-only facts.
    hdrs: dict[str, str] = field(default_factory=dict)
    umeta: dict[str, str] = field(default_factory=dict)
    integrity: dict[str, str] = field(default_factory=dict)  # meta.INTEGRITY_META values
    acl_loaded: bool = True
    tags_loaded: bool = True
    version_id: str | None = None
    md5: str | None = None
    last_modified_ns: int = 0
    lm_exact: bool = False  # last_modified_ns is S3's (a HEAD or a listing), not our clock
    target: bytes | None = None  # symlink target, once known
    subdirs: int = 0  # a directory's subdirectories as last listed, and made here since

    def written(self, last_modified_ns: int, *, otherwise: int) -> None:
        """After our own upload or copy: the LastModified S3 answered (or its clock), else
        ``otherwise`` and a LastModified this mount does not know."""
        self.last_modified_ns = last_modified_ns or otherwise
        self.lm_exact = bool(last_modified_ns)

    @property
    def is_dir(self) -> bool:
        return self.attrs.is_dir

    @property
    def is_link(self) -> bool:
        return self.attrs.is_link

    @property
    def size(self) -> int:
        return self.entry.size if self.entry is not None else self.attrs.size


@dataclass(eq=False)
class Handle:
    node: Node
    writable: bool
    append: bool = False  # O_APPEND: every write goes to the end of the file as we know it
    reader: Reader | None = None  # ranged GETs with read-ahead, made on first read
    served: int = 0  # bytes of the stored object read through it


@dataclass(eq=False)
class DirHandle:
    node: Node
    entries: list[tuple[str, Node]]
