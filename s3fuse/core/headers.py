"""Attribute changes (chmod, chown, utime, truncate), and what a stored object's headers
are and how a change reaches them: the metadata of an upload or copy (user metadata,
mode/uid/gid/mtime, the integrity metadata a copy keeps), ACL grants and tags loaded when
asked for, and the one CopyObject that applies a change in place re-sending every header
(S3 copies neither ACLs nor, with REPLACE, metadata)."""

from __future__ import annotations

import errno
import logging
import stat
from typing import TYPE_CHECKING, Any

from s3fuse.core.types import AttrChanges, Caller, Entry, NewAttrs, refuse
from s3fuse.model import meta, requests, xattrs
from s3fuse.model.keys import basename
from s3fuse.s3.parallel import each

if TYPE_CHECKING:
    from s3fuse.core.fs import S3Fs
    from s3fuse.core.nodes import Node

log = logging.getLogger(__name__)


class Headers:
    def __init__(self, fs: S3Fs) -> None:
        self.fs = fs

    async def store_meta(self, node: Node, *, tagging_changed: bool = False) -> None:
        """Persist changed attributes or xattrs: with the pending upload if there is one,
        else in place on the stored object (or directory marker)."""
        if node.unlinked:
            return
        if node.entry is not None and (node.entry.dirty or not node.stored):
            node.entry.touch()
            if node.opens == 0:
                await self.fs.writes.upload(node)
            return
        if node.is_dir:
            node.etag = await self.fs.dirs.put_marker(node.path, node)
            node.stored = True
            return
        if node.stored:
            await self.copy_in_place(node, tagging_changed=tagging_changed)

    async def load_acl_tags(self, node: Node, *, acl: bool = True, tags: bool = True) -> None:
        """ACL and tags are not in a HEAD answer: fetch them when they must be re-sent or
        shown. Values set here and not stored yet win over what S3 holds."""
        if node.is_dir or not node.stored:
            return
        key = self.fs.keys.file_key(node.path)

        async def load_acl() -> None:
            grants = xattrs.grants_from_acl(await self.fs.store.get_acl(key))
            if not requests.chooses_access(node.hdrs):
                node.hdrs.update(grants)
            node.acl_loaded = True

        async def load_tags() -> None:
            tagging = xattrs.tagging_from_tags(await self.fs.store.get_tags(key))
            if tagging and "tagging" not in node.hdrs:
                node.hdrs["tagging"] = tagging
            node.tags_loaded = True

        jobs = [j for j, want in ((load_acl, acl and not node.acl_loaded),
                                  (load_tags, tags and not node.tags_loaded)) if want]  # fmt: skip
        # both at once: one round trip
        errors = await each(jobs, lambda job: job(), at_once=len(jobs))
        if errors:
            raise errors[0]

    def metadata(self, node: Node) -> dict[str, str]:
        md = dict(node.umeta)
        if node.is_dir:
            md.update(xattrs.dir_defaults_to_meta(node.hdrs))
        md.update(self.attr_meta(node))
        return md

    def attr_meta(self, node: Node) -> dict[str, str]:
        """mode/uid/gid/mtime in the keys the mount writes; an object that carried AWS's
        file-* keys keeps them, updated (its other readers would see stale ones)."""
        style = self.fs.cfg.meta_style
        if node.aws_meta and style == "s3fs":
            style = "both"
        return meta.encode(node.attrs, style)

    async def copy_in_place(self, node: Node, *, tagging_changed: bool = False) -> None:
        """One CopyObject that re-sends every header the object has: storage class, SSE,
        ACL grants (S3 does not copy ACLs), content headers, metadata, lock settings.
        Tags are copied by S3 unless they are what changed."""
        tagging = node.hdrs.get("tagging", "") if tagging_changed else None
        key = self.fs.keys.file_key(node.path)
        async with self.fs.guard.lost_race(f"change of {node.path!r}'s attributes", node.path):
            params = await self.copy_params(node, tagging=tagging)
            res = await self.fs.guard.copy(key, key, params, src_etag=node.etag)
        node.etag = res.etag or node.etag
        node.written(res.last_modified_ns, otherwise=node.last_modified_ns)
        node.version_id = res.version_id or node.version_id

    async def copy_params(self, node: Node, *, tagging: str | None = None) -> dict[str, Any]:
        """The headers a CopyObject of node's object must re-send (S3 copies tags only)."""
        await self.load_acl_tags(node, tags=False)
        # the same bytes: their block checksums and part size stay true
        md = {**self.metadata(node), **node.integrity}
        return requests.copy(node.hdrs, md, meta.content_type_for(basename(node.path)),
                             sse_c=self.fs.cfg.sse_c, tagging=tagging)  # fmt: skip

    async def setattr(
        self,
        inode: int,
        attr: NewAttrs,
        fields: AttrChanges,
        fh: int | None,
        ctx: Caller,
    ) -> Entry:
        self.fs.cfg.check_writable()
        node = await self.fs.names.exact(self.fs.table.node(inode))
        a = node.attrs
        changed_meta = False
        if fields.update_mode:
            a.mode = stat.S_IFMT(a.mode) | stat.S_IMODE(attr.st_mode)
            changed_meta = True
        if fields.update_uid:
            a.uid = attr.st_uid
            changed_meta = True
        if fields.update_gid:
            a.gid = attr.st_gid
            changed_meta = True
        if fields.update_mtime:
            a.mtime_ns = attr.st_mtime_ns
            changed_meta = True
        if fields.update_atime:
            a.atime_ns = attr.st_atime_ns
            changed_meta = True
        now = meta.now_ns()
        a.changed(now)  # POSIX: any change of attributes sets the ctime
        if fields.update_size:
            if node.is_dir:
                raise refuse(errno.EISDIR)
            if not node.attrs.is_special:
                entry = await self.fs.writes.spool_entry(node, keep_content=attr.st_size > 0)
                async with entry.lock:
                    entry.truncate(attr.st_size)
                a.size = attr.st_size
            if not fields.update_mtime:
                a.mtime_ns = now
            if node.opens == 0:
                await self.fs.writes.upload(node)  # truncate(2) on a path: no close() will follow
        elif changed_meta:
            await self.fs.headers.store_meta(node)
        return self.fs.table.entry_attrs(node)
