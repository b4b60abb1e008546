"""The S3 client's value types and counters, without boto3: the layers above name them
(metacache, spool, readahead, the core) without importing the client module."""

from __future__ import annotations

import email.utils
import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreConfig:
    bucket: str
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing_style: str = "auto"  # path | virtual | auto
    checksum: str = "when_required"  # botocore request_checksum_calculation
    # SHA-256 of every body in the SigV4 signature: botocore does it over plain http;
    # every body s3fuse sends carries a signed Content-MD5, which protects it as well
    # (what botocore relies on over https), so by default the payload goes unsigned
    sign_payload: bool = False
    max_attempts: int = 5  # botocore standard retry mode, first try included
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    upload_threads: int = 8
    meta_threads: int = 16
    sse_c_key: bytes | None = field(default=None, repr=False)  # never logged


@dataclass
class ObjectInfo:
    key: str
    size: int
    etag: str
    last_modified_ns: int
    metadata: dict[str, str] = field(default_factory=dict)
    content_type: str = ""
    version_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # other headers from HEAD


@dataclass
class Listing:
    prefix: str
    objects: list[ObjectInfo]
    prefixes: list[str]  # common prefixes, ending in "/"
    truncated: bool


@dataclass
class PutResult:
    etag: str
    version_id: str | None
    metadata: dict[str, str] = field(default_factory=dict)  # s3fuse's own, added on the way
    # the object's LastModified, or (a PutObject does not say it) the server's clock when
    # it answered, which is not earlier: a later change elsewhere shows a later one
    last_modified_ns: int = 0
    # the object's metadata was sent before its last bytes (a streamed upload): its
    # times and block checksums are restated by a copy (metadata above is what it lacks)
    late_meta: bool = False


def timestamp_ns(dt: Any) -> int:
    """A datetime botocore parsed -> nanoseconds since the epoch (0 for none)."""
    return int(dt.timestamp() * 1_000_000_000) if dt is not None else 0


@dataclass(frozen=True)
class Version:
    """One entry of ListObjectVersions for a key: a stored version or a delete marker."""

    version_id: str
    last_modified_ns: int
    size: int
    etag: str
    latest: bool
    delete_marker: bool = False


# upper bounds (seconds) of the request-latency histogram's buckets (metrics, status)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Stats:
    """Request and error counters, updated from worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()  # HTTP requests sent: retries included
        self.errors: Counter[str] = Counter()
        # per operation: the count in each LATENCY_BUCKETS bucket (not cumulative), then
        # the ones slower than the last; and the sum of seconds
        self.latency: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = {}
        self.bytes_uploaded = 0
        self.bytes_downloaded = 0
        self.unverified = 0  # whole GETs whose multipart ETag could not be checked
        self.unverified_ranges = 0  # large objects read in ranges without block checksums
        self.corrupted_reads = 0  # GETs whose bytes failed their check (fetched again)

    def unverifiable(self, key: str) -> None:
        with self._lock:
            self.unverified += 1
            first = self.unverified == 1
        if first:
            log.warning("%r: its ETag cannot be checked (a multipart object of unknown part "
                        "size); such downloads are taken unchecked on this mount", key)  # fmt: skip

    def unverifiable_ranges(self, key: str) -> None:
        with self._lock:
            self.unverified_ranges += 1
            first = self.unverified_ranges == 1
        if first:
            log.warning("%r: read in ranges without block checksums (written by another tool, "
                        "or no room in its metadata): reads of such large objects are not "
                        "verified on this mount; 'status' counts them", key)  # fmt: skip

    def corrupted(self) -> None:
        with self._lock:
            self.corrupted_reads += 1

    def count(self, op: str) -> None:
        with self._lock:
            self.requests[op] += 1

    def attempt(self, op: str) -> None:
        with self._lock:
            self.attempts[op] += 1

    def observe(self, op: str, seconds: float) -> None:
        """The time one call took, retries included."""
        i = next((i for i, b in enumerate(LATENCY_BUCKETS) if seconds <= b), len(LATENCY_BUCKETS))
        with self._lock:
            counts = self.latency.setdefault(op, [0] * (len(LATENCY_BUCKETS) + 1))
            counts[i] += 1
            self.latency_sum[op] = self.latency_sum.get(op, 0.0) + seconds

    def latency_snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {op: {"counts": list(c), "sum": round(self.latency_sum[op], 6)}
                    for op, c in self.latency.items()}  # fmt: skip

    def error(self, code: str) -> None:
        with self._lock:
            self.errors[code] += 1

    def add_bytes(self, up: int = 0, down: int = 0) -> None:
        with self._lock:
            self.bytes_uploaded += up
            self.bytes_downloaded += down


def server_time_ns(r: dict[str, Any]) -> int:
    """The Date header of a boto3 answer: the server's clock (0 if it sent none)."""
    date = (r.get("ResponseMetadata") or {}).get("HTTPHeaders", {}).get("date")
    if not date:
        return 0
    try:
        return int(email.utils.parsedate_to_datetime(date).timestamp() * 1_000_000_000)
    except (TypeError, ValueError):
        return 0


def strip_etag(etag: str | None) -> str:
    return (etag or "").strip('"')


def headed(key: str, r: dict[str, Any]) -> ObjectInfo:
    """The object a HeadObject answer describes (botocore's, or lean.py's of the same shape)."""
    return ObjectInfo(
        key=key,
        size=int(r.get("ContentLength", 0)),
        etag=strip_etag(r.get("ETag")),
        last_modified_ns=timestamp_ns(r.get("LastModified")),
        metadata=dict(r.get("Metadata", {})),
        content_type=str(r.get("ContentType", "")),
        version_id=r.get("VersionId"),
        extra={k: v for k, v in r.items() if k not in ("ResponseMetadata", "Metadata", "Body")},
    )
