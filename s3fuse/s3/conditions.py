"""Which conditional CopyObject/DeleteObject headers the server honours, found once per
mount by trying each on a scratch object with a condition that must fail and one that
must hold. Servers differ: AWS and moto check them all; Ceph RGW 16.2 checks only
PutObject's and silently ignores the rest (the request succeeds unconditionally), so the
answer cannot be read off the first real request. The scratch key has an empty path
segment (``prefix + "/.s3fuse-probe-…"``), a name no mount shows (model/keys.py)."""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from s3fuse.errors import CONFLICT, UNSUPPORTED, StoreError
from s3fuse.model import requests

if TYPE_CHECKING:
    from s3fuse.s3.client import Store

log = logging.getLogger(__name__)

DELETE_IF_MATCH = "DeleteObject If-Match"
COPY_SOURCE_IF_MATCH = "CopyObject x-amz-copy-source-if-match"
COPY_IF_NONE_MATCH = "CopyObject If-None-Match"
COPY_IF_MATCH = "CopyObject If-Match"
KINDS = (DELETE_IF_MATCH, COPY_SOURCE_IF_MATCH, COPY_IF_NONE_MATCH, COPY_IF_MATCH)

HONOURED, IGNORED, REJECTED = "honoured", "ignored", "rejected"
FAILED, HELD = "failed", "held"  # how one probe request ended
BODY = b"s3fuse: a probe of conditional requests; safe to delete\n"
# an ETag the probe object cannot have: the MD5 of other bytes
NEVER = hashlib.md5(b"s3fuse: not the probe").hexdigest()


@dataclass
class Support:
    """What the server does with each conditional header (KINDS): HONOURED, IGNORED
    (the request succeeds as if unconditional) or REJECTED (refused as unsupported)."""

    verdicts: dict[str, str] = field(default_factory=dict)

    def honours(self, kind: str) -> bool:
        return self.verdicts.get(kind) == HONOURED

    def reject(self, kind: str) -> None:
        self.verdicts[kind] = REJECTED

    @classmethod
    def none(cls) -> Support:
        """Nothing known to be honoured: every check is done by a HEAD first."""
        return cls({k: IGNORED for k in KINDS})


def scratch_key(prefix: str) -> str:
    return f"{prefix}/.s3fuse-probe-{secrets.token_hex(8)}"


async def outcome(request: Callable[[], Awaitable[Any]]) -> str:
    """FAILED (412), HELD (2xx) or REJECTED; any other error is raised."""
    try:
        await request()
    except StoreError as e:
        if e.code in CONFLICT:
            return FAILED
        if e.code in UNSUPPORTED:
            return REJECTED
        raise
    return HELD


def verdict(must_fail: str, must_hold: str) -> str:
    if REJECTED in (must_fail, must_hold):
        return REJECTED
    # a condition that fails when it should and holds when it should is checked; one
    # that also fails when it should hold is compared some other way: not usable
    return HONOURED if (must_fail, must_hold) == (FAILED, HELD) else IGNORED


async def probe(store: Store, prefix: str) -> Support:
    """Try each condition on two scratch objects (ten requests), then delete them."""
    key, other = scratch_key(prefix), scratch_key(prefix)
    params = {"ContentType": "text/plain"}
    q = requests.quoted
    try:
        put = await store.put(key, BODY, md5=hashlib.md5(BODY).digest(), size=len(BODY),
                              headers=params)  # fmt: skip
        copied = await outcome(
            lambda: store.copy(key, other, params, {"IfNoneMatch": "*"})
        )  # other is absent: must hold
        src_fail = await outcome(
            lambda: store.copy(key, other, params, {"CopySourceIfMatch": q(NEVER)})
        )
        src_hold = await outcome(
            lambda: store.copy(key, other, params, {"CopySourceIfMatch": q(put.etag)})
        )
        absent_fail = await outcome(
            lambda: store.copy(key, other, params, {"IfNoneMatch": "*"})
        )  # other exists now (when the first copy held)
        dest_fail = await outcome(lambda: store.copy(key, other, params, {"IfMatch": q(NEVER)}))
        info = await store.head(other)
        dest_hold = await outcome(
            lambda: store.copy(key, other, params, {"IfMatch": q(info.etag if info else NEVER)})
        )
        del_fail = await outcome(lambda: store.delete(key, if_match=NEVER))
        del_hold = await outcome(lambda: store.delete(other, if_match=info.etag if info else NEVER))
    finally:
        for k in (key, other):
            try:
                await store.delete(k)
            except StoreError as e:
                log.warning("conditions probe: could not delete its scratch object %r (%s); "
                            "it is hidden from every mount and safe to delete", k, e)  # fmt: skip
    return Support(
        {
            DELETE_IF_MATCH: verdict(del_fail, del_hold),
            COPY_SOURCE_IF_MATCH: verdict(src_fail, src_hold),
            COPY_IF_NONE_MATCH: verdict(absent_fail, copied),
            COPY_IF_MATCH: verdict(dest_fail, dest_hold),
        }
    )
