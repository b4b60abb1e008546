"""Extended attributes: user.s3.* header values (validated when set, applied to a pending
upload or, on a stored object, in place with one CopyObject that re-sends every header),
other user.* names as x-amz-meta-* metadata (any bytes: encoded where they are not
plain header text, xattrs.encode_meta_value), the read-only facts (etag, version_id,
last_modified, md5), and a versioned bucket's older versions (versions, restore:
versions.py)."""

from __future__ import annotations

import errno
import logging
import time
from typing import TYPE_CHECKING

from s3fuse.core.types import ENOATTR, ROOT_INODE, Caller, refuse
from s3fuse.model import requests, xattrs

if TYPE_CHECKING:
    from s3fuse.core.fs import S3Fs
    from s3fuse.core.nodes import Node

log = logging.getLogger(__name__)


class XattrOps:
    def __init__(self, fs: S3Fs) -> None:
        self.fs = fs

    async def node(self, inode: int) -> Node:
        node = self.fs.table.node(inode)
        if not self.fs.table.fresh(node):
            node = await self.fs.names.refresh(node)
        return await self.fs.names.exact(node)

    async def set(self, inode: int, name: bytes, value: bytes, ctx: Caller) -> None:
        n = xattrs.parse_name(name)
        self.fs.cfg.check_writable()
        if n.kind in ("readonly", "asked"):
            raise xattrs.XattrError(errno.EPERM, f"user.s3.{n.short} is read-only")
        if inode == ROOT_INODE:
            raise xattrs.XattrError(
                errno.EOPNOTSUPP,
                "the mount root has no object to hold attributes; use mount options "
                "(-o storage_class=...,sse=...,acl=...) for defaults of the whole mount",
            )
        node = await self.node(inode)
        if n.kind == "action":  # user.s3.restore
            await self.fs.versions.restore(node, value)
            return
        tagging_changed = False
        if n.kind == "header":
            v = xattrs.validate(n.short, value)
            if self.fs.cfg.sse_c and n.short.startswith("sse"):
                raise xattrs.XattrError(
                    errno.EINVAL,
                    "this mount encrypts with SSE-C (sse_c_key_file); "
                    f"user.s3.{n.short} cannot be combined with it",
                )
            await self.fs.headers.load_acl_tags(node)
            node.hdrs = requests.with_value(node.hdrs, n.short, v)
            tagging_changed = n.short == "tagging"
        else:
            umeta = {**node.umeta, n.short: xattrs.encode_meta_value(value)}
            xattrs.check_meta_size({**umeta, **self.fs.headers.attr_meta(node)})
            node.umeta = umeta
        log.info("%s: set %s", node.path, name.decode(errors="replace"))
        await self.fs.headers.store_meta(node, tagging_changed=tagging_changed)

    async def get(self, inode: int, name: bytes, ctx: Caller) -> bytes:
        try:
            n = xattrs.parse_name(name)
        except xattrs.XattrError as e:
            # security.*, system.posix_acl_*: "not supported" (not "no such attribute"):
            # ls -l, cp -a and friends then stop asking for every file of the mount
            unsupported = e.errno == errno.EOPNOTSUPP
            raise refuse(errno.EOPNOTSUPP if unsupported else ENOATTR) from None
        node = await self.node(inode)
        if n.kind == "asked":  # user.s3.versions
            return await self.fs.versions.listing(node)
        value: str | None
        if n.kind == "header":
            if n.short in ("acl", "tagging", *xattrs.GRANTS):
                tagging = n.short == "tagging"
                await self.fs.headers.load_acl_tags(node, acl=not tagging, tags=tagging)
            value = node.hdrs.get(n.short)
            if value is None and n.short == "storage_class" and node.stored and not node.is_dir:
                value = "STANDARD"  # S3 omits the header for STANDARD
        elif n.kind == "readonly":
            value = self.readonly(node, n.short)
        elif n.kind == "action":
            value = None  # write-only
        else:
            stored = node.umeta.get(n.short)
            if stored is None:
                raise refuse(ENOATTR)
            return xattrs.decode_meta_value(stored)
        if value is None:
            raise refuse(ENOATTR)
        return value.encode()

    def readonly(self, node: Node, short: str) -> str | None:
        if not node.stored or (node.entry is not None and node.entry.dirty):
            return None  # nothing stored yet (or the stored object is about to change)
        if short == "etag":
            return node.etag or None
        if short == "version_id":
            return node.version_id
        if short == "md5":
            return node.md5
        if short == "last_modified" and node.last_modified_ns:
            return time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(node.last_modified_ns // 1_000_000_000)
            )
        return None

    async def list(self, inode: int, ctx: Caller) -> list[bytes]:
        node = await self.node(inode)
        if inode == ROOT_INODE:
            return []
        await self.fs.headers.load_acl_tags(node)
        names = [xattrs.PREFIX + k for k in node.hdrs]
        names += [xattrs.PREFIX + k for k in xattrs.READ_ONLY if self.readonly(node, k) is not None]
        names += [xattrs.USER + k for k in node.umeta]
        return [n.encode() for n in names]

    async def remove(self, inode: int, name: bytes, ctx: Caller) -> None:
        n = xattrs.parse_name(name)
        self.fs.cfg.check_writable()
        if n.kind in ("readonly", "asked"):
            raise xattrs.XattrError(errno.EPERM, f"user.s3.{n.short} is read-only")
        if n.kind == "action":
            raise refuse(ENOATTR)
        node = await self.node(inode)
        await self.fs.headers.load_acl_tags(node)
        store = node.hdrs if n.kind == "header" else node.umeta
        if n.short not in store:
            raise refuse(ENOATTR)
        del store[n.short]
        await self.fs.headers.store_meta(node, tagging_changed=n.short == "tagging")
