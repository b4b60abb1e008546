"""The mount itself: start-up checks, crash recovery, the trio loop, clean shutdown."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pyfuse3
import trio

from s3fuse import kernel, runtime, status
from s3fuse.config import ConfigError, MountConfig
from s3fuse.core.fs import S3Fs
from s3fuse.core.metacache import MetaCache
from s3fuse.core.nodes import FsConfig
from s3fuse.fuse.adapter import FuseOps
from s3fuse.model.keys import KeyMap
from s3fuse.model.meta import Defaults
from s3fuse.s3.client import Store
from s3fuse.spool.entry import SpoolError
from s3fuse.spool.spool import Spool
from s3fuse.startup import StartError, check_bucket, check_mountpoint, store_config
from s3fuse.tasks import Background

if TYPE_CHECKING:
    from s3fuse.metrics import MetricsServer

log = logging.getLogger("s3fuse")

STATUS_INTERVAL = 1.0  # seconds between refreshes of the state file and systemd's STATUS


def setup_logging(debug: bool, log_file: str | None = None) -> None:
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    h: logging.Handler
    if log_file:
        os.makedirs(os.path.dirname(log_file) or ".", exist_ok=True)
        h = logging.FileHandler(log_file)
    else:
        h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(h)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # botocore's debug output includes signed headers; our store logs each request instead.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def sd_notify(message: str) -> None:
    """systemd's notify protocol, when NOTIFY_SOCKET is set (Type=notify units)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(message.encode())


class Daemon:
    def __init__(self, cfg: MountConfig) -> None:
        self.cfg = cfg
        self.store = Store(store_config(cfg))
        # read-ahead, hashing of large writes, bulk HEADs: run while the mount serves
        self.tasks = Background()
        self.spool = Spool(
            cfg.spool_path(),
            self.store,
            multipart_threshold=cfg.multipart_threshold,
            stream_threshold=cfg.stream_threshold,
            part_size=cfg.part_size,
            part_concurrency=max(1, min(cfg.upload_threads, 4)),
            retry_window=cfg.retry_window,
            tasks=self.tasks,
        )
        # HEAD answers kept across mounts (attrs=auto; -o meta_cache=0 turns it off);
        # opened with the spool, before anything runs
        self.meta_cache = (
            MetaCache(os.path.join(self.spool.dir, "meta.db"))
            if cfg.attrs == "auto" and cfg.meta_cache
            else None
        )
        umask = int(cfg.umask, 8) if cfg.umask is not None else None
        defaults = Defaults(
            uid=cfg.uid if cfg.uid is not None else os.getuid(),
            gid=cfg.gid if cfg.gid is not None else os.getgid(),
            file_mode=0o644 if umask is None else 0o666 & ~umask,
            dir_mode=0o755 if umask is None else 0o777 & ~umask,
        )
        self.fs = S3Fs(
            self.store,
            self.spool,
            KeyMap(cfg.prefix),
            FsConfig(
                mount_defaults=cfg.header_defaults(),
                sse_c=cfg.sse_c_key_file is not None,
                conflict_detect=cfg.conflict == "detect",
                attrs=cfg.attrs,
                meta_style=cfg.meta_style,
                defaults=defaults,
                cache_ttl=cfg.trust_ttl(),
                revalidate_open=cfg.cache_ttl is None or cfg.cache_ttl <= cfg.kernel_ttl,
                kernel_ttl=cfg.kernel_ttl,
                read_only=cfg.read_only,
                read_ahead_kb=cfg.read_ahead_kb,
            ),
            tasks=self.tasks,
            meta_cache=self.meta_cache,
        )
        self.started = time.time()
        self.latest: dict[str, Any] = {}  # the last status snapshot (status, metrics)
        self.metrics: MetricsServer | None = None
        if cfg.metrics is not None:
            # prometheus_client costs ~30 ms of every start; only -o metrics needs it
            from s3fuse.metrics import MetricsServer as Server

            self.metrics = Server(cfg.metrics, lambda: self.latest)
        # resolved now, before the mount exists (see runtime.write_state)
        self._state_path = runtime.state_path(cfg.mountpoint)
        self._mount_path = os.path.realpath(cfg.mountpoint)
        self._unmounting = False
        self._read_ahead_given_up = False  # the window could not be set (not root)
        self._bdi: str | None = None  # the mount's bdi device (kernel.device_of)

    def open(self) -> None:
        """Take the spool directory (SpoolError when another daemon holds it) and open
        the metadata cache (one that cannot open is off, not an error)."""
        self.spool.open()
        if self.meta_cache is not None:
            self.meta_cache.open()
        if self.metrics is not None:
            try:
                self.metrics.start()
            except ConfigError:  # metrics.MetricsError: it cannot listen there
                self.close()
                raise

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.stop()
        if self.meta_cache is not None:
            self.meta_cache.close()
        self.spool.close()

    def fuse_options(self) -> set[str]:
        opts = set(pyfuse3.default_options)
        opts |= {f"fsname=s3fuse:{self.cfg.bucket}", "subtype=s3fuse"}
        if self.cfg.read_only:
            opts.add("ro")
        if self.cfg.allow_other:
            opts.add("allow_other")
        return opts

    async def run(self, ready: Any) -> None:
        rec = await self.spool.recover()
        if rec.uploaded or rec.moved or rec.kept:
            log.warning(
                "crash recovery: %d file(s) uploaded, %d moved to %s/recovered, %d not "
                "stored yet (shown by the mount, tried again later)",
                len(rec.uploaded), len(rec.moved), self.spool.dir, len(rec.kept),
            )  # fmt: skip
        await self.fs.adopt(rec.kept)
        pyfuse3.init(FuseOps(self.fs), self.cfg.mountpoint, self.fuse_options())
        unmounted_cleanly = False
        try:
            async with self.tasks.serving() as nursery:
                nursery.start_soon(self._signals)
                nursery.start_soon(self._announce, ready)
                nursery.start_soon(self._retry_failed_uploads)
                await pyfuse3.main()
                unmounted_cleanly = True
                nursery.cancel_scope.cancel()
        finally:
            sd_notify("STOPPING=1")
            with trio.CancelScope(shield=True):
                left = await self.fs.upload_pending()
            if left:
                log.error(
                    "%d file(s) could not be uploaded; they stay in %s and are uploaded "
                    "at the next mount",
                    left,
                    self.spool.dir,
                )
            pyfuse3.close(unmount=not unmounted_cleanly)
            runtime.remove_state(self._state_path)

    def _state(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "mountpoint": self.cfg.mountpoint,
            "bucket": self.cfg.bucket,
            "prefix": self.cfg.prefix,
            "endpoint": self.cfg.endpoint_url or "aws",
            "started": status.iso(self.started),
            "started_epoch": self.started,
            "spool_dir": self.spool.dir,
            "log_file": self.cfg.log_file,
            **status.snapshot(self.fs, self.spool, self.store),
        }

    async def _announce(self, ready: Any) -> None:
        # The mount is usable once a stat of it is answered (by this very loop).
        await trio.to_thread.run_sync(os.stat, self.cfg.mountpoint)
        # after the kernel's INIT handshake, which sets the window to its default
        self._read_ahead_given_up = not kernel.set_read_ahead(
            self._mount_path, self.cfg.read_ahead_kb
        )
        self._bdi = kernel.device_of(self._mount_path)  # the mount's for its whole life
        self.latest = self._state()
        runtime.write_state(self._state_path, self.latest)
        log.info(
            "mounted s3://%s/%s at %s (spool %s)",
            self.cfg.bucket,
            self.cfg.prefix,
            self.cfg.mountpoint,
            self.spool.dir,
        )
        ready()
        sd_notify("READY=1\nSTATUS=mounted")
        last = ""
        while True:  # what `s3fuse status` and systemd show, once a second
            await trio.sleep(STATUS_INTERVAL)
            self._keep_read_ahead()
            state = self.latest = self._state()
            runtime.write_state(self._state_path, state)
            line = status.status_line(state)
            if line != last:
                sd_notify(f"STATUS={line}")
                last = line

    def _keep_read_ahead(self) -> None:
        """The window set at start-up was found back at the kernel's 128 KiB once (a CI
        run, not reproduced): checked every status interval (one small sysfs read) and
        set again, logged, so sequential reads never stay at 128 KiB READs."""
        want = self.cfg.read_ahead_kb
        if want <= 0 or self._read_ahead_given_up or self._bdi is None:
            return
        have = kernel.read_ahead_of(self._bdi)  # not mountinfo every second
        if have is None or have == want:
            return
        log.info("read_ahead_kb of %s was %d, not %d: set again", self.cfg.mountpoint, have, want)
        if not kernel.set_read_ahead(self._mount_path, want):
            self._read_ahead_given_up = True  # not ours to set (no root): leave it

    async def _retry_failed_uploads(self) -> None:
        """Files whose upload failed (close() reported it) stay in the spool: they are
        tried again every retry_every seconds, so they reach S3 once it is back without
        waiting for the unmount."""
        while True:
            await trio.sleep(self.cfg.retry_every)
            if self.spool.failed:
                await self.fs.upload_pending(closed_only=True)

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            async for signum in sigs:
                if self._unmounting:
                    log.warning("second signal: stopping now; unfinished uploads stay in the spool")
                    pyfuse3.terminate()
                    return
                self._unmounting = True
                log.info(
                    "signal %d: unmounting %s (uploads in progress finish first)",
                    signum,
                    self.cfg.mountpoint,
                )
                await trio.to_thread.run_sync(self._lazy_unmount)

    def _lazy_unmount(self) -> None:
        r = subprocess.run(
            ["fusermount3", "-u", "-z", self.cfg.mountpoint],
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode != 0:
            log.warning("fusermount3 -u -z failed (%s); stopping", r.stderr.strip())
            trio.from_thread.run_sync(pyfuse3.terminate)


def run_foreground(cfg: MountConfig) -> int:
    """Mount and serve until unmounted. Reports start-up to cfg.ready_fd if given."""
    setup_logging(cfg.debug, cfg.log_file)
    ready_fd = cfg.ready_fd

    def report(line: str) -> None:
        nonlocal ready_fd
        if ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(ready_fd, (line + "\n").encode())
                os.close(ready_fd)
            ready_fd = None

    try:
        check_mountpoint(cfg.mountpoint)
        check_bucket(cfg)
        daemon = Daemon(cfg)
        try:
            daemon.open()
        except (SpoolError, ConfigError) as e:  # ConfigError: metrics.MetricsError
            raise StartError("VALIDATION_ERROR", str(e)) from None
        except OSError as e:
            raise StartError(
                "VALIDATION_ERROR", f"cannot use spool directory {daemon.spool.dir}: {e}"
            ) from None
    except StartError as e:
        if cfg.log_file:
            log.error("%s", e.message)
        if ready_fd is None:
            print(f"s3fuse: error: {e.message}", file=sys.stderr)
        report(f"ERROR {e.code} {e.message}")
        return 1
    try:
        trio.run(daemon.run, lambda: report("READY"))
    except RuntimeError as e:  # pyfuse3.init failures (mount refused by the kernel)
        msg = f"mount failed: {e}"
        log.error("%s", msg)
        report(f"ERROR MOUNT_FAILED {msg}")
        return 1
    finally:
        daemon.close()
    report("ERROR MOUNT_FAILED the daemon stopped before the mount was ready")
    return 0
