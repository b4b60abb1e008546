"""scripts/install (issue 17, point 1), staged below a directory (--destdir): its own
virtualenv, the command, the mount(8) helper, the unit and the docs; a second run changes
nothing; the helper mounts a bucket without the checkout's .venv; --uninstall removes
exactly what it installed."""

from __future__ import annotations

import os
import subprocess
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import is_mounted
from tests.servers import RecordingProxy

pytestmark = pytest.mark.mounted
ROOT = Path(__file__).resolve().parent.parent


def install(dest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if ".venv" not in p)
    return subprocess.run([str(ROOT / "scripts" / "install"), "--destdir", str(dest), *args],
                          capture_output=True, text=True, timeout=900, env=env)  # fmt: skip


def test_install_mount_uninstall(
    tmp_path: Path, bucket: str, proxy: RecordingProxy, s3: Any
) -> None:
    dest = tmp_path / "root"
    first = install(dest)
    assert first.returncode == 0, first.stderr
    venv = dest / "usr/local/lib/s3fuse"
    command, helper = dest / "usr/local/bin/s3fuse", dest / "sbin/mount.s3fuse"
    unit = dest / "etc/systemd/system/s3fuse@.service"
    assert os.readlink(command) == str(venv / "bin/s3fuse")
    assert os.readlink(helper) == str(venv / "bin/mount.s3fuse")
    # a copy of the package, not this checkout (asked from elsewhere: "" on sys.path)
    site = subprocess.run(
        [str(venv / "bin/python"), "-c", "import s3fuse; print(s3fuse.__file__)"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    ).stdout  # fmt: skip
    assert site.startswith(str(venv)), site
    text = unit.read_text()
    assert text.startswith("# installed by s3fuse")
    assert "ExecStart=/usr/local/bin/s3fuse mount" in text  # the real install's path
    assert (dest / "usr/local/share/doc/s3fuse/README.md").read_text() == (
        ROOT / "README.md"
    ).read_text()
    v = subprocess.run([str(command), "--version"], capture_output=True, text=True, check=True)
    assert v.stdout.strip() == f"s3fuse {version('s3fuse')}"

    again = install(dest)
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stderr
    assert "wrote" not in again.stderr and "linked" not in again.stderr

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = dict(os.environ, PATH="/usr/bin:/bin:/usr/sbin:/sbin")
    opts = f"endpoint_url={proxy.url},spool_dir={tmp_path / 'spool'},_netdev"
    try:
        r = subprocess.run([str(helper), bucket, str(mnt), "-o", opts], capture_output=True,
                           text=True, timeout=120, env=env)  # fmt: skip
        assert r.returncode == 0, r.stderr
        (mnt / "hello.txt").write_bytes(b"installed")
        assert s3.get_object(Bucket=bucket, Key="hello.txt")["Body"].read() == b"installed"
    finally:
        if is_mounted(mnt):
            subprocess.run([str(command), "umount", str(mnt)], capture_output=True, timeout=120)
        deadline = time.monotonic() + 30
        while is_mounted(mnt) and time.monotonic() < deadline:
            time.sleep(0.2)
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)

    other = dest / "usr/local/bin/other-tool"
    other.write_text("not ours\n")
    gone = install(dest, "--uninstall")
    assert gone.returncode == 0, gone.stderr
    for p in (command, helper, unit, venv, dest / "usr/local/share/doc/s3fuse"):
        assert not os.path.lexists(p), p
    assert other.read_text() == "not ours\n"
