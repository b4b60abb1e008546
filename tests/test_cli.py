"""The command line as a user runs it: refusals with clear messages, background mode."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from s3fuse import runtime
from tests.conftest import is_mounted
from tests.servers import RecordingProxy, free_port


def s3fuse(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "s3fuse", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_help_explains() -> None:
    r = s3fuse("mount", "--help")
    assert r.returncode == 0
    for word in (
        "--endpoint-url",
        "--foreground",
        "--debug",
        "--spool-dir",
        "--read-only",
        "-o",
        "Content-MD5",
        "credentials",
    ):
        assert word in r.stdout


def test_version_and_a_top_level_help_without_internals() -> None:
    from importlib.metadata import version

    r = s3fuse("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"s3fuse {version('s3fuse')}"
    top = s3fuse("--help")
    assert top.returncode == 0
    assert "versions" in top.stdout and "status" in top.stdout
    assert "SUPPRESS" not in top.stdout and "_daemon" not in top.stdout


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("missing-bucket", "does not exist"),
        ("denied", "was denied (403): check the credentials"),
        ("unreachable", "cannot reach"),
        ("no-mountpoint", "does not exist (mkdir it first)"),
        ("bad-option", "unknown option(s): colour"),
        ("bad-value", "retries='lots'"),
    ],
)
@pytest.mark.semantics("OPS-JSON", "OPS-START")
def test_refuses_to_start(
    case: str, needle: str, tmp_path: Path, proxy: RecordingProxy, bucket: str
) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    endpoint = proxy.url
    args = [bucket, str(mnt)]
    extra: list[str] = []
    if case == "denied":
        # what a server answers HeadBucket with for rejected credentials
        proxy.fault = lambda r: 403 if r.method == "HEAD" else None
    if case == "missing-bucket":
        args[0] = "no-such-bucket-anywhere"
    elif case == "unreachable":
        endpoint = f"http://127.0.0.1:{free_port()}"
    elif case == "no-mountpoint":
        args[1] = str(tmp_path / "nope")
    elif case == "bad-option":
        extra = ["-o", "colour=blue"]
    elif case == "bad-value":
        extra = ["-o", "retries=lots"]
    try:
        for mode in (["--foreground"], []):
            r = s3fuse(
                "mount",
                *args,
                "--endpoint-url",
                endpoint,
                "--spool-dir",
                str(tmp_path / "sp"),
                "--log-file",
                str(tmp_path / "log"),
                *extra,
                *mode,
            )
            assert r.returncode != 0, r.stdout
            assert needle in r.stderr, r.stderr
            assert not os.path.ismount(mnt)
    finally:
        proxy.fault = None


def test_background_mount_and_umount(
    tmp_path: Path, proxy: RecordingProxy, bucket: str, s3: Any
) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = s3fuse(
        "mount",
        bucket,
        str(mnt),
        "-o",
        f"endpoint_url={proxy.url},cache_ttl=5",
        "--spool-dir",
        str(tmp_path / "sp"),
        "--log-file",
        str(tmp_path / "log"),
    )
    try:
        assert r.returncode == 0, r.stderr
        # returned only once the mount is ready
        assert os.path.ismount(mnt)
        assert "mounted" in r.stdout
        state = runtime.read_state(str(mnt))
        assert state is not None and runtime.pid_alive(state["pid"])
        (mnt / "bg.txt").write_bytes(b"background")
        assert s3.get_object(Bucket=bucket, Key="bg.txt")["Body"].read() == b"background"
        u = s3fuse("umount", str(mnt))
        assert u.returncode == 0, u.stderr
        assert not os.path.ismount(mnt)
        assert not runtime.pid_alive(state["pid"])
        again = s3fuse("umount", str(mnt))
        assert again.returncode != 0 and "not mounted" in again.stderr
    finally:
        state = runtime.read_state(str(mnt))
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
        if state and runtime.pid_alive(state["pid"]):
            os.kill(state["pid"], signal.SIGKILL)


@pytest.mark.semantics("OPS-START")
def test_second_mount_of_same_spool_refused(
    mount_factory: Any, bucket: str, tmp_path: Path, proxy: RecordingProxy
) -> None:
    m = mount_factory(bucket)
    other = tmp_path / "other"
    other.mkdir()
    r = s3fuse(
        "mount",
        bucket,
        str(other),
        "--endpoint-url",
        proxy.url,
        "--foreground",
        "--spool-dir",
        str(m.spool),
    )
    assert r.returncode != 0 and "in use by another s3fuse" in r.stderr
    assert not os.path.ismount(other)


def test_the_man_page_has_every_command_and_option_of_help() -> None:
    from s3fuse.cli import build_parser
    from s3fuse.manpage import commands, esc, render

    parser = build_parser()
    page = render(parser)
    subs = commands(parser)
    assert set(subs) == {"mount", "umount", "status", "versions"}
    for name, p in subs.items():
        assert f".SS {name}" in page
        for a in p._actions:
            for opt in a.option_strings:
                assert f"\\fB{esc(opt)}\\fR" in page, (name, opt)
    if shutil.which("man"):
        shown = subprocess.run(["man", "-l", "-"], input=page, capture_output=True, text=True,
                               env={**os.environ, "MANWIDTH": "100"}, timeout=60)  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert "--restore VERSION_ID" in shown.stdout and "meta_style" in shown.stdout


def test_status_draws_bars_on_a_terminal_and_plain_lines_otherwise() -> None:
    from s3fuse.status import progress

    bar = progress("big.bin", 50, 100, bars=True)
    assert "[###############---------------]  50%" in bar and "big.bin" in bar
    assert progress("big.bin", 50, 100, bars=False) == (
        "    uploading big.bin: 50 B of 100 B (50%)"
    )


@pytest.mark.mounted
def test_a_mount_left_by_a_killed_daemon_is_taken_over(
    tmp_path: Path, proxy: RecordingProxy, bucket: str, s3: Any
) -> None:
    """After SIGKILL the kernel answers ENOTCONN at the mount point until someone unmounts
    it: the next daemon (systemd's Restart=on-failure) does, and recovers the spool."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    args = ("mount", bucket, str(mnt), "-o", f"endpoint_url={proxy.url}",
            "--spool-dir", str(tmp_path / "sp"), "--log-file", str(tmp_path / "log"))  # fmt: skip
    try:
        assert s3fuse(*args).returncode == 0
        (mnt / "kept.txt").write_bytes(b"before the kill")
        state = runtime.read_state(str(mnt))
        assert state is not None
        os.kill(state["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the kernel has seen the daemon go
            try:
                os.stat(mnt)
            except OSError as e:
                assert e.errno == errno.ENOTCONN
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the mount still answers after SIGKILL of its daemon")
        again = s3fuse(*args)
        assert again.returncode == 0, again.stderr
        assert (mnt / "kept.txt").read_bytes() == b"before the kill"
        assert "daemon that died was still there" in (tmp_path / "log").read_text()
    finally:
        state = runtime.read_state(str(mnt))
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
        if state and runtime.pid_alive(state["pid"]):
            os.kill(state["pid"], signal.SIGKILL)
