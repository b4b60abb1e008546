"""Run a batch of S3 jobs side by side and keep their failures: parts of a multipart
upload, the copies and deletes of a directory move, an object's ACL and tags."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import trio

from s3fuse.errors import StoreError

T = TypeVar("T")


async def each(
    items: Iterable[T], job: Callable[[T], Awaitable[object]], *, at_once: int
) -> list[StoreError]:
    """job(item) for every item, at most at_once at a time. After the first StoreError no
    job starts (those running finish: cancelling a request half sent helps nobody); the
    errors come back in the order they happened, none when all succeeded. Anything but a
    StoreError is a bug and propagates."""
    errors: list[StoreError] = []
    limit = trio.Semaphore(max(1, at_once))

    async def one(item: T) -> None:
        async with limit:
            if errors:
                return
            try:
                await job(item)
            except StoreError as e:
                errors.append(e)

    async with trio.open_nursery() as nursery:
        for item in items:
            nursery.start_soon(one, item)
    return errors
