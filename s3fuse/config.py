"""Mount configuration: one dataclass, filled from command-line flags and ``-o`` options.

Every long option also works as ``-o name=value`` (fstab style); flags as ``-o name``.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
from dataclasses import dataclass, field, fields
from typing import Any

from s3fuse.model.keys import normalize_prefix
from s3fuse.model.meta import STYLES
from s3fuse.model.xattrs import XattrError, validate

HEADER_OPTIONS = ("storage_class", "sse", "sse_kms_key_id", "sse_bucket_key", "acl")


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
ATTRS = ("exact", "auto", "listing")


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
    # how long listings, attributes and "no such file" are trusted without asking S3; None:
    # kernel_ttl (what another host changed is seen within it). Longer only for a mount
    # that is the only writer of its prefix.
    cache_ttl: float | None = None
    kernel_ttl: float = 1.0
    checksum: str = "when_required"
    sign_payload: bool = False  # SHA-256 of bodies in the signature (see README)
    retries: int = 5
    retry_window: float = 30.0  # seconds an upload keeps retrying an unreachable/5xx server
    retry_every: float = 60.0  # seconds between new tries of uploads whose close() failed
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    upload_threads: int = 8
    allow_other: bool = False
    uid: int | None = None  # owner of objects without s3fuse metadata
    gid: int | None = None
    umask: str | None = None  # octal; permissions of objects without s3fuse metadata
    default_permissions: bool = True  # the kernel checks mode/uid/gid (always on)
    # header defaults of every PutObject (user.s3.* xattrs of files and directories win)
    storage_class: str | None = None
    sse: str | None = None
    sse_kms_key_id: str | None = None
    sse_bucket_key: str | None = None
    acl: str | None = None
    sse_c_key_file: str | None = None  # SSE-C: a 0600 file with the 256-bit key
    # exact | auto | listing: where ls -l's attributes come from (README, Performance)
    attrs: str = "auto"
    meta_cache: bool = True  # attrs=auto keeps HEAD answers in the spool dir (metacache.py)
    conflict: str = "off"  # off (last writer wins, as S3) | detect (conditional writes)
    meta_style: str = "s3fs"  # s3fs | aws | both: which attribute keys uploads carry
    metrics: str | None = None  # [ADDR:]PORT: serve Prometheus metrics there (metrics.py)
    # bytes; files this large use multipart upload. Measured (benchmarks/RESULTS.md): one
    # PutObject of 256 MiB ran at 128 MB/s, multipart at 60-72 MB/s on the same server
    read_ahead_kb: int = 1024  # the kernel's read-ahead for the mount (0: its default)
    multipart_threshold: int = 512 << 20
    part_size: int = 16 << 20
    # bytes; a file written in sequence past this size sends its parts while it is
    # written (a multipart upload completed at close); 0: only at close. Default: the
    # files that go up in parts anyway (measured in benchmarks/RESULTS.md: below that a
    # single PutObject at close is faster here, the streamed parts cost a copy too)
    stream_threshold: int = 512 << 20
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

    def trust_ttl(self) -> float:
        return self.kernel_ttl if self.cache_ttl is None else self.cache_ttl

    def validate(self) -> None:
        if not self.bucket:
            raise ConfigError("no bucket given (BUCKET[:PREFIX])")
        if self.addressing_style not in ADDRESSING:
            raise ConfigError(
                f"addressing_style={self.addressing_style!r}: allowed {', '.join(ADDRESSING)}"
            )
        if self.checksum not in CHECKSUM:
            raise ConfigError(f"checksum={self.checksum!r}: allowed {', '.join(CHECKSUM)}")
        if self.trust_ttl() < 0 or self.kernel_ttl < 0:
            raise ConfigError("cache_ttl and kernel_ttl must be >= 0")
        if self.retries < 1:
            raise ConfigError("retries must be >= 1 (1 = no retry)")
        if self.retry_every <= 0:
            raise ConfigError("retry_every must be > 0 (seconds)")
        if self.upload_threads < 1:
            raise ConfigError("upload_threads must be >= 1")
        if self.endpoint_url and not self.endpoint_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"endpoint_url must start with http:// or https://: {self.endpoint_url!r}"
            )
        if self.umask is not None:
            try:
                if not 0 <= int(self.umask, 8) <= 0o777:
                    raise ValueError
            except ValueError:
                raise ConfigError(f"umask={self.umask!r}: expected octal, e.g. 022") from None
        if self.attrs not in ATTRS:
            raise ConfigError(f"attrs={self.attrs!r}: allowed {', '.join(ATTRS)}")
        if self.conflict not in ("off", "detect"):
            raise ConfigError(f"conflict={self.conflict!r}: allowed off, detect")
        if self.metrics is not None:
            parse_address(self.metrics)
        if self.meta_style not in STYLES:
            raise ConfigError(
                f"meta_style={self.meta_style!r}: allowed {', '.join(STYLES)} "
                "(s3fs: x-amz-meta-mode/uid/gid, aws: x-amz-meta-file-*)"
            )
        if self.part_size < 5 << 20:
            raise ConfigError("part_size must be at least 5242880 (5 MiB, S3's minimum)")
        if self.multipart_threshold < self.part_size:
            raise ConfigError("multipart_threshold must be at least part_size")
        if 0 < self.stream_threshold < self.part_size:
            raise ConfigError("stream_threshold must be 0 (off) or at least part_size")
        self.header_defaults()
        if self.sse_c_key_file and (self.sse or self.sse_kms_key_id):
            raise ConfigError("sse_c_key_file cannot be combined with sse/sse_kms_key_id")
        if self.extra:
            names = ", ".join(sorted(self.extra))
            raise ConfigError(f"unknown option(s): {names} (see 's3fuse mount --help')")

    def header_defaults(self) -> dict[str, str]:
        """Mount options that set PutObject headers, validated like the xattrs."""
        out = {}
        for name in HEADER_OPTIONS:
            value = getattr(self, name)
            if value is None:
                continue
            try:
                out[name] = validate(name, str(value).encode())
            except XattrError as e:
                raise ConfigError(f"option {name}: {e}") from None
        return out


def load_sse_c_key(path: str) -> bytes:
    """The SSE-C key: 32 raw bytes, or 32 bytes as base64 or hex text. The file must not
    be readable by others (mode 0600 or stricter)."""
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            raw = f.read(200)
    except OSError as e:
        raise ConfigError(f"cannot read sse_c_key_file {path}: {e.strerror}") from None
    if st.st_mode & 0o077:
        raise ConfigError(
            f"sse_c_key_file {path} has mode {st.st_mode & 0o777:o}: it must be readable by "
            f"its owner only (chmod 600 {path})"
        )
    if len(raw) == 32:
        return raw
    text = raw.strip()
    for decode in (lambda t: base64.b64decode(t, validate=True), bytes.fromhex):
        try:
            key = decode(text.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            continue
        if len(key) == 32:
            return bytes(key)
    raise ConfigError(
        f"sse_c_key_file {path}: expected a 256-bit key (32 bytes raw, base64 or hex); "
        "e.g. head -c 32 /dev/urandom > key && chmod 600 key"
    )


def split_bucket(spec: str) -> tuple[str, str]:
    """'bucket', 'bucket:some/prefix', or an access point ARN with an optional ':prefix'."""
    if spec.startswith("arn:"):
        parts = spec.split(":")
        return ":".join(parts[:6]), normalize_prefix(":".join(parts[6:]))
    bucket, _, prefix = spec.partition(":")
    return bucket, normalize_prefix(prefix)


_ALIASES = {
    "ro": ("read_only", "1"),
    "rw": ("read_only", "0"),
    "endpoint": ("endpoint_url", None),
    "listing_attrs": ("attrs", "listing"),  # the name of attrs=listing before attrs=
}


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


def parse_address(value: str) -> tuple[str, int]:
    """'PORT', 'ADDR:PORT' or '[V6ADDR]:PORT' -> (address, port); ConfigError if not."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"metrics={value!r}: the address must be an IP address, e.g. "
                           "metrics=127.0.0.1:9464") from None  # fmt: skip
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"metrics={value!r}: the port must be 1-65535, e.g. "
                           "metrics=127.0.0.1:9464") from None  # fmt: skip
    return host, int(port)


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
