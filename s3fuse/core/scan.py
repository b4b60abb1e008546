"""Metadata read-ahead for a scan by name: a program that stats (or opens) the children of
a directory one name after another in listing order without a readdir (`stat` over a
list of names, rsync with a file list, a backup tool's manifest check).

Where the listing does not carry everything (attrs=auto's "rich" verdict: s3fuse's mode,
owner and mtime live in each object's metadata) every such lookup costs a HEAD, one after
another. Once a few lookups have come in order, the next siblings' HEADs are sent in
parallel, a window ahead of the scan that is refilled when half of it has been used: the
answers arrive shortly before they are asked for, well inside the trust window (the bulk
fetch of a whole directory is for readdir; a prefetch that runs far ahead goes stale
before the scan gets there, and is asked again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cachetools import LRUCache

from s3fuse.core.cache import Child, DirListing
from s3fuse.model.keys import join

if TYPE_CHECKING:
    from s3fuse.core.resolve import Resolver

IN_ORDER = 3  # lookups in listing order before HEADs are sent ahead
WINDOW = 32  # siblings HEADed ahead of the scan
MAX_GAP = 2  # a lookup this many names on still continues the scan (a name skipped)


@dataclass
class Scan:
    last: str = ""  # the name looked up last
    streak: int = 0  # lookups in a row that came in order
    ahead: str = ""  # the last name already sent for


class ScanAhead:
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        # per directory: outlives its listing, which expires each trust window
        self.scans: LRUCache[str, Scan] = LRUCache(maxsize=256)

    def seen(self, parent: str, name: str) -> None:
        """Every lookup of a child of parent (also those answered from what was sent
        ahead: the scan goes on through them): continue or start the scan and keep the
        window ahead of it full."""
        fs = self.resolver.fs
        listing = fs.cache.dirs.get(parent)
        if listing is None or not self._heads_needed(listing) or not fs.tasks.running:
            return
        order = listing.order()
        i = order.get(name)
        if i is None:
            return
        scan = self.scans.get(parent)
        if scan is None:
            scan = self.scans[parent] = Scan()
        last = order.get(scan.last, -1) if scan.last else -1
        scan.streak = scan.streak + 1 if 0 < i - last <= MAX_GAP else 0
        scan.last = name
        if scan.streak + 1 < IN_ORDER:
            return
        ahead = order.get(scan.ahead, -1) if scan.ahead else -1
        if ahead - i > WINDOW // 2:
            return  # enough sent ahead already
        names = listing.names()
        first, end = max(ahead, i) + 1, min(i + WINDOW, len(names) - 1)
        if first > end:
            return
        scan.ahead = names[end]
        todo: list[tuple[str, Child]] = []
        for n in names[first : end + 1]:
            child = listing.children.get(n)
            path = join(parent, n)
            node = fs.table.known(path)
            if child is None or (node is not None and fs.table.fresh(node)):
                continue
            if path not in self.resolver.inflight:
                todo.append((path, child))
        if todo:
            fs.tasks.start_soon(self.resolver.bulk_attrs, todo)

    def _heads_needed(self, listing: DirListing) -> bool:
        """Whether a lookup of this listing's children HEADs them. Not after a readdir:
        the bulk fetch of the whole directory is for that (ls -l)."""
        attrs = self.resolver.fs.cfg.attrs
        if listing.browsed or attrs == "listing":
            return False
        return attrs == "exact" or listing.verdict == "rich"
