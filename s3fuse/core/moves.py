"""Renames: S3 has none, so a file is copied (every header re-sent) and its old key deleted, a
directory's keys are moved one by one (bulk.py); a file whose upload is pending only gets
its new key. RENAME_NOREPLACE is honoured, RENAME_EXCHANGE refused."""

from __future__ import annotations

import errno
import logging
import time
from typing import TYPE_CHECKING

from s3fuse.core import bulk
from s3fuse.core.cache import Child
from s3fuse.core.types import RENAME_EXCHANGE, RENAME_NOREPLACE, Caller, refuse
from s3fuse.errors import FsError, StoreError
from s3fuse.model.keys import basename, parent_of
from s3fuse.spool.entry import CLEAN

if TYPE_CHECKING:
    from s3fuse.core.fs import S3Fs
    from s3fuse.core.nodes import Node

log = logging.getLogger(__name__)


class Moves:
    def __init__(self, fs: S3Fs) -> None:
        self.fs = fs

    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: Caller,
    ) -> None:
        self.fs.cfg.check_writable()
        if flags & RENAME_EXCHANGE:
            raise refuse(errno.EINVAL)  # S3 cannot swap two keys atomically
        old_parent = self.fs.table.node(parent_inode_old)
        new_parent = self.fs.table.node(parent_inode_new)
        old_path = self.fs.table.child_path(old_parent, name_old)
        new_path = self.fs.table.child_path(new_parent, name_new)
        node = await self.fs.names.resolve(old_path)
        if old_path == new_path:
            return
        if node.is_dir and (new_path + "/").startswith(old_path + "/"):
            raise refuse(errno.EINVAL)  # into itself
        self.fs.keys.check_len(
            self.fs.keys.marker_key(new_path) if node.is_dir else self.fs.keys.file_key(new_path)
        )
        try:
            target: Node | None = await self.fs.names.resolve(new_path)
        except FsError as e:
            if e.errno != errno.ENOENT:
                raise
            target = None
        if target is not None:
            if flags & RENAME_NOREPLACE:
                raise refuse(errno.EEXIST)
            if node.is_dir and not target.is_dir:
                raise refuse(errno.ENOTDIR)
            if target.is_dir and not node.is_dir:
                raise refuse(errno.EISDIR)
            if target.is_dir:
                await self.check_empty(target.path)
            else:
                await self.fs.files.keep_for_descriptors(target)
        node.attrs.changed()  # POSIX lets rename set the ctime; Linux does (so does the copy)
        if node.is_dir:
            await bulk.move_prefix(
                self.fs.store, self.fs.keys.dir_prefix(old_path), self.fs.keys.dir_prefix(new_path)
            )
            replaced_meanwhile = False
        else:
            replaced_meanwhile = await self.move_file(node, new_path, target)
        if target is not None:
            if target.is_dir and target.stored:
                await self.fs.store.delete(self.fs.keys.marker_key(target.path))
            elif not target.is_dir and target.stored and not node.stored:
                # nothing was copied over the target's object (the renamed file's upload
                # is still pending): the object goes, as the rename says; the pending
                # upload stores the new content under that key later
                await self.delete_target(target)
            self.fs.files.supersede(target)  # its key now holds the renamed file
        self.repath(node, old_path, new_path)
        self.fs.table.names_changed(old_parent, new_parent)
        if node.is_dir:  # its ".." moves (over a directory: that one's goes)
            old_parent.subdirs = max(0, old_parent.subdirs - 1)
            if target is None:
                new_parent.subdirs += 1
        self.fs.cache.removed(old_parent.path, basename(old_path))
        self.fs.cache.negative.pop(new_path, None)
        self.fs.cache.added(
            new_parent.path, basename(new_path), Child(node.is_dir, node.size, node.etag)
        )
        if replaced_meanwhile:
            await self.fs.guard.relearn(old_path)  # the other writer's file, not ours

    async def move_file(self, node: Node, new_path: str, target: Node | None) -> bool:
        """Copy (every header re-sent) then delete. A file whose upload is pending and
        that S3 does not hold yet only gets a new key (in _repath): nothing to copy.
        With conflict=detect the copy goes only while the source is the version this
        mount saw and the destination what it saw (absent, or target's version); the
        delete only while the source still is that version. True when another writer
        replaced the source between the two: it stays (the copy holds ours)."""
        old_key = self.fs.keys.file_key(node.path)
        new_key = self.fs.keys.file_key(new_path)
        replaced_meanwhile = False
        if node.stored:
            await self.fs.names.exact(node)
            dest = target if target is not None and target.stored else None
            doing = f"rename of {node.path!r} to {new_path!r}"
            async with self.fs.guard.lost_race(doing, node.path, new_path):
                res = await self.fs.guard.copy(
                    old_key, new_key, await self.fs.headers.copy_params(node),
                    src_etag=node.etag, dest_absent=dest is None,
                    dest_etag=dest.etag if dest is not None else None,
                )  # fmt: skip
            try:
                replaced_meanwhile = not await self.fs.guard.delete(old_key, node.etag)
                if replaced_meanwhile:
                    log.warning("rename of %r to %r: another writer replaced the first after "
                                "the copy; their version stays", node.path, new_path)  # fmt: skip
            except StoreError as e:
                # the rename fails, both names hold the bytes: show the copy too
                copied = Child(False, node.attrs.size, res.etag)
                self.fs.cache.added(parent_of(new_path), basename(new_path), copied)
                log.error("rename of %r to %r: copied, but the original could not be deleted "
                          "(%s); both names now hold the file", node.path, new_path, e)  # fmt: skip
                raise
            node.etag = res.etag or node.etag
            node.version_id = res.version_id  # the new key's (the old key's is no use)
            node.written(res.last_modified_ns, otherwise=node.last_modified_ns)
        # the spool entry's key (and journal) follow in _repath
        return replaced_meanwhile

    async def delete_target(self, target: Node) -> None:
        """The object a rename replaces, when nothing was copied over it."""
        key = self.fs.keys.file_key(target.path)
        await self.fs.guard.delete_seen(target.path, key, target.etag, "rename over")

    def repath(self, node: Node, old_path: str, new_path: str) -> None:
        """Move node (and, for a directory, everything known below it) to new_path."""
        below = old_path + "/"
        moved = [
            (p, i) for p, i in self.fs.table.by_path.items() if p == old_path or p.startswith(below)
        ]
        for p, _ in moved:
            del self.fs.table.by_path[p]
        for p, i in moved:
            n = self.fs.table.nodes[i]
            n.path = new_path + p[len(old_path) :]
            self.fs.table.by_path[n.path] = i
            if n.entry is not None:
                n.entry.drop_stream("renamed while it was written")  # its upload has the old key
                n.entry.key = self.fs.keys.file_key(n.path)
                if n.entry.state != CLEAN:
                    n.entry.set_state(n.entry.state)
            self.fs.cache.forget_dir(p)
        node.fetched = time.monotonic()

    async def check_empty(self, path: str) -> None:
        marker = self.fs.keys.marker_key(path)
        prefix = path + "/"
        nodes = self.fs.table.nodes
        if any(
            p.startswith(prefix) and nodes[i].entry is not None and not nodes[i].unlinked
            for p, i in self.fs.table.by_path.items()
        ):
            raise refuse(errno.ENOTEMPTY)
        keys = await self.fs.store.has_children(marker)
        if any(k != marker for k in keys):
            raise refuse(errno.ENOTEMPTY)
