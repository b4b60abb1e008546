"""A file's versions in a versioned bucket, read-only, so what another host overwrote can
be got back: getxattr ``user.s3.versions`` lists them (one line each: version id,
LastModified, size, ETag, and "current" or "deleted"; the current one first), and setxattr
``user.s3.restore`` = a version id copies that version, server-side, to a new file beside
it, ``NAME.vYYYYmmddTHHMMSSZ-ID8``: the current version stays as it is. The list is asked
for each time (one ListObjectVersions; never part of listxattr, so ``cp -a`` and
``rsync -X`` do not ask for it). A bucket without versioning has nothing to list
(ENODATA)."""

from __future__ import annotations

import calendar
import errno
import logging
import re
import time
from typing import TYPE_CHECKING

from s3fuse.core.cache import Child
from s3fuse.core.types import ENOATTR, refuse
from s3fuse.errors import FsError
from s3fuse.model.keys import basename, decode_name, join, parent_of
from s3fuse.s3.types import Version

if TYPE_CHECKING:
    from s3fuse.core.fs import S3Fs
    from s3fuse.core.nodes import Node

log = logging.getLogger(__name__)
UNVERSIONED = "null"  # the id S3 gives objects written while versioning was off


def stamp(ns: int, fmt: str = "%Y-%m-%dT%H:%M:%SZ") -> str:
    return time.strftime(fmt, time.gmtime(ns // 1_000_000_000))


def line(v: Version) -> str:
    state = " current" if v.latest else ""
    if v.delete_marker:
        return f"{v.version_id} {stamp(v.last_modified_ns)} - -{state} deleted\n"
    return f"{v.version_id} {stamp(v.last_modified_ns)} {v.size} {v.etag}{state}\n"


def parse(text: str) -> list[Version]:
    """The lines of user.s3.versions back into Versions (for the CLI and tests)."""
    out = []
    for row in text.splitlines():
        vid, when, size, etag, *flags = row.split()
        ns = calendar.timegm(time.strptime(when, "%Y-%m-%dT%H:%M:%SZ")) * 1_000_000_000
        out.append(Version(vid, ns, int(size) if size != "-" else 0, etag if etag != "-" else "",
                           "current" in flags, "deleted" in flags))  # fmt: skip
    return out


def restored_name(name: str, v: Version) -> str:
    short = re.sub(r"[^A-Za-z0-9._-]", "_", v.version_id)[:8]
    return f"{name}.v{stamp(v.last_modified_ns, '%Y%m%dT%H%M%SZ')}-{short}"


class Versions:
    def __init__(self, fs: S3Fs) -> None:
        self.fs = fs

    async def of(self, node: Node) -> list[Version]:
        """node's versions; none when the bucket keeps no versions of it."""
        if node.is_dir or not node.stored:
            return []
        found = await self.fs.store.list_versions(self.fs.keys.file_key(node.path))
        if all(v.version_id == UNVERSIONED for v in found):
            return []
        return found

    async def listing(self, node: Node) -> bytes:
        found = await self.of(node)
        if not found:
            raise refuse(ENOATTR)  # versioning is off: there is nothing but this version
        return "".join(line(v) for v in found).encode()

    async def restore(self, node: Node, value: bytes) -> str:
        """Copy the version whose id is value to a new file beside node; its path."""
        wanted = value.decode("utf-8", "replace").strip()
        found = await self.of(node)
        if not found:
            raise FsError(errno.EOPNOTSUPP, f"{node.path!r}: the bucket keeps no versions of it "
                          "(versioning is off)")  # fmt: skip
        v = next((v for v in found if v.version_id == wanted), None)
        if v is None:
            raise FsError(errno.EINVAL, f"{node.path!r} has no version {wanted!r} (getfattr -n "
                          "user.s3.versions lists them)")  # fmt: skip
        if v.delete_marker:
            raise FsError(errno.EINVAL, f"version {wanted!r} of {node.path!r} is a deletion")
        name = restored_name(basename(node.path), v)
        decode_name(name.encode())  # ENAMETOOLONG for a long name
        parent = parent_of(node.path)
        path = join(parent, name)
        try:
            await self.fs.names.resolve(path)
        except FsError as e:
            if e.errno != errno.ENOENT:
                raise
        else:
            raise FsError(errno.EEXIST, f"{path!r} exists already (restored before?)")
        src = self.fs.keys.file_key(node.path)
        res = await self.fs.store.copy_version(src, v.version_id, self.fs.keys.file_key(path))
        self.fs.cache.added(parent, name, Child(False, v.size, res.etag, res.last_modified_ns))
        log.info("restored version %s of %r as %r", v.version_id, node.path, path)
        return path
