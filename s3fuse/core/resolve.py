"""Name resolution and the attribute policy: a path's node from the inode table, a cached
listing (one LIST answers every lookup in a directory), a HEAD, or the metadata cache;
attrs=auto's sample of each directory (foreign directories trust their listing), the bulk
HEAD of a listed directory's children, negative lookups."""

from __future__ import annotations

import contextlib
import errno
import logging
import stat
import time
from typing import TYPE_CHECKING

import trio

from s3fuse.core.cache import Child, DirListing
from s3fuse.core.scan import ScanAhead
from s3fuse.core.types import ROOT_INODE, refuse
from s3fuse.errors import FsError, StoreError
from s3fuse.model import meta
from s3fuse.model.keys import basename, join, listable_name, parent_of
from s3fuse.model.meta import Attrs
from s3fuse.s3.types import ObjectInfo

BULK_MAX = 20_000  # larger directories: metadata fetched per lookup only
BULK_CONCURRENCY = 16
BULK_AFTER = 3  # the third lookup of a listed directory's children starts the bulk fetch
SAMPLE = 5  # attrs=auto: children HEADed to tell a foreign directory from an s3fuse one

if TYPE_CHECKING:
    from s3fuse.core.fs import S3Fs
    from s3fuse.core.nodes import Node

log = logging.getLogger(__name__)


class Resolver:
    def __init__(self, fs: S3Fs) -> None:
        self.fs = fs
        self.inflight: dict[str, trio.Event] = {}  # path -> set when its HEAD is answered
        # (path, max_pages) -> (set when answered, [the listing]) of a LIST under way
        self.listing_loads: dict[tuple[str, int | None], tuple[trio.Event, list[DirListing]]] = {}
        self.scan_ahead = ScanAhead(self)

    async def refresh(self, node: Node) -> Node:
        """The node as S3 has it now (a HEAD); ENOENT when it is gone."""
        if node.is_dir:
            return await self.dir_node(node.path)
        found = await self.file_node(node.path)
        if found is None:
            raise refuse(errno.ENOENT)
        return found

    async def current(self, node: Node) -> bool:
        """Close-to-open: the stored file as S3 has it now (one HEAD). True when it is
        another version than the node held (it is updated); ENOENT when it is gone."""
        if node.is_dir or not node.stored or node.ino == ROOT_INODE:
            return False
        info = await self.fs.store.head(self.fs.keys.file_key(node.path))
        if info is None:
            self.fs.cache.removed(parent_of(node.path), basename(node.path))
            raise refuse(errno.ENOENT)
        now = Child(False, info.size, info.etag, info.last_modified_ns)
        if self.fs.table.same_version(node, now):  # the rule a listing is judged by
            self.fs.table.confirm(node, now)
            return False
        await self.file_node(node.path, info)
        return True

    async def revalidate(self, node: Node) -> Node:
        """A node whose attributes are older than cache_ttl, checked as cheaply as S3
        allows: its directory's listing (one LIST per directory and cache_ttl answers every
        name in it) when that shows the same version, else a HEAD. ENOENT when the name
        is gone or means another object now."""
        if node.ino == ROOT_INODE:
            return node
        found = await self.resolve(node.path)
        if found is not node:
            raise refuse(errno.ENOENT)
        return node

    async def exact(self, node: Node) -> Node:
        """The node with its stored metadata and headers (a HEAD if its attributes came
        from a listing): before anything re-sends them (upload, copy, xattrs)."""
        if node.full or node.entry is not None or node.ino == ROOT_INODE:
            return node
        return await self.refresh(node)

    def attrs_from_info(self, info: ObjectInfo, is_dir: bool) -> Attrs:
        return meta.decode(
            info.metadata,
            is_dir=is_dir,
            size=0 if is_dir else info.size,
            last_modified_ns=info.last_modified_ns,
            defaults=self.fs.cfg.defaults,
        )

    def default_dir_attrs(self, path: str) -> Attrs:
        """A directory without a marker: the mount's defaults, and the times this mount
        first saw it (not a new mtime at each refresh)."""
        d = self.fs.cfg.defaults
        known = self.fs.table.known(path)
        mtime = known.attrs.mtime_ns if known is not None and known.is_dir else meta.now_ns()
        return Attrs(stat.S_IFDIR | d.dir_mode, d.uid, d.gid, mtime)

    async def load_listing(self, path: str, max_pages: int | None = None) -> DirListing:
        """The directory listed now. Lookups (the first page) that arrive while the same
        LIST is under way (8 writers creating files when the trust window ran out) wait
        for its answer instead of each sending one: a lookup's own recent changes are in
        the node table, which it asks first. A readdir lists for itself: a LIST that
        began before a file here was closed may not show it."""
        if max_pages is None:
            return await self._list(path, max_pages)
        key = (path, max_pages)
        while (load := self.listing_loads.get(key)) is not None:
            await load[0].wait()
            if load[1]:
                return load[1][0]
        done, result = self.listing_loads[key] = (trio.Event(), [])
        try:
            result.append(await self._list(path, max_pages))
            return result[0]
        finally:
            del self.listing_loads[key]
            done.set()  # a failed LIST: each waiter asks for itself

    async def _list(self, path: str, max_pages: int | None) -> DirListing:
        prefix = self.fs.keys.dir_prefix(path)
        asked = time.monotonic()
        lst = await self.fs.store.list_dir(prefix, max_pages=max_pages)
        listing = DirListing(complete=not lst.truncated, asked=asked)
        for o in lst.objects:
            name = o.key[len(prefix) :]
            if listable_name(name):
                listing.children[name] = Child(False, o.size, o.etag, o.last_modified_ns)
        for p in lst.prefixes:
            name = p[len(prefix) :].rstrip("/")
            if listable_name(name) and p[len(prefix) :].count("/") == 1:
                listing.children[name] = Child(True)  # a directory hides a same-named file
        self.fs.cache.put_listing(path, listing)
        known = self.fs.table.known(path)
        if known is not None and listing.complete:
            known.subdirs = sum(c.is_dir for c in listing.children.values())
        if self.fs.meta_cache is not None:
            await self.from_meta_cache(path, prefix, listing)
        return listing

    async def from_meta_cache(self, path: str, prefix: str, listing: DirListing) -> None:
        """Full nodes, without a HEAD, for the listed files whose listed ETag and
        LastModified match a HEAD answer kept from an earlier mount (metacache.py)."""
        assert self.fs.meta_cache is not None

        def wanted(child_path: str) -> bool:  # not known in full, not being written here
            known = self.fs.table.known(child_path)
            return known is None or not (known.full or known.entry or known.opens)

        files = {
            prefix + name: name
            for name, listed in listing.children.items()
            if not listed.is_dir and wanted(join(path, name))
        }
        for key, (etag, listed_ns, info) in (await self.fs.meta_cache.lookup(list(files))).items():
            child = listing.children.get(files[key])
            if child is None or child.etag != etag or child.last_modified_ns != listed_ns:
                continue  # another version now: HEAD it when asked
            child_path = join(path, files[key])
            if wanted(child_path):  # asked again: the lookup let other requests run
                await self.file_node(child_path, info)

    def remember(self, path: str, info: ObjectInfo, child: Child | None = None) -> None:
        """Keep a HEAD answer for later mounts, with the ETag and LastModified its
        directory's listing shows (the pair a later listing is compared with): the listed
        child the HEAD was asked for, or the cached listing's (which may have expired
        while a long ls -l HEADed its way through the directory)."""
        if child is None:
            listing = self.fs.cache.listing(parent_of(path))
            child = listing.children.get(basename(path)) if listing is not None else None
        if child is None or child.is_dir or child.etag != info.etag:
            return
        assert self.fs.meta_cache is not None
        if (
            self.fs.meta_cache.add(child.etag, child.last_modified_ns, info)
            and self.fs.tasks.running
        ):
            self.fs.tasks.start_soon(self.fs.meta_cache.flush_later)

    async def dir_node(self, path: str) -> Node:
        """Directory node; its attributes come from the marker object if there is one."""
        info = await self.fs.store.head(self.fs.keys.marker_key(path))
        if info is not None:
            return self.fs.table.install(
                path,
                self.attrs_from_info(info, True),
                stored=True,
                etag=info.etag,
                full=True,
                info=info,
            )
        return self.fs.table.install(
            path, self.default_dir_attrs(path), stored=False, etag="", full=True
        )

    async def file_node(
        self, path: str, info: ObjectInfo | None = None, *, listed: Child | None = None
    ) -> Node | None:
        """The file node for path from a HEAD (or the answer given); listed: the listing
        entry the HEAD is asked for."""
        if info is None:
            info = await self.fs.store.head(self.fs.keys.file_key(path))
            if info is not None and self.fs.meta_cache is not None:
                self.remember(path, info, listed)
        if info is None:
            return None
        return self.fs.table.install(
            path,
            self.attrs_from_info(info, False),
            stored=True,
            etag=info.etag,
            full=True,
            info=info,
        )

    async def resolve(self, path: str) -> Node:
        """The node for an existing path, or FUSEError(ENOENT)."""
        parent = parent_of(path)
        name = basename(path)
        self.scan_ahead.seen(parent, name)
        node = self.fs.table.known(path)
        if node is not None and self.fs.table.fresh(node):
            return node
        if self.fs.cache.is_negative(path):
            raise refuse(errno.ENOENT)
        listing = self.fs.cache.listing(parent)
        if listing is None and self.fs.cfg.cache_ttl > 0:
            # One LIST page answers this and every later lookup in the directory.
            listing = await self.load_listing(parent, max_pages=1)
        if listing is not None:
            child = listing.children.get(name)
            if child is None and listing.complete and not listing.older_than(node):
                self.fs.cache.negative[path] = True
                raise refuse(errno.ENOENT)
            if child is not None:
                if node is not None and self.fs.table.same_version(node, child):
                    self.fs.table.confirm(node, child, listing.fetched)
                    return node
                listing_will_do = await self.listing_will_do(parent, listing, name)
                node = self.fs.table.known(path)
                if node is not None and node.full and self.fs.table.fresh(node):
                    return node  # HEADed by the sample (attrs=auto) just now
                if listing_will_do:
                    return self.listed_node(path, child, at=listing.fetched)
                self.start_bulk(parent, listing)
                found = await self.child_attrs(path, child)
                if found is not None:
                    return found
        found = await self.file_node(path)
        if found is not None:
            return found
        keys = await self.fs.store.has_children(self.fs.keys.dir_prefix(path))
        if keys:
            return await self.dir_node(path)
        if self.fs.cfg.cache_ttl > 0:
            self.fs.cache.negative[path] = True
        raise refuse(errno.ENOENT)

    def listed_node(
        self, path: str, child: Child, *, trusted: bool = True, at: float | None = None
    ) -> Node:
        """A node from what a listing (fetched at `at`) says alone (no s3fuse metadata);
        trusted: its attributes stand in for a HEAD (else the kernel is told to ask
        again)."""
        if child.is_dir:
            return self.fs.table.install(path, self.default_dir_attrs(path), stored=False, etag="",
                                 full=False, listed=trusted, at=at)  # fmt: skip
        attrs = meta.decode(
            {}, is_dir=False, size=child.size, last_modified_ns=child.last_modified_ns,
            defaults=self.fs.cfg.defaults,
        )  # fmt: skip
        return self.fs.table.install(path, attrs, stored=True, etag=child.etag, full=False,
                             listed=trusted, at=at)  # fmt: skip

    async def listing_will_do(self, parent: str, listing: DirListing, name: str | None) -> bool:
        """Whether the listing's attributes stand in for a HEAD of parent's children.
        attrs=auto decides once per listing: a few children, spread over the directory
        and including the one asked for, are HEADed in parallel; if none carries
        mode/uid/gid/mtime metadata the directory was written by other tools and its
        listing shows all there is. A HEAD that later finds metadata there flips it."""
        if self.fs.cfg.attrs != "auto":
            return self.fs.cfg.attrs == "listing"
        while listing.verdict is None:
            if listing.sampling is not None:
                await listing.sampling.wait()
                continue
            listing.sampling = trio.Event()
            try:
                listing.verdict = await self.sample(parent, listing, name)
            finally:
                listing.sampling.set()
                listing.sampling = None
        return listing.verdict == "plain"

    async def sample(self, parent: str, listing: DirListing, name: str | None) -> str:
        names = list(listing.children)
        if not names:
            return "plain"
        step = max(1, len(names) // SAMPLE)
        picks = list(dict.fromkeys(([name] if name else []) + names[::step]))[:SAMPLE]
        found: list[Node] = []

        async def one(n: str) -> None:
            child = listing.children.get(n)
            known = self.fs.table.known(join(parent, n))
            if known is not None and child is not None and self.fs.table.same_version(known, child):
                self.fs.table.confirm(known, child, listing.fetched)
                found.append(known)  # HEADed already (the listing shows the same version)
                return
            if known is not None and known.full and self.fs.table.fresh(known):
                known.fetched = time.monotonic()
                found.append(known)
                return
            with contextlib.suppress(StoreError, FsError):  # judged by the rest
                node = None if child is None else await self.child_attrs(join(parent, n), child)
                if node is not None:
                    found.append(node)

        async with trio.open_nursery() as nursery:
            for n in picks:
                nursery.start_soon(one, n)
        if not found or any(n.own_meta for n in found):
            return "rich"
        return "plain"

    async def child_attrs(self, path: str, child: Child) -> Node | None:
        """HEAD of a listed child (its marker, for a directory): the s3fuse metadata that a
        listing lacks. One request per path at a time, shared by a lookup that waits and
        the bulk fetch."""
        while (ev := self.inflight.get(path)) is not None:
            await ev.wait()
            node = self.fs.table.known(path)
            if node is not None and self.fs.table.fresh(node):
                return node
        ev = self.inflight[path] = trio.Event()
        try:
            if child.is_dir:
                return await self.dir_node(path)
            return await self.file_node(path, listed=child)
        finally:
            del self.inflight[path]
            ev.set()

    def start_bulk(self, parent: str, listing: DirListing) -> None:
        """After a readdir, the third lookup of a child whose metadata is unknown (ls -l,
        find -ls, rsync from the mount) fetches all its siblings' metadata in parallel in
        the background: plain ls costs nothing, ls -l one round of parallel HEADs."""
        listing.lookups += 1
        if listing.lookups < BULK_AFTER:
            return  # `ls` then one `cat`: no reason to fetch every sibling
        if not listing.browsed or parent in self.fs.cache.bulk or not self.fs.tasks.running:
            return
        if len(listing.children) > BULK_MAX:
            return
        self.fs.cache.bulk[parent] = True
        todo = []
        for name, child in listing.children.items():
            path = join(parent, name)
            node = self.fs.table.known(path)
            if node is None or not self.fs.table.fresh(node):
                todo.append((path, child))
        self.fs.tasks.start_soon(self.bulk_attrs, todo)

    async def bulk_attrs(self, todo: list[tuple[str, Child]]) -> None:
        limit = trio.Semaphore(BULK_CONCURRENCY)

        async def one(path: str, child: Child) -> None:
            async with limit:
                node = self.fs.table.known(path)
                if node is not None and self.fs.table.fresh(node):
                    return  # a lookup got there first
                with contextlib.suppress(Exception):  # a lookup that needs it asks again
                    await self.child_attrs(path, child)

        async with trio.open_nursery() as nursery:
            for path, child in todo:
                nursery.start_soon(one, path, child)
