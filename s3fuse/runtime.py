"""Where a running daemon says who it is, so ``umount`` and ``status`` can find it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from typing import Any


def runtime_dir() -> str:
    if os.geteuid() == 0:
        return "/run/s3fuse"
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/s3fuse-{os.geteuid()}"
    return os.path.join(base, "s3fuse")


def state_path(mountpoint: str) -> str:
    real = os.path.realpath(mountpoint)
    return os.path.join(runtime_dir(), hashlib.sha256(real.encode()).hexdigest()[:16] + ".json")


def write_state(path: str, record: dict[str, Any]) -> str:
    """Write a daemon's state file. ``path`` comes from state_path(), computed before the
    mount exists: resolving the mount point from the daemon itself would ask the daemon
    (a FUSE request its own blocked loop can never answer)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)
    return path


def read_state(mountpoint: str) -> dict[str, Any] | None:
    try:
        with open(state_path(mountpoint)) as f:
            data: dict[str, Any] = json.load(f)
    except (OSError, ValueError):
        return None
    return data


def all_states() -> list[dict[str, Any]]:
    out = []
    with contextlib.suppress(FileNotFoundError):
        for name in sorted(os.listdir(runtime_dir())):
            if name.endswith(".json"):
                with (
                    contextlib.suppress(OSError, ValueError),
                    open(os.path.join(runtime_dir(), name)) as f,
                ):
                    out.append(json.load(f))
    return out


def remove_state(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False
