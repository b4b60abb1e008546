"""Mount configuration: one dataclass, filled from command-line flags and ``-o`` options.

Every long option also works as ``-o name=value`` (fstab style); flags as ``-o name``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, fields
from typing import Any

from .keys import normalize_prefix


class ConfigError(ValueError):
    """A bad option or value; the message says which and what is allowed."""


# mount(8) / fstab options that are meant for mount itself, not for us.
IGNORED_OPTIONS = {
    "auto",
    "noauto",
    "_netdev",
    "nofail",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "defaults",
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "lazytime",
    "nolazytime",
    "sync",
    "async",
    "dirsync",
    "silent",
    "loud",
    "comment",
}

ADDRESSING = ("auto", "path", "virtual")
CHECKSUM = ("when_required", "when_supported")


@dataclass
class MountConfig:
    bucket: str
    mountpoint: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing_style: str = "auto"
    foreground: bool = False
    debug: bool = False
    spool_dir: str | None = None
    log_file: str | None = None
    read_only: bool = False
    cache_ttl: float = 10.0
    kernel_ttl: float = 1.0
    checksum: str = "when_required"
    retries: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    upload_threads: int = 8
    allow_other: bool = False
    uid: int | None = None
    gid: int | None = None
    ready_fd: int | None = None  # internal: the background parent's pipe
    extra: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------ derived
    @property
    def mount_id(self) -> str:
        """Stable identity of what is mounted: endpoint + bucket + prefix."""
        text = f"{self.endpoint_url or 'aws'}|{self.region or ''}|{self.bucket}|{self.prefix}"
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def spool_path(self) -> str:
        if self.spool_dir:
            return os.path.abspath(self.spool_dir)
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.bucket)[:60]
        return os.path.join(base, "s3fuse", f"{safe}-{self.mount_id}")

    def default_log_file(self) -> str:
        base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
        return os.path.join(base, "s3fuse", f"{self.mount_id}.log")

    def validate(self) -> None:
        if not self.bucket:
            raise ConfigError("no bucket given (BUCKET[:PREFIX])")
        if self.addressing_style not in ADDRESSING:
            raise ConfigError(
                f"addressing_style={self.addressing_style!r}: allowed {', '.join(ADDRESSING)}"
            )
        if self.checksum not in CHECKSUM:
            raise ConfigError(f"checksum={self.checksum!r}: allowed {', '.join(CHECKSUM)}")
        if self.cache_ttl < 0 or self.kernel_ttl < 0:
            raise ConfigError("cache_ttl and kernel_ttl must be >= 0")
        if self.retries < 1:
            raise ConfigError("retries must be >= 1 (1 = no retry)")
        if self.upload_threads < 1:
            raise ConfigError("upload_threads must be >= 1")
        if self.endpoint_url and not self.endpoint_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"endpoint_url must start with http:// or https://: {self.endpoint_url!r}"
            )
        if self.extra:
            names = ", ".join(sorted(self.extra))
            raise ConfigError(f"unknown option(s): {names} (see 's3fuse mount --help')")


def split_bucket(spec: str) -> tuple[str, str]:
    """'bucket', 'bucket:some/prefix', or an access point ARN with an optional ':prefix'."""
    if spec.startswith("arn:"):
        parts = spec.split(":")
        return ":".join(parts[:6]), normalize_prefix(":".join(parts[6:]))
    bucket, _, prefix = spec.partition(":")
    return bucket, normalize_prefix(prefix)


_ALIASES = {"ro": ("read_only", "1"), "rw": ("read_only", "0"), "endpoint": ("endpoint_url", None)}


def _convert(name: str, raw: str, typ: Any) -> Any:
    text = str(typ)
    try:
        if "bool" in text:
            if raw.lower() in ("1", "true", "yes", "on", ""):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if "int" in text:
            return int(raw, 0)
        if "float" in text:
            return float(raw)
    except ValueError:
        raise ConfigError(f"option {name}={raw!r}: expected {text.split('|')[0].strip()}") from None
    return raw


def apply_options(cfg: MountConfig, opts: list[str]) -> None:
    """Apply '-o a=b,c' style option strings to cfg (unknown names go to cfg.extra)."""
    types = {f.name: f.type for f in fields(MountConfig)}
    for group in opts:
        for item in group.split(","):
            item = item.strip()
            if not item:
                continue
            name, eq, value = item.partition("=")
            name = name.strip().replace("-", "_")
            if name in IGNORED_OPTIONS or name.startswith(("x-systemd.", "x_systemd.", "x-")):
                continue
            if name in _ALIASES:
                name, fixed = _ALIASES[name]
                if fixed is not None:
                    value, eq = fixed, "="
            if name in ("bucket", "mountpoint", "extra", "ready_fd") or name not in types:
                cfg.extra[name] = value
                continue
            setattr(cfg, name, _convert(name, value if eq else "", types[name]))
