"""The only module that talks to S3 (with multipart.py and versions.py beside it, the only
importers of boto3's botocore).

Every request runs in a worker thread (``trio.to_thread.run_sync``) under one of two
capacity limiters, so uploads never starve HEAD/LIST. One client is shared; it is built
from a botocore session, so temporary credentials refresh by themselves.
Failures leave this module as ``StoreError`` only.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import io
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, BinaryIO, TypeVar

import botocore.exceptions
import botocore.session
import botocore.utils
import trio
from botocore.config import Config

from s3fuse.errors import NO_UPLOAD, NOT_FOUND, StoreError
from s3fuse.model import etag as etag_sums
from s3fuse.model import requests
from s3fuse.model.etag import ETagCheck, PartPlan
from s3fuse.model.meta import META_PART_SIZE
from s3fuse.s3 import lean, loader, multipart, versions
from s3fuse.s3.failures import translated
from s3fuse.s3.types import (
    Listing,
    ObjectInfo,
    PutResult,
    Stats,
    StoreConfig,
    Version,
    headed,
    server_time_ns,
    strip_etag,
    timestamp_ns,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
GET_ATTEMPTS = 3  # a whole GET whose bytes do not match the ETag is fetched again


def _listed(o: dict[str, Any]) -> ObjectInfo:
    """An entry of a ListObjectsV2 answer."""
    return ObjectInfo(
        key=o["Key"],
        size=int(o.get("Size", 0)),
        etag=strip_etag(o.get("ETag")),
        last_modified_ns=timestamp_ns(o.get("LastModified")),
    )


# botocore sends "Expect: 100-continue" with every PutObject/UploadPart body and waits
# for the server's go-ahead: a round trip more. Bodies up to this size go without it
# (for a large body it still pays: a refused request does not send the body first).
SMALL_BODY = 1 << 20


def no_continue_for_small_bodies(params: dict[str, Any], **_: Any) -> None:
    headers = params.get("headers", {})
    if "Expect" not in headers:
        return
    try:
        length = int(headers.get("Content-Length", -1))
    except (TypeError, ValueError):
        return
    if 0 <= length <= SMALL_BODY:
        del headers["Expect"]


def parse_timestamp(value: str) -> datetime:
    """botocore's timestamp parser, with fast paths for ISO 8601 (every LastModified of
    a listing: dateutil took a third of the CPU time of listing 2000 keys) and for HTTP
    dates (the Last-Modified header of every HEAD and GET: 8 us instead of 150 us)."""
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is not None:
            return parsed
    except (TypeError, ValueError):
        pass
    if isinstance(value, str) and value.endswith(" GMT"):
        try:
            return email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            pass
    other: datetime = botocore.utils.parse_timestamp(value)  # HTTP dates, epoch seconds
    return other


@functools.cache
def _shared_loader(data_path: str | None) -> loader.QuickLoader:
    """One loader of botocore's JSON data (service models, endpoint rules) per process:
    it caches what it parsed, so a second client costs ~5 ms instead of ~80 ms (tests and
    the CLI build many). Each Store still has its own session (profiles may differ)."""
    return loader.create_loader(data_path)


class Store:
    def __init__(self, cfg: StoreConfig) -> None:
        self.cfg = cfg
        self.bucket = cfg.bucket
        self.stats = Stats()
        # botocore's session makes the client (and refreshes temporary credentials by
        # itself); boto3's wrapper around it would add ~60 ms of imports to every mount
        core = botocore.session.Session(profile=cfg.profile)
        core.register_component(
            "data_loader", _shared_loader(core.get_config_variable("data_path"))
        )
        core.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=parse_timestamp
        )
        pool = max(cfg.upload_threads + cfg.meta_threads, 10)
        self._client = core.create_client(
            "s3",
            endpoint_url=cfg.endpoint_url,
            region_name=cfg.region or core.get_config_variable("region") or "us-east-1",
            config=Config(
                max_pool_connections=pool,
                retries={"mode": "standard", "max_attempts": cfg.max_attempts},
                s3={
                    "addressing_style": cfg.addressing_style,
                    "payload_signing_enabled": cfg.sign_payload,
                },
                request_checksum_calculation=cfg.checksum,
                response_checksum_validation="when_required",
                connect_timeout=cfg.connect_timeout,
                read_timeout=cfg.read_timeout,
                tcp_keepalive=True,
            ),
        )
        self._client.meta.events.register("after-call.s3", self._after_call)
        self._client.meta.events.register("request-created.s3", self._request_created)
        self._client.meta.events.register_last("before-call.s3", no_continue_for_small_bodies)
        # SSE-C: every request that touches object data carries the customer key;
        # botocore adds its MD5 and base64-encodes it.
        self._ssec = requests.sse_c(cfg.sse_c_key)
        self._ssec_copy = requests.sse_c_copy_source(cfg.sse_c_key)
        self.sse_c = bool(cfg.sse_c_key)
        # HEADs and small PUTs at less CPU (lean.py); with SSE-C every request carries
        # the key, and other checksums than Content-MD5 are botocore's: it sends those
        plain = not self.sse_c and cfg.checksum == "when_required"
        self._lean = lean.Lean(self._client, cfg.bucket, parse_timestamp,
                               self.stats) if plain else None  # fmt: skip
        self.upload_limiter = trio.CapacityLimiter(cfg.upload_threads)
        self.meta_limiter = trio.CapacityLimiter(cfg.meta_threads)

    # ------------------------------------------------------------------ plumbing
    def _after_call(self, http_response: Any, parsed: Any, model: Any, **_: Any) -> None:
        self.stats.count(model.name)
        if log.isEnabledFor(logging.DEBUG):
            status = getattr(http_response, "status_code", "?")
            log.debug("%s -> %s", model.name, status)

    def _request_created(self, operation_name: str = "", **_: Any) -> None:
        self.stats.attempt(operation_name)

    def _call(self, op: str, key: str, fn: Callable[[], T]) -> T:
        start = time.monotonic()
        try:
            with translated(op, key, self.stats, self.cfg.endpoint_url):
                return fn()
        finally:
            self.stats.observe(op, time.monotonic() - start)

    async def _run(
        self, limiter: trio.CapacityLimiter, op: str, key: str, fn: Callable[[], T]
    ) -> T:
        return await trio.to_thread.run_sync(self._call, op, key, fn, limiter=limiter)

    # ------------------------------------------------------------------ sync API
    def check_bucket_sync(self) -> None:
        """HeadBucket, for start-up checks (before any trio loop runs)."""
        self._call("HeadBucket", "", lambda: self._client.head_bucket(Bucket=self.bucket))

    # ------------------------------------------------------------------ async API
    async def head(self, key: str) -> ObjectInfo | None:
        def do() -> ObjectInfo | None:
            r = self._lean.head(key) if self._lean else lean.FALLBACK
            if r is None:
                return None
            if isinstance(r, lean.Fallback):
                try:
                    r = self._client.head_object(Bucket=self.bucket, Key=key, **self._ssec)
                except botocore.exceptions.ClientError as e:
                    code = str(e.response.get("Error", {}).get("Code", ""))
                    if code in NOT_FOUND:
                        return None
                    raise
            return headed(key, r)

        return await self._run(self.meta_limiter, "HeadObject", key, do)

    async def list_dir(self, prefix: str, *, max_pages: int | None = None) -> Listing:
        """One directory level (Delimiter '/'), following pagination up to max_pages."""

        def do() -> Listing:
            objects: list[ObjectInfo] = []
            prefixes: list[str] = []
            token: str | None = None
            pages = 0
            while True:
                kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "Delimiter": "/"}
                if token:
                    kw["ContinuationToken"] = token
                r = self._client.list_objects_v2(**kw)
                pages += 1
                objects.extend(_listed(o) for o in r.get("Contents", []))
                prefixes.extend(p["Prefix"] for p in r.get("CommonPrefixes", []))
                token = r.get("NextContinuationToken")
                if not r.get("IsTruncated") or not token:
                    return Listing(prefix, objects, prefixes, truncated=False)
                if max_pages is not None and pages >= max_pages:
                    return Listing(prefix, objects, prefixes, truncated=True)

        return await self._run(self.meta_limiter, "ListObjectsV2", prefix, do)

    async def has_children(self, prefix: str) -> list[str]:
        """Up to two keys under prefix (enough to tell marker-only from non-empty)."""

        def do() -> list[str]:
            r = self._client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=2)
            return [o["Key"] for o in r.get("Contents", [])]

        return await self._run(self.meta_limiter, "ListObjectsV2", prefix, do)

    def _checked_get(
        self, key: str, etag: str | None, sink: BinaryIO, byte_range: str | None = None,
        pin: Mapping[str, str] | None = None,
    ) -> int:  # fmt: skip
        """A whole object into sink (in a worker thread). With etag the bytes are checked
        against it (etag.ETagCheck): a corrupted answer is fetched again, up to
        GET_ATTEMPTS times, then refused (ChecksumMismatch), never handed on."""
        seen: list[str] = []
        for attempt in range(1, GET_ATTEMPTS + 1):
            sink.seek(0)
            sink.truncate()
            extra = {"Range": byte_range} if byte_range else {}
            r = self._client.get_object(
                Bucket=self.bucket, Key=key, **extra, **(pin or {}), **self._ssec
            )
            size = int(r.get("ContentLength") or 0)
            got_etag = strip_etag(r.get("ETag"))
            if etag is not None and got_etag not in ("", etag):
                raise StoreError("ChecksumMismatch", f"the object changed (ETag {got_etag})",
                                 op="GetObject", key=key)  # fmt: skip
            check = None
            if etag is not None:
                part = (r.get("Metadata") or {}).get(META_PART_SIZE, "")
                check = ETagCheck(etag, size, PartPlan.parse(part))
            n = 0
            for chunk in r["Body"].iter_chunks(1 << 20):
                sink.write(chunk)
                if check is not None:
                    check.update(chunk)
                n += len(chunk)
            self.stats.add_bytes(down=n)
            verdict = check.result() if check is not None else True
            if verdict is None:
                self.stats.unverifiable(key)
            if verdict is not False:
                return n
            assert check is not None
            if check.guessed:
                seen.append(check.fingerprint())
                if len(seen) > 1 and seen[-1] == seen[-2]:
                    # the same bytes twice, fitting no usual part size: a part size of its
                    # own, not bytes changed in transit (those differ from fetch to fetch)
                    self.stats.unverifiable(key)
                    return n
            if attempt < GET_ATTEMPTS:
                log.warning("GET of %r returned bytes that do not match its ETag %s "
                            "(corrupted in transit?); fetching again", key, etag)  # fmt: skip
        raise StoreError("ChecksumMismatch", f"the bytes S3 returned do not match ETag {etag} "
                         "(corrupted in transit?)", op="GetObject", key=key)  # fmt: skip

    async def get_range(
        self, key: str, start: int, end: int, *, expect_etag: str | None = None,
        pin: Mapping[str, str] | None = None,
    ) -> bytes:  # fmt: skip
        """Bytes [start, end) of an object. expect_etag: a GET of the whole object,
        checked against its ETag (see _checked_get). pin: GetObject's VersionId or IfMatch,
        so that the bytes are those of one version (PreconditionFailed when it is gone)."""

        def do() -> bytes:
            buf = io.BytesIO()
            self._checked_get(key, expect_etag, buf, f"bytes={start}-{end - 1}", pin)
            return buf.getvalue()

        return await self._run(self.upload_limiter, "GetObject", key, do)

    async def open_stream(
        self, key: str, start: int, end: int, pin: Mapping[str, str] | None = None
    ) -> Any:
        """A GET of bytes [start, end) whose body is read piece by piece (read_stream).
        From 0 it is a plain GET (no Range): servers that slice ranges out of a copy of the
        whole object (moto) answer it without that copy; the reader stops at `end` anyway."""
        extra = {"Range": f"bytes={start}-{end - 1}"} if start else {}

        def do() -> Any:
            r = self._client.get_object(
                Bucket=self.bucket, Key=key, **extra, **(pin or {}), **self._ssec
            )
            return r["Body"]

        return await self._run(self.upload_limiter, "GetObject", key, do)

    async def read_stream(self, body: Any, n: int, key: str = "") -> bytes:
        def do() -> bytes:
            data: bytes = body.read(n)
            self.stats.add_bytes(down=len(data))
            return data

        return await self._run(self.upload_limiter, "GetObject", key, do)

    @staticmethod
    def close_stream(body: Any) -> None:
        with contextlib.suppress(Exception):
            body.close()

    async def download(self, key: str, fileobj: BinaryIO, *, expect_etag: str | None = None) -> int:
        """Whole object into an open file; returns the byte count. With expect_etag the
        bytes are checked (see _checked_get)."""
        return await self._run(
            self.upload_limiter, "GetObject", key,
            lambda: self._checked_get(key, expect_etag, fileobj),
        )  # fmt: skip

    async def put(
        self,
        key: str,
        body: BinaryIO | bytes,
        *,
        md5: bytes,
        size: int,
        headers: dict[str, Any],
        verify_etag: bool = True,
    ) -> PutResult:
        """One PutObject with Content-MD5; the returned ETag is checked against md5."""
        content_md5 = requests.content_md5(md5)

        def do() -> PutResult:
            params = {"ContentLength": size, "ContentMD5": content_md5, **headers}
            r: Any = lean.FALLBACK
            if isinstance(body, bytes) and size <= SMALL_BODY and self._lean is not None:
                r = self._lean.put(key, body, params)
            elif not isinstance(body, bytes):
                body.seek(0)
            if isinstance(r, lean.Fallback):
                r = self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, **params, **self._ssec
                )
            self.stats.add_bytes(up=size)
            etag = strip_etag(r.get("ETag"))
            md5_etag = "-" not in etag and self._md5_etag_expected(r)
            if verify_etag and md5_etag and etag and etag != md5.hex():
                raise StoreError(
                    "ChecksumMismatch",
                    f"S3 stored ETag {etag}, but the spooled bytes have MD5 {md5.hex()}",
                    op="PutObject",
                    key=key,
                    stored_etag=etag,
                )
            return PutResult(etag, r.get("VersionId"), last_modified_ns=server_time_ns(r))

        return await self._run(self.upload_limiter, "PutObject", key, do)

    def _md5_etag_expected(self, r: dict[str, Any]) -> bool:
        return etag_sums.sums_bytes(str(r.get("ServerSideEncryption", "")), sse_c=self.sse_c)

    async def put_multipart(
        self, key: str, path: str, *, size: int, part_size: int, headers: dict[str, Any],
        conditions: dict[str, str] | None = None, concurrency: int = 4,
        on_progress: Callable[[int], None] | None = None,
        track: Callable[[str | None], None] | None = None,
    ) -> PutResult:  # fmt: skip
        """A multipart upload from a spool file (multipart.py)."""
        return await multipart.put_multipart(
            self, key, path, size=size, part_size=part_size, headers=headers,
            conditions=conditions, concurrency=concurrency, on_progress=on_progress,
            track=track,
        )  # fmt: skip

    async def begin_upload(
        self, key: str, headers: dict[str, Any], plan: PartPlan
    ) -> multipart.Upload:
        """A multipart upload to be fed part by part while its file is written."""
        upload_id = await multipart.create(self, key, headers, plan)
        return multipart.Upload(self, key, upload_id, plan)

    async def abort_uploads_of(self, key: str) -> int:
        """Abort every unfinished multipart upload of key (one whose id was never learnt:
        its creator died before the answer came). Returns how many."""

        def do() -> list[str]:
            r = self._client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
            return [str(u["UploadId"]) for u in r.get("Uploads", []) if u.get("Key") == key]

        ids = await self._run(self.meta_limiter, "ListMultipartUploads", key, do)
        for upload_id in ids:
            await self.abort_upload(key, upload_id)
        return len(ids)

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload; one that is gone already is no error."""

        def do() -> None:
            try:
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except botocore.exceptions.ClientError as e:
                if str(e.response.get("Error", {}).get("Code", "")) not in NO_UPLOAD:
                    raise

        await self._run(self.upload_limiter, "AbortMultipartUpload", key, do)

    async def copy(
        self, src: str, dst: str, headers: dict[str, Any],
        conditions: dict[str, str] | None = None,
    ) -> PutResult:  # fmt: skip
        """CopyObject src -> dst with MetadataDirective REPLACE: every header in
        ``headers`` is re-sent (S3 copies neither ACLs nor, with REPLACE, metadata; it
        copies tags unless TaggingDirective says REPLACE). Objects up to 5 GiB.
        ``conditions``: CopySourceIfMatch / IfNoneMatch / IfMatch (model/requests.py)."""

        def do() -> PutResult:
            r = self._client.copy_object(
                Bucket=self.bucket,
                Key=dst,
                CopySource={"Bucket": self.bucket, "Key": src},
                MetadataDirective="REPLACE",
                **headers,
                **self._ssec,
                **self._ssec_copy,
                **(conditions or {}),
            )
            res = r.get("CopyObjectResult", {})
            lm = timestamp_ns(res.get("LastModified")) or server_time_ns(r)
            return PutResult(strip_etag(res.get("ETag")), r.get("VersionId"), last_modified_ns=lm)

        return await self._run(self.upload_limiter, "CopyObject", dst, do)

    async def list_versions(self, key: str) -> list[Version]:
        return await versions.list_versions(self, key)

    async def copy_version(self, key: str, version_id: str, dst: str) -> PutResult:
        return await versions.copy_version(self, key, version_id, dst)

    async def list_all(self, prefix: str) -> list[ObjectInfo]:
        """Every object under prefix, recursively (all pages)."""

        def do() -> list[ObjectInfo]:
            out: list[ObjectInfo] = []
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                out.extend(_listed(o) for o in page.get("Contents", []))
            return out

        return await self._run(self.meta_limiter, "ListObjectsV2", prefix, do)

    async def get_acl(self, key: str) -> dict[str, Any]:
        def do() -> dict[str, Any]:
            r = self._client.get_object_acl(Bucket=self.bucket, Key=key)
            return {"Owner": r.get("Owner", {}), "Grants": r.get("Grants", [])}

        return await self._run(self.meta_limiter, "GetObjectAcl", key, do)

    async def get_tags(self, key: str) -> list[dict[str, str]]:
        def do() -> list[dict[str, str]]:
            r = self._client.get_object_tagging(Bucket=self.bucket, Key=key)
            return list(r.get("TagSet", []))

        return await self._run(self.meta_limiter, "GetObjectTagging", key, do)

    async def delete(self, key: str, if_match: str | None = None) -> None:
        """DeleteObject; with if_match, only the version with that ETag (a server that
        implements the condition answers PreconditionFailed otherwise)."""
        cond = {"IfMatch": requests.quoted(if_match)} if if_match else {}
        await self._run(
            self.meta_limiter,
            "DeleteObject",
            key,
            lambda: self._client.delete_object(Bucket=self.bucket, Key=key, **cond),
        )
