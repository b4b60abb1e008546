"""Where the mount's work that outlives one request runs: read-ahead streams, the hashing
of large writes, the bulk HEAD after a listing, the metadata cache's writes.

One Background is built with everything else (daemon.py) and handed to the spool and the
core in their constructors. It runs tasks while the daemon serves (``serving()`` opens
its nursery); before that (crash recovery, adopting kept files) and after, it is not
``running``, and callers do the work inline or leave it out: nothing is started on a
nursery that does not exist yet, and no caller has to guess whether one was set.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio


class NotServing(RuntimeError):
    """A background task was started while the mount does not serve."""


class Background:
    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None

    @property
    def running(self) -> bool:
        return self._nursery is not None

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self._nursery is None:
            raise NotServing(f"{getattr(fn, '__qualname__', fn)} started outside serving()")
        self._nursery.start_soon(fn, *args)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[trio.Nursery]:
        """The nursery of the mount's life: background tasks run in it; leaving the block
        waits for them (cancel its scope to stop them)."""
        if self._nursery is not None:
            raise RuntimeError("already serving")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                yield nursery
        finally:
            self._nursery = None
