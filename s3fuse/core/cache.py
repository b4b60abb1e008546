"""Directory-listing and negative-lookup caches (bounded, TTL), owned here only.

A cached listing answers lookups of its children: a name absent from a complete listing
is known not to exist without asking S3, so creating files in a listed directory costs
no HEAD. Every local change updates the cached listing in place.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio
from cachetools import TTLCache

if TYPE_CHECKING:
    from s3fuse.core.nodes import Node


@dataclass
class Child:
    is_dir: bool
    size: int = 0
    etag: str = ""
    last_modified_ns: int = 0


@dataclass
class DirListing:
    children: dict[str, Child] = field(default_factory=dict)
    complete: bool = True  # False: only the first page(s) are here
    # when S3 answered (time.monotonic): what it says is that old, and so is every node
    # confirmed by it (the kernel's timeouts count from here: inodes.kernel_timeout)
    fetched: float = field(default_factory=time.monotonic)
    asked: float = 0.0  # when the LIST was sent: what this host learnt later is newer
    browsed: bool = False  # listed for readdir: lookups of its children may follow in bulk
    lookups: int = 0  # lookups of its children that needed S3 since it was listed
    # attrs=auto: "plain" (no s3fuse metadata seen: the listing's attributes will do),
    # "rich" (HEAD every child), None (not sampled yet; sampling: the sample under way)
    verdict: str | None = None
    sampling: trio.Event | None = None
    _order: dict[str, int] | None = field(default=None, repr=False)
    _names: list[str] | None = field(default=None, repr=False)

    def older_than(self, node: Node | None) -> bool:
        """Whether this host stored or confirmed node after this LIST was sent (a file
        closed here while a slow LIST was under way): the listing's silence about it says
        nothing then (a lookup HEADs it, a readdir shows it)."""
        return node is not None and node.stored and not node.unlinked and node.fetched > self.asked

    def order(self) -> dict[str, int]:
        """Each child's place in listing order (S3 lists in key order); names added
        here later come last, names removed keep their place. Names added since the
        last call are the dict's tail (a create appends): only those are placed, so a
        lookup after each of many creates costs O(1), not a walk of the directory. (A
        name added just before a removed name is re-added gets no place: the scan
        passes it by.)"""
        if self._order is None or self._names is None:
            self._order, self._names = {}, []
        order, names = self._order, self._names
        new = list(itertools.takewhile(lambda n: n not in order, reversed(self.children)))
        for n in reversed(new):
            order[n] = len(names)
            names.append(n)
        return order

    def names(self) -> list[str]:
        self.order()
        assert self._names is not None
        return self._names


class Caches:
    def __init__(self, ttl: float, maxsize: int = 4096) -> None:
        self.ttl = ttl
        self.dirs: TTLCache[str, DirListing] = TTLCache(maxsize=maxsize, ttl=max(ttl, 0.001))
        self.negative: TTLCache[str, bool] = TTLCache(maxsize=maxsize * 16, ttl=max(ttl, 0.001))
        # directories whose children's attributes were fetched in bulk recently
        self.bulk: TTLCache[str, bool] = TTLCache(maxsize=maxsize, ttl=max(ttl, 0.001))
        self.hits = self.misses = 0  # listings asked for (status, metrics)

    def listing(self, path: str) -> DirListing | None:
        if self.ttl <= 0:
            return None
        found = self.dirs.get(path)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put_listing(self, path: str, listing: DirListing) -> None:
        if self.ttl > 0:
            self.dirs[path] = listing

    def is_negative(self, path: str) -> bool:
        return self.ttl > 0 and path in self.negative

    def added(self, parent: str, name: str, child: Child) -> None:
        """A child appeared locally (create, mkdir, upload)."""
        self.negative.pop(f"{parent}/{name}" if parent else name, None)
        listing = self.dirs.get(parent)
        if listing is not None:
            listing.children[name] = child

    def removed(self, parent: str, name: str) -> None:
        path = f"{parent}/{name}" if parent else name
        listing = self.dirs.get(parent)
        if listing is not None:
            listing.children.pop(name, None)
        self.dirs.pop(path, None)
        if self.ttl > 0:
            self.negative[path] = True

    def forget_dir(self, path: str) -> None:
        self.dirs.pop(path, None)
