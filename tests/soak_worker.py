"""One soak worker: mixed file operations in its own directory of a mount, with a model
of what every name may hold. Run by tests/soak.py; writes its model as JSON at the end.

The model, per name: ``allowed``, the MD5s (None: absent) the bucket may hold for it
once everything settles, and ``pending``, the MD5 of bytes whose close() failed and that
no later operation replaced (they must be stored, in the spool, or in recovered/). A name
is *certain* when allowed has one element: only then are appends and patches made to it
(their result depends on the old bytes, read through the mount first).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import sys
import time
from typing import Any

DEAD = (errno.ENOTCONN, errno.ECONNABORTED, errno.ENOENT)  # the mount is gone (killed)
MiB = 1 << 20


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class Worker:
    def __init__(self, root: str, seed: int, max_size: int, names: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.max_size = max_size
        self.names = [f"f{i}" for i in range(names)]
        self.allowed: dict[str, list[str | None]] = {n: [None] for n in self.names}
        self.pending: dict[str, str | None] = {n: None for n in self.names}
        self.counts: dict[str, int] = {}
        self.bad_reads: list[str] = []

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def size(self) -> int:
        r = self.rng.random()
        if r < 0.1:
            return 0
        if r < 0.8:
            return self.rng.randrange(1, 256 << 10)
        return self.rng.randrange(1, self.max_size)

    def certain(self, name: str) -> str | bool | None:
        """The one MD5 the name holds (None: absent), or False when uncertain."""
        a = self.allowed[name]
        return a[0] if len(a) == 1 else False

    # ------------------------------------------------------------ outcomes
    def acked(self, name: str, digest: str | None) -> None:
        self.allowed[name] = [digest]
        self.pending[name] = None

    def unknown(self, name: str, digest: str | None, *, close_failed: bool = False) -> None:
        """The operation failed: the name may hold its old bytes or the new ones."""
        if digest not in self.allowed[name]:
            self.allowed[name].append(digest)
        self.pending[name] = digest if close_failed and digest is not None else None

    # ------------------------------------------------------------ operations
    def write_whole(self, name: str) -> None:
        data = self.rng.randbytes(self.size())
        self._write(name, "wb", 0, data, md5(data))

    def append_or_patch(self, name: str) -> None:
        old = self._read(name)
        if old is None:
            return
        tail = self.rng.randbytes(self.rng.randrange(1, 64 << 10))
        if self.rng.random() < 0.5 or not old:
            self._write(name, "ab", len(old), tail, md5(old + tail))
        else:
            off = self.rng.randrange(0, len(old))
            new = old[:off] + tail + old[off + len(tail) :]
            self._write(name, "r+b", off, tail, md5(new))

    def _write(self, name: str, mode: str, off: int, data: bytes, digest: str) -> None:
        self.count("write")
        stage = "open"
        try:
            with open(self.path(name), mode) as f:
                stage = "write"
                if mode == "r+b":
                    f.seek(off)
                for i in range(0, len(data), 1 << 20):
                    f.write(data[i : i + (1 << 20)])
                stage = "close"
        except OSError as e:
            # the with block's close raised: close() failed, its bytes must be kept
            close_failed = stage == "close" and e.errno not in DEAD
            self.count("close_failed" if close_failed else "write_failed")
            self.unknown(name, digest, close_failed=close_failed)
            self.dead(e)
            return
        self.count("close_ok")
        self.acked(name, digest)

    def _read(self, name: str) -> bytes | None:
        self.count("read")
        try:
            with open(self.path(name), "rb") as f:
                data = f.read()
        except OSError as e:
            self.count("read_failed")
            self.dead(e)
            return None
        allowed = self.allowed[name]
        if md5(data) not in allowed:
            self.bad_reads.append(f"{name}: read {len(data)} bytes, md5 {md5(data)}, "
                                  f"allowed {allowed}")  # fmt: skip
            return None
        return data if len(allowed) == 1 else None

    def delete(self, name: str) -> None:
        self.count("delete")
        try:
            os.unlink(self.path(name))
        except OSError as e:
            if e.errno == errno.ENOENT and self.certain(name) is None:
                return
            self.count("delete_failed")
            self.unknown(name, None)
            self.dead(e)
            return
        self.acked(name, None)

    def rename(self, src: str, dst: str) -> None:
        self.count("rename")
        moved = self.allowed[src]
        try:
            os.rename(self.path(src), self.path(dst))
        except OSError as e:
            self.count("rename_failed")
            for d in moved:  # either name may now hold either version
                self.unknown(dst, d)
            self.unknown(src, None)
            self.pending[src] = self.pending[dst] = None
            self.dead(e)
            return
        self.allowed[dst] = list(moved)
        self.pending[dst] = self.pending[src]
        self.acked(src, None)

    def dead(self, e: OSError) -> None:
        """After an error that says the mount is gone: wait for it to come back."""
        if e.errno not in DEAD:
            return
        deadline = time.monotonic() + 120
        while not os.path.isdir(self.root) and time.monotonic() < deadline:
            time.sleep(0.2)

    def step(self) -> None:
        name = self.rng.choice(self.names)
        state = self.certain(name)
        r = self.rng.random()
        if state is None or r < 0.3:
            self.write_whole(name)
        elif r < 0.5 and state is not False:
            self.append_or_patch(name)
        elif r < 0.75:
            if state is not False or self.rng.random() < 0.5:
                self._read(name)
        elif r < 0.85:
            self.delete(name)
        else:
            dst = self.rng.choice([n for n in self.names if n != name])
            self.rename(name, dst)

    def model(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "pending": self.pending,
            "counts": self.counts,
            "bad_reads": self.bad_reads,
        }


def main() -> None:
    root, seed, seconds, max_size, out = sys.argv[1:6]
    w = Worker(root, int(seed), int(max_size), names=12)
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        if os.path.isdir(root):
            w.step()
        else:
            time.sleep(0.2)
    with open(out, "w") as f:
        json.dump(w.model(), f)


if __name__ == "__main__":
    main()
