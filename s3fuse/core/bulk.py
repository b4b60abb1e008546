"""Server-side copies that keep every header, and moving a whole prefix (directory rename).

S3 has no rename: a move is CopyObject + DeleteObject per key. A copy re-sends what the
source object has (storage class, encryption, content headers, metadata, object lock, ACL
grants: S3 copies none of them with MetadataDirective REPLACE, and never ACLs); tags are
copied by S3 itself.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from s3fuse.model import requests, xattrs
from s3fuse.s3.parallel import each

if TYPE_CHECKING:
    from s3fuse.s3.client import Store

log = logging.getLogger(__name__)

COPY_CONCURRENCY = 8


async def copy_preserving(store: Store, src: str, dst: str) -> bool:
    """Copy one object with all its headers; False when src no longer exists."""
    info = await store.head(src)
    if info is None:
        return False
    values = xattrs.from_head(info.extra)
    values.update(xattrs.grants_from_acl(await store.get_acl(src)))
    params = requests.copy(values, info.metadata, info.content_type, sse_c=store.sse_c)
    await store.copy(src, dst, params)
    return True


async def move_prefix(store: Store, old: str, new: str) -> int:
    """Move every key under prefix old to prefix new. All copies are made before any
    original is deleted: a failure while copying removes the copies made so far (every
    object stays under its old name); a failure while deleting leaves some objects under
    both names. Either way nothing is lost, and the StoreError is raised. Returns the
    number of objects moved."""
    keys = [o.key for o in await store.list_all(old)]
    copied: list[str] = []

    async def copy(key: str) -> None:
        dst = new + key[len(old) :]
        if await copy_preserving(store, key, dst):
            copied.append(dst)

    errors = await each(keys, copy, at_once=COPY_CONCURRENCY)
    if errors:
        log.error(
            "rename of %r to %r failed while copying (%s); removing the %d copies made, "
            "every object stays under its old name",
            old, new, errors[0], len(copied),
        )  # fmt: skip
        await each(copied, store.delete, at_once=COPY_CONCURRENCY)
        raise errors[0]
    errors = await each(keys, store.delete, at_once=COPY_CONCURRENCY)
    if errors:
        log.error(
            "rename of %r to %r: all objects were copied, but deleting the old keys failed "
            "(%s); some objects now exist under both names",
            old, new, errors[0],
        )  # fmt: skip
        raise errors[0]
    return len(keys)
