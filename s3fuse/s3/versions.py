"""A key's versions in a versioned bucket: listing them, and copying one to a new key
(s3fuse shows them read-only through the ``user.s3.versions`` xattr and restores one as
a new file: core/versions.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from s3fuse.s3.types import PutResult, Version, server_time_ns, strip_etag, timestamp_ns

if TYPE_CHECKING:
    from s3fuse.s3.client import Store


def _version(v: dict[str, Any], delete_marker: bool) -> Version:
    return Version(
        version_id=str(v.get("VersionId")),
        last_modified_ns=timestamp_ns(v.get("LastModified")),
        size=int(v.get("Size", 0)),
        etag=strip_etag(v.get("ETag")),
        latest=bool(v.get("IsLatest")),
        delete_marker=delete_marker,
    )


async def list_versions(store: Store, key: str) -> list[Version]:
    """Every version and delete marker of key, the current one first, then newest first
    (a bucket that was never versioned answers one version, id "null")."""

    def do() -> list[Version]:
        out: list[Version] = []
        pages = store._client.get_paginator("list_object_versions").paginate(
            Bucket=store.bucket, Prefix=key
        )
        for page in pages:
            out += [_version(v, False) for v in page.get("Versions", []) if v.get("Key") == key]
            out += [_version(v, True) for v in page.get("DeleteMarkers", []) if v.get("Key") == key]
        return sorted(out, key=lambda v: (v.latest, v.last_modified_ns), reverse=True)

    return await store._run(store.meta_limiter, "ListObjectVersions", key, do)


async def copy_version(store: Store, key: str, version_id: str, dst: str) -> PutResult:
    """CopyObject of one version of key to dst, its metadata and content headers kept
    (MetadataDirective COPY), encrypted again as the mount encrypts (SSE-C)."""

    def do() -> PutResult:
        r = store._client.copy_object(
            Bucket=store.bucket,
            Key=dst,
            MetadataDirective="COPY",
            CopySource={"Bucket": store.bucket, "Key": key, "VersionId": version_id},
            **store._ssec,
            **store._ssec_copy,
        )
        res = r.get("CopyObjectResult", {})
        lm = timestamp_ns(res.get("LastModified")) or server_time_ns(r)
        return PutResult(strip_etag(res.get("ETag")), r.get("VersionId"), last_modified_ns=lm)

    return await store._run(store.upload_limiter, "CopyObject", dst, do)
