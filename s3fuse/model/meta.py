"""File attributes and their encoding in S3 user metadata.

s3fuse uses the s3fs-fuse convention so that buckets interoperate: ``x-amz-meta-mode`` is
the full st_mode in decimal (type bits included), ``x-amz-meta-uid``/``-gid`` decimal ids,
``x-amz-meta-mtime`` seconds since the epoch (a fraction is appended when the time has
nanoseconds; s3fs reads the integer part); ``x-amz-meta-atime``/``-ctime`` alike, written
only when they differ from the mtime (absent: the mtime stands for them).
``x-amz-meta-rdev`` is the device number (st_rdev, decimal) of a character or block device
node; fifos, sockets and devices are zero-byte objects whose mode carries their file type.

Amazon's file interfaces over S3 (FSx for Lustre, File Cache, DataSync, S3 Files) keep
``x-amz-meta-file-permissions`` (st_mode in octal, type bits included: ``0100644``),
``x-amz-meta-file-owner`` and ``-file-group`` (decimal ids). They are read where the s3fs
keys are absent, and written with ``-o meta_style=aws|both`` (STYLES).
"""

from __future__ import annotations

import functools
import logging
import mimetypes
import stat
import time
from dataclasses import dataclass

META_MODE = "mode"
META_UID = "uid"
META_GID = "gid"
META_MTIME = "mtime"
META_ATIME = "atime"
META_CTIME = "ctime"
META_RDEV = "rdev"
TIME_META = (META_MTIME, META_ATIME, META_CTIME)
# the part size of a multipart upload, so that a reader can check the multipart ETag
META_PART_SIZE = "s3fuse-part-size"
META_BLOCKS = "s3fuse-blocks"  # blocksums.py
INTEGRITY_META = (META_PART_SIZE, META_BLOCKS)  # describe the bytes: kept by every copy
AWS_PERMISSIONS, AWS_OWNER, AWS_GROUP = "file-permissions", "file-owner", "file-group"
AWS_META = (AWS_PERMISSIONS, AWS_OWNER, AWS_GROUP)
OWN_META = (META_MODE, META_UID, META_GID, *TIME_META, META_RDEV, *INTEGRITY_META, *AWS_META)
# which keys s3fuse writes: s3fs's (mode/uid/gid), AWS's (file-*), or both; the mtime key
# keys are s3fs's in every style (AWS's timestamp keys are not written)
STYLES = ("s3fs", "aws", "both")

log = logging.getLogger(__name__)

DIR_CONTENT_TYPE = "application/x-directory"
DEFAULT_CONTENT_TYPE = "application/octet-stream"


DEVICE_TYPES = (stat.S_IFCHR, stat.S_IFBLK)  # the special files that have an st_rdev
SPECIAL_TYPES = (stat.S_IFIFO, stat.S_IFSOCK, *DEVICE_TYPES)


@dataclass
class Attrs:
    mode: int  # st_mode including type bits
    uid: int
    gid: int
    mtime_ns: int
    size: int = 0
    rdev: int = 0  # device number of a character or block device node
    atime_ns: int = 0  # 0: the mtime stands for it
    ctime_ns: int = 0  # 0: the mtime stands for it

    @property
    def atime(self) -> int:
        return self.atime_ns or self.mtime_ns

    @property
    def ctime(self) -> int:
        return self.ctime_ns or self.mtime_ns

    def changed(self, now: int | None = None) -> None:
        """The inode changed (mode, owner, name, size, times): its ctime is now."""
        self.ctime_ns = now or now_ns()

    def modified(self, now: int | None = None) -> None:
        """The content (a directory's: its names) changed: mtime and ctime are now."""
        self.mtime_ns = self.ctime_ns = now or now_ns()

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_special(self) -> bool:
        """A fifo, socket or device node: a zero-byte object, its I/O the kernel's."""
        return stat.S_IFMT(self.mode) in SPECIAL_TYPES

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.mode)


@dataclass(frozen=True)
class Defaults:
    """Attributes for objects written by other tools (no s3fuse metadata)."""

    uid: int
    gid: int
    file_mode: int = 0o644
    dir_mode: int = 0o755


def now_ns() -> int:
    return time.time_ns()


def encode_mtime(mtime_ns: int) -> str:
    sec, nsec = divmod(mtime_ns, 1_000_000_000)
    return str(sec) if nsec == 0 else f"{sec}.{nsec:09d}"


def decode_mtime(text: str) -> int | None:
    try:
        sec, _, frac = text.strip().partition(".")
        ns = int(sec) * 1_000_000_000
        if frac:
            ns += int((frac + "000000000")[:9])
        return ns
    except ValueError:
        return None


def encode(attrs: Attrs, style: str = "s3fs") -> dict[str, str]:
    out: dict[str, str] = {}
    if style in ("s3fs", "both"):
        out.update({META_MODE: str(attrs.mode), META_UID: str(attrs.uid),
                    META_GID: str(attrs.gid)})  # fmt: skip
    if style in ("aws", "both"):
        out.update({AWS_PERMISSIONS: f"0{attrs.mode:o}", AWS_OWNER: str(attrs.uid),
                    AWS_GROUP: str(attrs.gid)})  # fmt: skip
    out[META_MTIME] = encode_mtime(attrs.mtime_ns)
    for key, ns in ((META_ATIME, attrs.atime_ns), (META_CTIME, attrs.ctime_ns)):
        if ns and ns != attrs.mtime_ns:
            out[key] = encode_mtime(ns)
    if stat.S_IFMT(attrs.mode) in DEVICE_TYPES:
        out[META_RDEV] = str(attrs.rdev)
    return out


def has_aws_keys(meta: dict[str, str]) -> bool:
    return any(k.lower() in AWS_META for k in meta)


@functools.lru_cache(maxsize=64)
def _warn_permissions(value: str) -> None:
    """Once per distinct bad value: a mount would log it for every HEAD otherwise."""
    log.warning("x-amz-meta-file-permissions=%r is not an octal mode; default permissions "
                "shown", value)  # fmt: skip


def _octal(meta: dict[str, str], name: str) -> int | None:
    if name not in meta:
        return None
    try:
        return int(meta[name].strip(), 8)
    except ValueError:
        _warn_permissions(meta[name])
        return None


def _int(meta: dict[str, str], name: str) -> int | None:
    try:
        return int(meta[name])
    except (KeyError, ValueError):
        return None


def decode(
    meta: dict[str, str], *, is_dir: bool, size: int, last_modified_ns: int, defaults: Defaults
) -> Attrs:
    """Attributes of an object from its user metadata; defaults fill what is missing."""
    kind = stat.S_IFDIR if is_dir else stat.S_IFREG
    mode = _int(meta, META_MODE)
    if mode is None:
        mode = _octal(meta, AWS_PERMISSIONS)
    if mode is None or mode <= 0 or mode >= 0o1000000:
        mode = kind | (defaults.dir_mode if is_dir else defaults.file_mode)
    elif stat.S_IFMT(mode) == 0:
        mode |= kind  # some tools store only permission bits
    elif is_dir != stat.S_ISDIR(mode):
        mode = kind | stat.S_IMODE(mode)  # a key ending in "/" is a directory, others not
    uid = _int(meta, META_UID)
    if uid is None:
        uid = _int(meta, AWS_OWNER)
    gid = _int(meta, META_GID)
    if gid is None:
        gid = _int(meta, AWS_GROUP)
    mtime = _time(meta, META_MTIME)
    return Attrs(
        mode=mode,
        uid=defaults.uid if uid is None else uid,
        gid=defaults.gid if gid is None else gid,
        mtime_ns=last_modified_ns if mtime is None else mtime,
        size=0 if stat.S_IFMT(mode) in SPECIAL_TYPES else size,
        rdev=(_int(meta, META_RDEV) or 0) if stat.S_IFMT(mode) in DEVICE_TYPES else 0,
        atime_ns=_time(meta, META_ATIME) or 0,
        ctime_ns=_time(meta, META_CTIME) or 0,
    )


def _time(meta: dict[str, str], name: str) -> int | None:
    return decode_mtime(meta[name]) if name in meta else None


def content_type_for(name: str) -> str:
    """The Content-Type for a file name (from its suffixes, as mimetypes sees them)."""
    base = name.rpartition("/")[2]
    dot = base.find(".", 1)
    return _type_for_suffixes(base[dot:].lower() if dot > 0 else "")


@functools.lru_cache(maxsize=512)
def _type_for_suffixes(suffixes: str) -> str:
    guessed, _ = mimetypes.guess_type("x" + suffixes, strict=False)
    return guessed or DEFAULT_CONTENT_TYPE
