"""``s3fuse versions FILE [--restore ID]``: a versioned bucket's older versions of a file on
a mount, through the mount itself (the user.s3.versions and user.s3.restore xattrs of
core/versions.py), so it needs no credentials and works for any user who can read the
file."""

from __future__ import annotations

import errno
import os

from s3fuse.cli import _envelope as envelope
from s3fuse.cli import _fail as fail
from s3fuse.core.versions import parse, restored_name, stamp

LIST = "user.s3.versions"
RESTORE = "user.s3.restore"


def _fail(code: str, message: str, as_json: bool) -> int:
    """The CLI's error: its JSON envelope, or its message on stderr."""
    if as_json:
        print(envelope(False, code=code, message=message))
        return 1
    return fail(code, message)


def _why(path: str, e: OSError) -> tuple[str, str]:
    if e.errno == errno.ENODATA:
        return "NOT_VERSIONED", (
            f"{path}: the bucket keeps no older versions of it (versioning is off; "
            "`aws s3api put-bucket-versioning --versioning-configuration Status=Enabled` "
            "turns it on for what is written from then on)"
        )
    if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
        return "NOT_SUPPORTED", f"{path}: not a file on an s3fuse mount, or versioning is off"
    if e.errno == errno.ENOENT:
        return "NOT_FOUND", f"{path}: no such file"
    return "FAILED", f"{path}: {os.strerror(e.errno or errno.EIO)} (see the mount's log)"


def cmd_versions(path: str, restore: str | None, as_json: bool) -> int:
    try:
        versions = parse(os.getxattr(path, LIST).decode())
    except OSError as e:
        return _fail(*_why(path, e), as_json)
    if restore is None:
        if as_json:
            rows = [{"version_id": v.version_id, "last_modified": stamp(v.last_modified_ns),
                     "size": v.size, "etag": v.etag, "current": v.latest,
                     "deleted": v.delete_marker} for v in versions]  # fmt: skip
            print(envelope(True, {"path": path, "versions": rows}))
            return 0
        print(f"{'VERSION ID':34} {'LAST MODIFIED (UTC)':20} {'SIZE':>12}  ETAG")
        for v in versions:
            size = "-" if v.delete_marker else str(v.size)
            what = " (current)" if v.latest else ""
            what += " (deleted)" if v.delete_marker else ""
            print(f"{v.version_id:34} {stamp(v.last_modified_ns):20} {size:>12}  "
                  f"{v.etag or '-'}{what}")  # fmt: skip
        return 0
    chosen = next((v for v in versions if v.version_id == restore), None)
    if chosen is None:
        return _fail("NO_SUCH_VERSION", f"{path} has no version {restore!r} "
                     "(`s3fuse versions FILE` lists them)", as_json)  # fmt: skip
    try:
        os.setxattr(path, RESTORE, restore.encode())
    except OSError as e:
        if e.errno == errno.EEXIST:
            return _fail("EXISTS", f"{path}: that version was restored before", as_json)
        return _fail(*_why(path, e), as_json)
    new = os.path.join(os.path.dirname(path), restored_name(os.path.basename(path), chosen))
    if as_json:
        print(envelope(True, {"path": path, "restored": new}))
    else:
        print(new)
    return 0
