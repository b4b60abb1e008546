"""conflict=detect for the requests that are not uploads: rename's copy and delete,
unlink's delete, the metadata self-copies. Each goes through only while the objects are
the versions this mount saw, so another client's newer object is never overwritten or
deleted: by the server when it honours the condition headers (found once per mount,
s3/conditions.py), else by a HEAD just before an unconditional request, which leaves a
window of one round trip (the one warning line per mount says so). With conflict=off
these are today's plain requests."""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import trio

from s3fuse.core.cache import Child
from s3fuse.errors import CONFLICT, NOT_FOUND, TRANSIENT, UNSUPPORTED, FsError, StoreError
from s3fuse.model import requests
from s3fuse.model.keys import basename, parent_of
from s3fuse.s3 import conditions
from s3fuse.s3.conditions import Support
from s3fuse.s3.types import ObjectInfo, PutResult

if TYPE_CHECKING:
    from s3fuse.core.fs import S3Fs

log = logging.getLogger(__name__)

KIND_OF = {
    "CopySourceIfMatch": conditions.COPY_SOURCE_IF_MATCH,
    "IfNoneMatch": conditions.COPY_IF_NONE_MATCH,
    "IfMatch": conditions.COPY_IF_MATCH,
}


class Guard:
    def __init__(self, fs: S3Fs) -> None:
        self.fs = fs
        self.known: Support | None = None
        self.probing = trio.Lock()
        self.warned = False

    @property
    def on(self) -> bool:
        return self.fs.cfg.conflict_detect

    async def support(self) -> Support:
        """What the server honours: probed at the first conditional copy or delete."""
        async with self.probing:
            if self.known is None:
                try:
                    self.known = await conditions.probe(self.fs.store, self.fs.keys.prefix)
                except StoreError as e:
                    log.warning("conflict=detect: could not find out which conditions the "
                                "server checks (%s); checking with a HEAD first", e)  # fmt: skip
                    if e.code in TRANSIENT:
                        return Support.none()  # asked again next time
                    self.known = Support.none()
                self.warn()
            return self.known

    def warn(self) -> None:
        assert self.known is not None
        lacking = [
            f"{kind} ({verdict})"
            for kind, verdict in self.known.verdicts.items()
            if verdict != conditions.HONOURED
        ]
        if lacking and not self.warned:
            self.warned = True
            log.warning(
                "conflict=detect: the server does not check %s; s3fuse checks those with a "
                "HEAD just before the request, which leaves another writer a window of one "
                "round trip (SEMANTICS.md, 'Sharing a bucket between hosts')",
                ", ".join(lacking),
            )

    def rejected(self, kinds: list[str], e: StoreError) -> None:
        assert self.known is not None
        for kind in kinds:
            self.known.reject(kind)
        log.warning("conflict=detect: the server refused %s (%s); sent without it from now on",
                    ", ".join(kinds), e.code)  # fmt: skip

    # ------------------------------------------------------------------ delete
    async def delete(self, key: str, etag: str) -> bool:
        """Delete key; with conflict=detect only while it is the version with etag (one
        this mount never learnt an ETag of goes unconditionally). False when S3 holds
        another version: it is left in place."""
        if not self.on or not etag:
            await self.fs.store.delete(key)
            return True
        support = await self.support()
        if support.honours(conditions.DELETE_IF_MATCH):
            try:
                await self.fs.store.delete(key, if_match=etag)
                return True
            except StoreError as e:
                if e.code in NOT_FOUND:
                    return True
                if e.code in CONFLICT:
                    return False
                if e.code not in UNSUPPORTED:
                    raise
                self.rejected([conditions.DELETE_IF_MATCH], e)
        info = await self.fs.store.head(key)
        if info is None:
            return True
        if info.etag != etag:
            return False
        await self.fs.store.delete(key)
        return True

    # ------------------------------------------------------------------ copy
    async def copy(
        self,
        src: str,
        dst: str,
        params: dict[str, Any],
        *,
        src_etag: str,
        dest_absent: bool = False,
        dest_etag: str | None = None,
    ) -> PutResult:
        """CopyObject; with conflict=detect only while src is the version with src_etag
        and dst is absent (dest_absent) or the version with dest_etag. Otherwise nothing
        is copied and FsError says what changed: ENOENT (src gone), ESTALE (src or dst
        replaced), EEXIST (dst created)."""
        if not self.on:
            return await self.fs.store.copy(src, dst, params)
        want = requests.copy_conditions(src_etag, dest_absent=dest_absent, dest_etag=dest_etag)
        support = await self.support()
        sent = {h: v for h, v in want.items() if support.honours(KIND_OF[h])}
        if len(sent) < len(want):
            await self.check_copy(src, dst, want, [h for h in want if h not in sent])
        try:
            return await self.fs.store.copy(src, dst, params, sent or None)
        except StoreError as e:
            if not sent:
                raise
            if e.code in UNSUPPORTED:
                self.rejected([KIND_OF[h] for h in sent], e)
                return await self.copy(src, dst, params, src_etag=src_etag,
                                       dest_absent=dest_absent, dest_etag=dest_etag)  # fmt: skip
            if e.code not in CONFLICT:
                raise
            await self.check_copy(src, dst, want, list(want))  # which one: raises
            raise FsError(errno.ESTALE, f"{src!r} or {dst!r} changed during the copy") from None

    async def check_copy(self, src: str, dst: str, want: dict[str, str], which: list[str]) -> None:
        """The copy's conditions checked by HEADs (both at once): FsError if one fails."""
        heads: dict[str, ObjectInfo | None] = {}

        async def head(key: str) -> None:
            heads[key] = await self.fs.store.head(key)

        async with trio.open_nursery() as nursery:
            for key in {src if h == "CopySourceIfMatch" else dst for h in which}:
                nursery.start_soon(head, key)
        if "CopySourceIfMatch" in which:
            now = heads[src]
            if now is None:
                raise FsError(errno.ENOENT, f"{src!r} was deleted by another writer")
            if requests.quoted(now.etag) != want["CopySourceIfMatch"]:
                raise FsError(errno.ESTALE, f"{src!r} was replaced by another writer")
        if "IfNoneMatch" in which and heads[dst] is not None:
            raise FsError(errno.EEXIST, f"{dst!r} was created by another writer")
        if "IfMatch" in which:
            now = heads[dst]
            if now is None or requests.quoted(now.etag) != want["IfMatch"]:
                raise FsError(errno.ESTALE, f"{dst!r} was changed by another writer")

    # ------------------------------------------------------------------ after a lost race
    async def delete_seen(self, path: str, key: str, etag: str, doing: str) -> None:
        """delete(key, etag) for path; when another writer replaced it, the mount learns
        their version and `doing` fails with ESTALE."""
        if not await self.delete(key, etag):
            await self.relearn(path)
            log.error("%s %r not done: another writer replaced it since this mount saw it; "
                      "their version stays", doing, path)  # fmt: skip
            raise FsError(errno.ESTALE, "replaced by another writer")

    @contextlib.asynccontextmanager
    async def lost_race(self, doing: str, *paths: str) -> AsyncIterator[None]:
        """Around a conditional change of paths: when it failed because another writer
        changed one (FsError from copy) or deleted one (NoSuchKey), the mount learns what
        S3 holds now and the change fails with that errno (ENOENT for a deletion)."""
        try:
            yield
        except (FsError, StoreError) as e:
            if isinstance(e, StoreError) and e.code not in NOT_FOUND:
                raise
            for path in paths:
                await self.relearn(path)
            log.error("%s not done: %s", doing, e)
            if isinstance(e, StoreError):
                raise FsError(errno.ENOENT, "deleted by another writer") from None
            raise

    async def relearn(self, path: str) -> None:
        """Another writer changed path: what this mount knew of it goes, S3's version (a
        HEAD) takes its place."""
        parent, name = parent_of(path), basename(path)
        node = self.fs.table.known(path)
        if node is not None and not node.is_dir:
            if node.entry is not None and node.entry.dirty:
                dest = self.fs.writes.keep_local(node, node.entry)
                log.error("%r: this mount's version, not stored, is in %s", path, dest)
            self.fs.files.supersede(node)  # open descriptors keep what they had
        try:
            found = await self.fs.names.file_node(path)
        except StoreError as e:
            log.warning("after a conflict on %r: %s", path, e)
            self.fs.cache.forget_dir(parent)
            return
        if found is None:
            self.fs.cache.removed(parent, name)
        else:
            self.fs.cache.added(
                parent, name, Child(False, found.attrs.size, found.etag, found.last_modified_ns)
            )
