"""Command line: ``s3fuse mount``, ``umount``, ``status``, ``versions`` and the
``mount.s3fuse`` helper."""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from s3fuse import runtime
from s3fuse.config import ConfigError, MountConfig, apply_options, split_bucket

DAEMON = "_daemon"  # how `mount` starts its background daemon; not a user command

MOUNT_HELP = """\
Mount an S3 bucket (or a prefix of it) as a directory. Every file closed through the mount
becomes one S3 object, stored with a single PutObject that carries Content-MD5; close()
returns only after S3 acknowledged it (and fails with an errno if it did not).

Credentials come from the standard AWS chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
AWS_PROFILE or --profile, ~/.aws/credentials and ~/.aws/config, web identity, instance roles.

Every long option also works as -o name=value (fstab style), e.g.
  -o endpoint_url=http://127.0.0.1:9000,region=us-east-1,ro
Options for mount(8) itself (noauto, _netdev, nofail, x-systemd.*, ...) are ignored.

-o only (details in README.md, "Options"):
  attrs=auto|exact|listing   ls -l attributes: a sample per directory decides (auto),
                             a HEAD per entry (exact), listings only (listing)
  meta_cache=1|0             attrs=auto keeps HEAD answers across mounts (spool dir)
  conflict=off|detect        conditional writes: never overwrite another writer's update
  metrics=[ADDR:]PORT        Prometheus metrics at http://ADDR:PORT/metrics (ADDR: 127.0.0.1)
  meta_style=s3fs|aws|both   attribute keys written: s3fs-fuse's x-amz-meta-mode/uid/gid,
                             AWS's x-amz-meta-file-permissions/owner/group, or both
  storage_class=, sse=, sse_kms_key_id=, sse_bucket_key=, acl=, sse_c_key_file=
                             header defaults of every upload (xattrs user.s3.* win)
  uid=, gid=, umask=, allow_other, kernel_ttl=, read_ahead_kb=, sign_payload,
  multipart_threshold=, part_size=, retry_window=, connect_timeout=, read_timeout=
  stream_threshold=536870912 a file written in sequence past this many bytes uploads its
                             parts while it is written (0: everything at close)
  retry_every=60             seconds between new tries of uploads whose close() failed

examples:
  s3fuse mount my-bucket /mnt/s3
  s3fuse mount my-bucket:backups/host1 /mnt/backup --endpoint-url http://127.0.0.1:9000
  s3fuse mount my-bucket /mnt/s3 --foreground --debug
"""


def _add_mount_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("bucket", metavar="BUCKET[:PREFIX]", help="bucket, optionally with a key prefix")
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing directory")
    p.add_argument(
        "-o",
        dest="options",
        action="append",
        default=[],
        metavar="OPT[,OPT...]",
        help="options as name=value, comma separated (all long options below)",
    )
    p.add_argument(
        "--endpoint-url", help="S3-compatible endpoint, e.g. http://127.0.0.1:9000 (default: AWS)"
    )
    p.add_argument("--region", help="region (default: from the AWS config, else us-east-1)")
    p.add_argument("--profile", help="AWS profile name from ~/.aws/config")
    p.add_argument(
        "--addressing-style",
        choices=("auto", "path", "virtual"),
        help="bucket in the path or in the host name (default: auto)",
    )
    p.add_argument(
        "-f",
        "--foreground",
        action="store_true",
        default=None,
        help="stay in the foreground and log to stderr (default: run in the "
        "background once the mount is ready)",
    )
    p.add_argument(
        "-d",
        "--debug",
        action="store_true",
        default=None,
        help="log every S3 request and file-system decision",
    )
    p.add_argument(
        "--spool-dir",
        help="local write buffer (default: "
        "~/.cache/s3fuse/BUCKET-ID, one per endpoint/bucket/prefix)",
    )
    p.add_argument(
        "--log-file", help="log file in the background (default: ~/.local/state/s3fuse/ID.log)"
    )
    p.add_argument("--read-only", action="store_true", default=None, help="mount read-only (-o ro)")
    p.add_argument(
        "--cache-ttl",
        type=float,
        help="seconds listings, attributes and 'no such file' are trusted before S3 is "
        "asked again (default: kernel_ttl, 1 s, so what other hosts change shows within "
        "it; longer only for a mount that is the only writer of its prefix: open() then "
        "trusts it too; 0 = always ask)",
    )
    p.add_argument(
        "--retries",
        type=int,
        help="attempts per S3 request, with exponential backoff and jitter (default 5)",
    )
    p.add_argument(
        "--checksum",
        choices=("when_required", "when_supported"),
        help="botocore request_checksum_calculation: when_required sends plain "
        "Content-MD5 only, which every S3 server accepts (default)",
    )
    p.add_argument("--upload-threads", type=int, help="parallel uploads/downloads (default 8)")


def _config(ns: argparse.Namespace) -> MountConfig:
    bucket, prefix = split_bucket(ns.bucket)
    cfg = MountConfig(bucket=bucket, prefix=prefix, mountpoint=os.path.abspath(ns.mountpoint))
    apply_options(cfg, ns.options)
    for name in (
        "endpoint_url",
        "region",
        "profile",
        "addressing_style",
        "foreground",
        "debug",
        "spool_dir",
        "log_file",
        "read_only",
        "cache_ttl",
        "retries",
        "checksum",
        "upload_threads",
    ):
        value = getattr(ns, name, None)
        if value is not None:
            setattr(cfg, name, value)
    if cfg.spool_dir:
        cfg.spool_dir = os.path.abspath(cfg.spool_dir)
    if cfg.log_file:
        cfg.log_file = os.path.abspath(cfg.log_file)
    cfg.validate()
    return cfg


def _fail(code: str, message: str) -> int:
    print(f"s3fuse: error: {message}", file=sys.stderr)
    return 1


def cmd_mount(cfg: MountConfig) -> int:
    if cfg.foreground:
        from s3fuse.daemon import run_foreground

        return run_foreground(cfg)
    return spawn_background(cfg)


def spawn_background(cfg: MountConfig, timeout: float = 300.0) -> int:
    """Start the daemon detached and return once the mount is ready (or has failed)."""
    log_file = cfg.log_file or cfg.default_log_file()
    os.makedirs(os.path.dirname(log_file), exist_ok=True)
    r, w = os.pipe()
    child_cfg = dict(cfg.__dict__, foreground=True, ready_fd=w, log_file=log_file)
    with open(log_file, "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "s3fuse", DAEMON],
            stdin=subprocess.PIPE,
            stdout=logf,
            stderr=logf,
            pass_fds=(w,),
            start_new_session=True,
            cwd="/",
        )
    os.close(w)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(child_cfg).encode())
    proc.stdin.close()
    deadline = time.monotonic() + timeout
    line = b""
    while time.monotonic() < deadline and not line.endswith(b"\n"):
        ready, _, _ = select.select([r], [], [], 0.5)
        if ready:
            chunk = os.read(r, 4096)
            if not chunk:
                break
            line += chunk
    os.close(r)
    text = line.decode(errors="replace").strip()
    if text == "READY":
        print(
            f"s3fuse: mounted s3://{cfg.bucket}/{cfg.prefix} at {cfg.mountpoint} "
            f"(pid {proc.pid}, log {log_file})"
        )
        return 0
    if text.startswith("ERROR "):
        _, code, message = [*text.split(" ", 2), ""][:3]
        return _fail(code, message)
    if proc.poll() is None:
        proc.terminate()
        return _fail("TIMEOUT", f"the mount was not ready after {timeout:.0f}s; see {log_file}")
    return _fail(
        "MOUNT_FAILED",
        f"the daemon exited ({proc.returncode}) before the mount was ready; see {log_file}",
    )


def cmd_umount(mountpoint: str, timeout: float) -> int:
    mountpoint = os.path.abspath(mountpoint)
    state = runtime.read_state(mountpoint)
    if not os.path.ismount(mountpoint):
        runtime.remove_state(runtime.state_path(mountpoint))
        return _fail("NOT_MOUNTED", f"{mountpoint} is not mounted")
    r = subprocess.run(
        ["fusermount3", "-u", mountpoint], capture_output=True, text=True, check=False
    )
    if r.returncode != 0:
        msg = r.stderr.strip() or f"fusermount3 exited {r.returncode}"
        return _fail("UMOUNT_FAILED", f"{msg} (files still open? see: fuser -vm {mountpoint})")
    if state and isinstance(state.get("pid"), int):
        pid = state["pid"]
        deadline = time.monotonic() + timeout
        while runtime.pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if runtime.pid_alive(pid):
            return _fail(
                "TIMEOUT",
                f"unmounted, but the daemon (pid {pid}) is still finishing "
                f"uploads after {timeout:.0f}s",
            )
    print(f"s3fuse: unmounted {mountpoint}")
    return 0


def _envelope(ok: bool, data: Any = None, code: str = "", message: str = "") -> str:
    if ok:
        return json.dumps({"success": True, "data": data}, indent=2)
    return json.dumps({"success": False, "error": {"code": code, "message": message}}, indent=2)


def cmd_status(mountpoint: str | None, as_json: bool) -> int:
    from s3fuse.status import format_text

    mounts = []
    for state in runtime.all_states():
        mp = state.get("mountpoint", "")
        if not runtime.pid_alive(int(state.get("pid", 0))) or not os.path.ismount(mp):
            continue  # left over by a daemon that died
        state["uptime_seconds"] = round(time.time() - float(state.get("started_epoch", 0)), 1)
        mounts.append(state)
    if mountpoint is not None:
        want = os.path.realpath(mountpoint)
        mounts = [m for m in mounts if os.path.realpath(m["mountpoint"]) == want]
        if not mounts:
            msg = f"{want} is not an s3fuse mount (of this user)"
            if as_json:
                print(_envelope(False, code="NOT_MOUNTED", message=msg))
                return 1
            return _fail("NOT_MOUNTED", msg)
    if as_json:
        print(_envelope(True, {"mounts": mounts}))
    elif not mounts:
        print("no s3fuse mounts")
    else:
        bars = sys.stdout.isatty()  # plain lines for pipes and scripts
        print("\n\n".join(format_text(m, bars=bars) for m in mounts))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s3fuse",
        description="S3 bucket as a directory: each closed file is one atomic, "
        "MD5-checked PutObject.",
    )
    parser.add_argument("--version", action="version", version=f"s3fuse {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    pm = sub.add_parser(
        "mount",
        help="mount a bucket",
        description=MOUNT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_mount_args(pm)
    pu = sub.add_parser(
        "umount",
        help="unmount, after pending uploads finished",
        description="Unmount an s3fuse mount and wait until its daemon has "
        "finished every pending upload and exited.",
    )
    pu.add_argument("mountpoint", metavar="MOUNTPOINT")
    pu.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds to wait for the daemon to exit (default 600)",
    )
    ps = sub.add_parser(
        "status",
        help="what each s3fuse mount is doing",
        description="Show every s3fuse mount (or one): bucket, endpoint, "
        "uptime, uploads pending / in flight (with progress) / failed, bytes "
        "uploaded, S3 requests and errors by code, spool size.",
    )
    ps.add_argument("mountpoint", nargs="?", metavar="MOUNTPOINT")
    ps.add_argument(
        "--json",
        action="store_true",
        help='machine-readable: {"success": true, "data": {"mounts": [...]}}',
    )
    pv = sub.add_parser(
        "versions",
        help="older versions of a file (versioned buckets)",
        description="List the versions S3 keeps of a file on an s3fuse mount (the bucket "
        "must have versioning enabled), current first; with --restore, copy one of them "
        "(server-side) to a new file beside it, NAME.vYYYYmmddTHHMMSSZ-ID, and print its "
        "path. The current version is never changed. Works through the mount: no "
        "credentials needed.",
    )
    pv.add_argument("file", metavar="FILE")
    pv.add_argument("--restore", metavar="VERSION_ID", help="the version to copy out")
    pv.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("s3fuse")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list == [DAEMON]:
        from s3fuse.daemon import run_foreground

        data = json.loads(sys.stdin.read())
        return run_foreground(MountConfig(**data))
    args = build_parser().parse_args(args_list)
    if args.command == "umount":
        return cmd_umount(args.mountpoint, args.timeout)
    if args.command == "status":
        return cmd_status(args.mountpoint, args.json)
    if args.command == "versions":
        from s3fuse.versions_cmd import cmd_versions

        return cmd_versions(args.file, args.restore, args.json)
    try:
        cfg = _config(args)
    except ConfigError as e:
        return _fail("VALIDATION_ERROR", str(e))
    return cmd_mount(cfg)


def mount_helper(argv: Sequence[str] | None = None) -> int:
    """mount(8) calls /sbin/mount.s3fuse SPEC DIR [-sfnv] [-o OPTIONS]."""
    args = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] = []
    opts: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-o" and i + 1 < len(args):
            opts += ["-o", args[i + 1]]
            i += 2
            continue
        if a in ("-s", "-f", "-n", "-v"):  # sloppy, fake, no-mtab, verbose: mount's own
            i += 1
            continue
        rest.append(a)
        i += 1
    if len(rest) != 2:
        print("usage: mount.s3fuse BUCKET[:PREFIX] MOUNTPOINT [-o options]", file=sys.stderr)
        return 1
    return main(["mount", rest[0], rest[1], *opts])


if __name__ == "__main__":
    sys.exit(main())
