"""What a dead daemon left in the spool: closed files are uploaded (or kept, shown by the
mount, when that fails), open ones go to recovered/, multipart uploads it left are aborted."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from s3fuse.errors import CONFLICT, UNREACHABLE, StoreError
from s3fuse.model import requests
from s3fuse.spool import journal as journal_file
from s3fuse.spool.entry import CLOSING, OPEN, SpoolEntry
from s3fuse.spool.upload import send

if TYPE_CHECKING:
    from s3fuse.spool.spool import Spool

log = logging.getLogger(__name__)


@dataclass
class Kept:
    """A closed file whose recovery upload failed: a live entry and its journaled headers."""

    entry: SpoolEntry
    headers: dict[str, Any]


@dataclass
class Recovery:
    uploaded: list[str] = field(default_factory=list)  # keys stored
    moved: list[str] = field(default_factory=list)  # paths under recovered/
    kept: list[Kept] = field(default_factory=list)
    aborted: int = 0  # multipart uploads a dead daemon left open


async def abort_abandoned(spool: Spool) -> int:
    """Abort the multipart uploads this spool started and a dead daemon left open
    (their parts cost storage until aborted). Returns how many were aborted."""
    aborted = 0
    for name in sorted(os.listdir(spool.dir)):
        if not name.endswith(".upload"):
            continue
        path = os.path.join(spool.dir, name)
        try:
            with open(path) as f:
                rec = json.load(f)
            if rec["upload_id"] is None:
                # killed while the upload was being created: its id never came back.
                # (An upload of the same key by another host now fails and is retried
                # there: its close() reports it, its bytes stay in its spool.)
                n = await spool.store.abort_uploads_of(str(rec["key"]))
                if n:
                    log.warning("recovery: aborted %d unfinished multipart upload(s) of %r "
                                "whose creation a crash interrupted",
                                n, rec["key"])  # fmt: skip
                aborted += n
                os.unlink(path)
                continue
            await spool.store.abort_upload(str(rec["key"]), str(rec["upload_id"]))
        except (OSError, ValueError, KeyError) as e:
            log.warning("recovery: unreadable upload record %s (%s); removed", path, e)
        except StoreError as e:
            log.error("recovery: could not abort the unfinished multipart upload of %r "
                      "(%s); tried again at the next mount", rec.get("key"), e)  # fmt: skip
            continue
        else:
            aborted += 1
            log.warning("recovery: aborted the unfinished multipart upload of %r",
                        rec["key"])  # fmt: skip
        os.unlink(path)
    return aborted


async def recover(spool: Spool) -> Recovery:
    """Deal with what a dead daemon left: upload closed files, move open ones to
    recovered/. A closed file whose upload fails again is handed back (``kept``) as a
    live entry: the mount shows its bytes, and a later write or unlink of the file
    supersedes it (it is never replayed over newer data). Never deletes data that S3
    has not acknowledged."""
    out = Recovery()
    out.aborted = await abort_abandoned(spool)
    found: list[tuple[str, str, str, dict[str, Any]]] = []  # id, data, journal, record
    for name in sorted(os.listdir(spool.dir)):
        if not name.endswith(".data"):
            continue
        entry_id = name[: -len(".data")]
        data = os.path.join(spool.dir, name)
        journal = os.path.join(spool.dir, entry_id + ".json")
        try:
            record = journal_file.read(journal)
        except FileNotFoundError:
            os.unlink(data)  # no journal: S3 acknowledged it
            continue
        except (OSError, ValueError):
            record = {"key": f"unknown-{entry_id}", "state": OPEN}
        found.append((entry_id, data, journal, record))
    # ids grow: of several closed entries for one key, the newest is the file's content
    newest = {str(r.get("key", "")): i for i, _, _, r in found if r.get("state") == CLOSING}
    unreachable: str | None = None
    for entry_id, data, journal, record in found:
        key = str(record.get("key", ""))
        if record.get("state") != CLOSING:
            recovered(spool, out, data, journal, key, "was still open when the daemon "
                            "died; not uploaded (it could be partial)")  # fmt: skip
        elif newest[key] != entry_id:
            why = "was closed again later (a newer version is in the spool); not uploaded"
            recovered(spool, out, data, journal, key, why)
        else:
            code = await recover_closed(spool, out, entry_id, data, journal, key, record,
                                              unreachable=unreachable)  # fmt: skip
            if code in UNREACHABLE:
                unreachable = code
    if unreachable is not None:
        log.error("recovery: the server cannot be reached (%s); the closed files not "
                  "stored yet are kept, shown by the mount and uploaded later",
                  unreachable)  # fmt: skip
    return out


async def recover_closed(
    spool: Spool, out: Recovery, entry_id: str, data: str, journal: str, key: str,
    record: dict[str, Any], *, unreachable: str | None = None,
) -> str | None:  # fmt: skip
    """Upload a closed entry, or keep it (``out.kept``) when that fails. With
    unreachable (the error of an earlier upload that says the server cannot be reached)
    it is kept without a try: recovery must not hold the mount back for minutes.
    Returns the error code of a failed upload."""
    headers = record.get("headers") or {}
    conditions = record.get("conditions") or None
    size = os.path.getsize(data)
    code = unreachable
    if code is None:
        try:
            await send(spool, key, data, size, headers, conditions)
        except StoreError as e:
            if e.code in CONFLICT:
                recovered(spool, out, data, journal, key, f"was changed by another writer "
                                f"({e.code}); S3 keeps theirs")  # fmt: skip
                return None
            spool.failed[key] = f"{e.code}: {e.message}"
            code = e.code
        else:
            os.unlink(journal)
            os.unlink(data)
            out.uploaded.append(key)
            log.warning("recovery: uploaded %r, whose close() had started before a crash",
                        key)  # fmt: skip
            return None
    else:
        spool.failed[key] = f"{code}: not tried at start-up (the server was unreachable)"
    try:
        fd = os.open(data, os.O_RDWR)
    except OSError as oe:
        log.error("recovery: upload of %r failed (%s) and its spool file cannot be "
                  "opened (%s); kept in %s", key, code, oe, data)  # fmt: skip
        return code
    entry = SpoolEntry(spool, entry_id, key, fd, size=size, dirty_gen=1, state=CLOSING,
                       _hashed=-1, _journaled=True)  # fmt: skip
    entry.base_etag = requests.base_of(conditions)
    out.kept.append(Kept(entry, headers))
    if unreachable is None:
        log.error("recovery: upload of %r failed (%s); kept in %s, shown by the mount "
                  "and tried again later", key, code, data)  # fmt: skip
    return code


def recovered(spool: Spool, out: Recovery, data: str, journal: str, key: str, why: str) -> None:
    dest = spool.quarantine(data, key)
    os.unlink(journal)
    out.moved.append(dest)
    log.warning("recovery: %r %s. Its bytes are in %s", key, why, dest)
