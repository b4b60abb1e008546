"""HEAD answers kept across mounts, so `ls -l` of files written through s3fuse is one LIST.

A listing gives each object's size, ETag and LastModified, but not the metadata s3fuse keeps
(mode, owner, mtime) nor the headers behind the xattrs: those take a HEAD per object. This
cache (SQLite, `meta.db` in the spool directory, which only one daemon uses at a time) keeps
each HEAD answer with the ETag and LastModified that the *listing* showed for it. A later
listing that shows the same pair shows the same object version — any PutObject or
CopyObject, metadata-only ones included, sets a new LastModified — and its HEAD answer is
taken from here. Limits: LastModified has one-second resolution, so a metadata-only change
by another client within the second of the cached version goes unseen until the object
changes again; `-o attrs=exact` never uses the cache. At most MAX_ENTRIES rows are kept (the
oldest written go first). Any SQLite failure switches the cache off (logged), never a file
operation.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import trio

from s3fuse.s3.types import ObjectInfo

log = logging.getLogger(__name__)

MAX_ENTRIES = 200_000
FLUSH_DELAY = 1.0  # seconds: HEAD answers are written in batches
_QUERY_CHUNK = 500  # keys per SELECT (SQLite's variable limit is 999 on old builds)


def _encode(info: ObjectInfo) -> str:
    extra: dict[str, Any] = {}
    for k, v in info.extra.items():
        if isinstance(v, datetime):
            extra[k] = {"$dt": v.isoformat()}
        elif isinstance(v, str | int | float | bool) or v is None:
            extra[k] = v
    return json.dumps(
        {
            "size": info.size,
            "etag": info.etag,
            "lm": info.last_modified_ns,
            "meta": info.metadata,
            "ct": info.content_type,
            "vid": info.version_id,
            "extra": extra,
        }
    )


def _decode(key: str, text: str) -> ObjectInfo:
    d = json.loads(text)
    extra: dict[str, Any] = {}
    for k, v in d["extra"].items():
        extra[k] = datetime.fromisoformat(v["$dt"]) if isinstance(v, dict) else v
    return ObjectInfo(
        key=key,
        size=int(d["size"]),
        etag=str(d["etag"]),
        last_modified_ns=int(d["lm"]),
        metadata={str(k): str(v) for k, v in d["meta"].items()},
        content_type=str(d["ct"]),
        version_id=d["vid"],
        extra=extra,
    )


class MetaCache:
    def __init__(self, path: str, max_entries: int = MAX_ENTRIES) -> None:
        self.path = path
        self.max_entries = max_entries
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one connection, used from worker threads
        self._pending: list[tuple[str, str, int, str]] = []
        self._scheduled = False

    def open(self) -> None:
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")  # a cache: a lost write costs one HEAD
            db.execute(
                "CREATE TABLE IF NOT EXISTS heads (key TEXT PRIMARY KEY, etag TEXT NOT NULL,"
                " listed_ns INTEGER NOT NULL, info TEXT NOT NULL)"
            )
            self._db = db
        except sqlite3.Error as e:
            log.warning("metadata cache %s unusable (%s); working without it", self.path, e)

    @property
    def enabled(self) -> bool:
        return self._db is not None

    def _off(self, e: Exception) -> None:
        log.warning("metadata cache %s failed (%s); working without it", self.path, e)
        db, self._db = self._db, None
        if db is not None:
            db.close()

    # ------------------------------------------------------------ reads
    def lookup_sync(self, keys: list[str]) -> dict[str, tuple[str, int, ObjectInfo]]:
        """key -> (listed ETag, listed LastModified ns, HEAD answer), for the keys known."""
        out: dict[str, tuple[str, int, ObjectInfo]] = {}
        with self._lock:
            if self._db is None:
                return out
            try:
                for i in range(0, len(keys), _QUERY_CHUNK):
                    chunk = keys[i : i + _QUERY_CHUNK]
                    rows = self._db.execute(
                        "SELECT key, etag, listed_ns, info FROM heads WHERE key IN "
                        f"({','.join('?' * len(chunk))})",
                        chunk,
                    ).fetchall()
                    for key, etag, listed_ns, info in rows:
                        out[key] = (etag, listed_ns, _decode(key, info))
            except (sqlite3.Error, ValueError, KeyError, TypeError) as e:
                self._off(e)
                return {}
        return out

    async def lookup(self, keys: list[str]) -> dict[str, tuple[str, int, ObjectInfo]]:
        if self._db is None or not keys:
            return {}
        return await trio.to_thread.run_sync(self.lookup_sync, keys)

    # ------------------------------------------------------------ writes
    def add(self, etag: str, listed_ns: int, info: ObjectInfo) -> bool:
        """Queue a HEAD answer; True when the caller should start flush_later()."""
        if self._db is None:
            return False
        self._pending.append((info.key, etag, listed_ns, _encode(info)))
        if self._scheduled:
            return False
        self._scheduled = True
        return True

    async def flush_later(self) -> None:
        await trio.sleep(FLUSH_DELAY)
        self._scheduled = False
        rows, self._pending = self._pending, []
        await trio.to_thread.run_sync(self._write, rows)

    def _write(self, rows: Iterable[tuple[str, str, int, str]]) -> None:
        with self._lock:
            if self._db is None:
                return
            try:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR REPLACE INTO heads VALUES (?, ?, ?, ?)", rows)
                (count,) = self._db.execute("SELECT count(*) FROM heads").fetchone()
                if count > self.max_entries:  # the oldest written go (REPLACE renews a row)
                    self._db.execute(
                        "DELETE FROM heads WHERE rowid IN (SELECT rowid FROM heads "
                        "ORDER BY rowid LIMIT ?)",
                        (count - self.max_entries * 9 // 10,),
                    )
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                self._off(e)

    def close(self) -> None:
        """Write what is queued and close (at unmount)."""
        rows, self._pending = self._pending, []
        if rows:
            self._write(rows)
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
