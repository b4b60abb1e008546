"""Tuning of the kernel side of a mount (needs no request to the mount itself).

The kernel's read-ahead for a FUSE mount starts at 128 KiB: a sequential reader then
costs one READ request per 128 KiB. A larger window (the mount's bdi read_ahead_kb, as
`blockdev --setra` for disks) lets the kernel ask for up to 1 MiB at a time, several in
flight. Setting it needs write access to /sys (root); otherwise the default stays.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def device_of(mountpoint: str, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """major:minor of the newest fuse.s3fuse mount at mountpoint (a resolved path)."""
    found = None
    with open(mountinfo) as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            ours = right.split(" ", 1)[0] == "fuse.s3fuse"
            if ours and len(fields) >= 5 and _unescape(fields[4]) == mountpoint:
                found = fields[2]
    return found


def read_ahead_of(dev: str) -> int | None:
    """The read-ahead window in KiB of bdi `dev` (device_of; None: not readable)."""
    try:
        with open(f"/sys/class/bdi/{dev}/read_ahead_kb") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def set_read_ahead(mountpoint: str, kib: int) -> bool:
    """Set the mount's read-ahead window; False (logged) when it cannot be set."""
    if kib <= 0:
        return False
    try:
        dev = device_of(mountpoint)
        if dev is None:
            log.info("read_ahead_kb: mount %s not found in mountinfo", mountpoint)
            return False
        with open(f"/sys/class/bdi/{dev}/read_ahead_kb", "w") as f:
            f.write(str(kib))
    except OSError as e:
        log.info("read_ahead_kb=%d not set (%s); the kernel's default stays", kib, e.strerror)
        return False
    log.debug("read-ahead of %s (bdi %s) set to %d KiB", mountpoint, dev, kib)
    return True
