"""What a mount checks before it starts (the mount point, the bucket and the credentials,
the SSE-C key file), apart from the FUSE side: errors say what failed and what to do;
StartError.code is one of the stable JSON error codes."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess

from s3fuse import kernel
from s3fuse.config import ConfigError, MountConfig, load_sse_c_key
from s3fuse.errors import NO_BUCKET, StoreError
from s3fuse.s3.client import Store
from s3fuse.s3.types import StoreConfig

log = logging.getLogger(__name__)


class StartError(Exception):
    """The mount cannot start; ``code`` is one of the stable JSON error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def store_config(cfg: MountConfig, *, attempts: int | None = None) -> StoreConfig:
    try:
        key = load_sse_c_key(cfg.sse_c_key_file) if cfg.sse_c_key_file else None
    except ConfigError as e:
        raise StartError("VALIDATION_ERROR", str(e)) from None
    return StoreConfig(
        sse_c_key=key,
        bucket=cfg.bucket,
        endpoint_url=cfg.endpoint_url,
        region=cfg.region,
        profile=cfg.profile,
        addressing_style=cfg.addressing_style,
        checksum=cfg.checksum,
        sign_payload=cfg.sign_payload,
        max_attempts=attempts or cfg.retries,
        connect_timeout=cfg.connect_timeout,
        read_timeout=cfg.read_timeout,
        upload_threads=cfg.upload_threads,
    )


def left_by_a_dead_daemon(path: str) -> bool:
    """path is an s3fuse mount whose daemon died (SIGKILL, OOM): the kernel answers
    ENOTCONN there until it is unmounted. Judged by the mount table (fuse.s3fuse at that
    very path), never by the path alone: other file systems are never touched."""
    try:
        os.stat(path)
        return False
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            return False
    # resolved without stat()ing the dead mount itself
    where = os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(path))),
                         os.path.basename(os.path.abspath(path)))  # fmt: skip
    with contextlib.suppress(OSError):
        return kernel.device_of(where) is not None
    return False


def check_mountpoint(path: str) -> None:
    if left_by_a_dead_daemon(path):
        # what Restart=on-failure meets after a crash: the next daemon takes its place
        r = subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True, text=True)
        if r.returncode != 0:
            raise StartError("VALIDATION_ERROR", f"{path} is the mount of an s3fuse daemon that "
                             f"died, and it could not be unmounted ({r.stderr.strip()}): run "
                             f"fusermount3 -u -z {path}")  # fmt: skip
        log.warning("%s: the mount of an s3fuse daemon that died was still there; unmounted "
                    "it (its spool is recovered now)", path)  # fmt: skip
    if not os.path.exists(path):
        raise StartError("VALIDATION_ERROR", f"mountpoint {path} does not exist (mkdir it first)")
    if not os.path.isdir(path):
        raise StartError("VALIDATION_ERROR", f"mountpoint {path} is not a directory")
    if os.path.ismount(path):
        raise StartError(
            "VALIDATION_ERROR",
            f"{path} is already a mount point (unmount it first: s3fuse umount " + path + ")",
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise StartError("VALIDATION_ERROR", f"no write access to mountpoint {path}")
    if not os.path.exists("/dev/fuse"):
        raise StartError(
            "VALIDATION_ERROR",
            "/dev/fuse is missing: load the fuse module (modprobe fuse) or install fuse3",
        )


def check_bucket(cfg: MountConfig) -> None:
    """HeadBucket with few retries, turned into a message that says what to do."""
    where = cfg.endpoint_url or "AWS S3"
    try:
        Store(store_config(cfg, attempts=min(cfg.retries, 2))).check_bucket_sync()
    except StoreError as e:
        if e.code in NO_BUCKET:
            raise StartError(
                "NO_SUCH_BUCKET",
                f"bucket {cfg.bucket!r} does not exist at "
                f"{where}: create it first or check the name and --region",
            ) from None
        if e.code in (
            "AccessDenied",
            "403",
            "Forbidden",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "NoCredentials",
            "ExpiredToken",
        ):
            raise StartError(
                "ACCESS_DENIED",
                f"access to bucket {cfg.bucket!r} at {where} was "
                f"denied ({e.code}): check the credentials (AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY, --profile, ~/.aws/credentials) and the "
                "bucket policy",
            ) from None
        if e.code == "EndpointUnreachable":
            raise StartError(
                "ENDPOINT_UNREACHABLE",
                f"cannot reach {where}: is the server running and --endpoint-url right?",
            ) from None
        raise StartError(
            e.code, f"checking bucket {cfg.bucket!r} at {where} failed: {e.code}: {e.message}"
        ) from None
