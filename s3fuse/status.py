"""What a running mount is doing: a snapshot the daemon writes every second to its runtime
state file (and systemd's STATUS=), and the ``s3fuse status`` presentation of it."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from s3fuse.core.fs import S3Fs
from s3fuse.spool.spool import Spool

if TYPE_CHECKING:
    from s3fuse.s3.client import Store


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def spool_bytes(directory: str) -> int:
    total = 0
    try:
        with os.scandir(directory) as it:
            for e in it:
                if e.name.endswith(".data"):
                    total += e.stat().st_size
    except OSError:
        pass
    return total


def snapshot(fs: S3Fs, spool: Spool, store: Store) -> dict[str, Any]:
    """Counters and queues; never credentials or keys."""
    in_flight = {k: {"sent": v[0], "size": v[1]} for k, v in spool.in_flight.items()}
    pending = sorted(k for k in fs.pending_keys() if k not in in_flight)
    stats = store.stats
    return {
        "uploads": {
            "pending": pending,
            "in_flight": in_flight,
            "failed": dict(spool.failed),
        },
        "bytes_uploaded": stats.bytes_uploaded,
        "bytes_downloaded": stats.bytes_downloaded,
        "requests": dict(stats.requests),
        "attempts": dict(stats.attempts),  # retries included
        "errors": dict(stats.errors),
        "latency": stats.latency_snapshot(),
        "listing_cache": {"hits": fs.cache.hits, "misses": fs.cache.misses},
        "reads": {
            "corrupted_refetched": stats.corrupted_reads,
            "unverified_whole": stats.unverified,
            "unverified_ranged": stats.unverified_ranges,
        },
        "spool_bytes": spool_bytes(spool.dir),
        "updated": iso(time.time()),
    }


def status_line(snap: dict[str, Any]) -> str:
    """One line for systemd's STATUS=."""
    up = snap["uploads"]
    return (
        f"{len(up['pending'])} upload(s) pending, {len(up['in_flight'])} in flight, "
        f"{len(up['failed'])} failed; {snap['bytes_uploaded']} bytes uploaded"
    )


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


BAR = 30  # characters of a progress bar


def progress(key: str, sent: int, size: int, bars: bool) -> str:
    """One upload under way: a bar on a terminal, a plain line when piped."""
    pct = 100 * sent / size if size else 100
    if not bars:
        return f"    uploading {key}: {_size(sent)} of {_size(size)} ({pct:.0f}%)"
    done = int(BAR * pct / 100)
    return (f"    uploading {key}\n      [{'#' * done}{'-' * (BAR - done)}] {pct:3.0f}%  "
            f"{_size(sent)} of {_size(size)}")  # fmt: skip


def format_text(mount: dict[str, Any], *, bars: bool = False) -> str:
    up = mount.get("uploads", {})
    lines = [
        f"{mount['mountpoint']}: s3://{mount['bucket']}/{mount.get('prefix', '')} "
        f"at {mount['endpoint']}",
        f"  pid {mount['pid']}, up {int(mount['uptime_seconds'])} s (since {mount['started']})",
        f"  uploads: {len(up.get('pending', []))} pending, {len(up.get('in_flight', {}))} in "
        f"flight, {len(up.get('failed', {}))} failed; {_size(mount.get('bytes_uploaded', 0))} "
        f"uploaded, {_size(mount.get('bytes_downloaded', 0))} downloaded",
        f"  spool: {_size(mount.get('spool_bytes', 0))} in {mount['spool_dir']}",
    ]
    for key, p in up.get("in_flight", {}).items():
        lines.append(progress(key, p["sent"], p["size"], bars))
    for key in up.get("pending", []):
        lines.append(f"    pending   {key}")
    for key, why in up.get("failed", {}).items():
        lines.append(f"    FAILED    {key}: {why}")
    reqs = mount.get("requests", {})
    if reqs:
        lines.append("  requests: " + ", ".join(f"{k} {v}" for k, v in sorted(reqs.items())))
    errs = mount.get("errors", {})
    if errs:
        lines.append("  errors:   " + ", ".join(f"{k} {v}" for k, v in sorted(errs.items())))
    reads = mount.get("reads", {})
    if reads.get("unverified_whole") or reads.get("unverified_ranged"):
        lines.append(
            f"  unverified reads: {reads.get('unverified_whole', 0)} whole (multipart ETag of "
            f"unknown part size), {reads.get('unverified_ranged', 0)} ranged (large objects "
            "without s3fuse block checksums)"
        )
    if reads.get("corrupted_refetched"):
        lines.append(f"  corrupted in transit, fetched again: {reads['corrupted_refetched']}")
    if mount.get("log_file"):
        lines.append(f"  log: {mount['log_file']}")
    return "\n".join(lines)
