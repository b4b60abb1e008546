"""Streaming multipart: a file written sequentially past the stream threshold starts its
multipart upload while it is being written. Each full part goes up in the background as
soon as its bytes are in the spool (read from the spool file, with its Content-MD5, a
bounded number at a time: a writer that gets ahead waits), so close() only sends the last
part(s) and completes. The object appears at completion only, whole; an upload that can
no longer be completed (a write behind the parts sent, a truncate, a failed part, a
header changed meanwhile) is aborted and the close sends the file the ordinary way. A
daemon killed mid-stream leaves the upload's record beside the spool file: the next
mount aborts it (recovery.abort_abandoned); an open file's upload is never completed."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from s3fuse.model.etag import MAX_PARTS, PartPlan
from s3fuse.model.meta import META_BLOCKS, META_PART_SIZE, TIME_META
from s3fuse.s3.types import PutResult
from s3fuse.spool import upload

if TYPE_CHECKING:
    from s3fuse.s3.multipart import Upload
    from s3fuse.spool.entry import SpoolEntry
    from s3fuse.spool.spool import Spool
    from s3fuse.tasks import Background

log = logging.getLogger(__name__)

# metadata that may differ between the create and the close: the times (written last;
# restated by the copy after completion) and what describes the finished bytes
LATE_META = (*TIME_META, META_BLOCKS, META_PART_SIZE)
# A streamed upload's parts double after every PART_GROWTH parts: at the default 16 MiB,
# a file up to 15.6 GiB is cut into equal parts, and 10,000 parts hold 5 TiB.
PART_GROWTH = 1000


def comparable(headers: dict[str, Any]) -> dict[str, Any]:
    """Headers of an upload without what is only known at the close (LATE_META)."""
    md = {k: v for k, v in (headers.get("Metadata") or {}).items() if k.lower() not in LATE_META}
    return {**headers, "Metadata": md}


class Streamer:
    """One multipart upload fed while its spool file grows."""

    def __init__(
        self, spool: Spool, entry: SpoolEntry, headers: dict[str, Any], tasks: Background
    ) -> None:
        self.spool, self.entry, self.headers, self.tasks = spool, entry, headers, tasks
        self.key = entry.key
        # parts grow (PartPlan): the file's final size is not known yet
        self.plan = PartPlan.growing(spool.part_size, spool.part_growth)
        self.upload: Upload | None = None  # once created; None again once finished
        self.parts: dict[int, tuple[str, bytes]] = {}
        self.launched = 0  # parts sent so far (the next one is numbered launched + 1)
        self.sent_end = 0  # parts cover [0, sent_end): those bytes must not change
        self.in_flight = 0
        self.error: BaseException | None = None
        self.broken: str | None = None  # why this upload will not be completed
        self._changed = trio.Event()

    # ---------------------------------------------------------------- writer side
    async def start(self) -> None:
        upload.track_upload(self.entry.data_path, self.key, "")
        try:
            self.upload = await self.spool.store.begin_upload(self.key, self.headers, self.plan)
        except BaseException:
            upload.track_upload(self.entry.data_path, self.key, None)
            raise
        upload.track_upload(self.entry.data_path, self.key, self.upload.upload_id)

    async def feed(self, size: int) -> None:
        """Start the upload of every full part below size; waits while as many parts as
        the spool allows are under way (the writer runs at the upload's pace then)."""
        while self.usable and size - self.sent_end >= self.plan.length(self.next_part):
            await self._room()
            if self.usable:
                self._launch(self.plan.length(self.next_part))

    def cannot_complete(self, why: str) -> None:
        """This upload will not be completed: its parts are dropped now, the close
        sends the file the ordinary way."""
        if self.broken is None:
            self.broken = why
            log.info("%r: %s; its streamed upload is dropped, the close sends it whole",
                     self.key, why)  # fmt: skip
            if self.tasks.running:
                self.tasks.start_soon(self.abort)

    @property
    def usable(self) -> bool:
        return self.broken is None and self.error is None

    # ---------------------------------------------------------------- parts
    async def _room(self) -> None:
        while self.in_flight >= self.spool.part_concurrency:
            await self._changed.wait()

    @property
    def next_part(self) -> int:
        return self.launched + 1

    def _launch(self, length: int) -> None:
        if self.next_part > MAX_PARTS:  # only past 5 TiB: S3 could not hold it anyway
            self.cannot_complete(f"it needs more than {MAX_PARTS} parts")
            return
        off = self.sent_end
        self.sent_end += length
        self.in_flight += 1
        self.launched += 1
        self.tasks.start_soon(self._part, self.launched, off, length)

    async def _part(self, num: int, off: int, length: int) -> None:
        assert self.upload is not None
        try:
            self.parts[num] = await self.upload.send_part(self.entry.data_path, num, off, length)
            progress = self.spool.in_flight.get(self.key)
            if progress is not None:
                progress[0] += length
        except BaseException as e:
            if self.error is None:
                self.error = e
            if not isinstance(e, Exception):
                raise  # cancelled: the nursery is going away
        finally:
            self.in_flight -= 1
            self._changed.set()
            self._changed = trio.Event()

    async def _all_sent(self) -> None:
        while self.in_flight:
            await self._changed.wait()

    # ---------------------------------------------------------------- close side
    async def finish(
        self, size: int, headers: dict[str, Any], conditions: dict[str, str] | None
    ) -> PutResult | None:
        """Send what is left and complete; None (the upload aborted) when it cannot be
        completed and the file must go up the ordinary way. The result's metadata says
        what the object lacks (final times, block checksums): PutResult.late_meta."""
        if self.usable and comparable(headers) != comparable(self.headers):
            self.cannot_complete("its headers changed while it was written")
        while self.usable and self.sent_end < size:
            await self._room()
            if self.usable:
                self._launch(min(self.plan.length(self.next_part), size - self.sent_end))
        await self._all_sent()
        if not self.usable:
            if self.broken is None and self.error is not None:
                log.warning("%r: a part of its streamed upload failed (%s); the close "
                            "sends it whole", self.key, self.error)  # fmt: skip
            await self.abort()
            return None
        assert self.upload is not None
        parts = [(n, *self.parts[n]) for n in sorted(self.parts)]
        try:
            res = await self.upload.complete(parts, conditions)
        except BaseException:
            await self.abort()
            raise
        upload.track_upload(self.entry.data_path, self.key, None)
        self.upload = None
        sums = await upload.block_sums(self.key, self.entry.data_path, size, headers)
        if sums is not None:
            res.metadata[META_BLOCKS] = sums
        res.late_meta = True
        return res

    async def abort(self) -> None:
        """Abort the upload once no part is under way (shielded: at unmount too, its
        parts must not outlive it)."""
        with trio.CancelScope(shield=True):
            await self._all_sent()
        if self.upload is not None:
            up, self.upload = self.upload, None
            # shielded; a failure is logged and the record kept for the next recovery
            await up.abort(lambda _: upload.track_upload(self.entry.data_path, self.key, None))
