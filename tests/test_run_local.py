"""The README's main command: scripts/run-local with no S3 configured."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from botocore.exceptions import EndpointConnectionError

from tests.conftest import client
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.mounted


def test_run_local_mounts_embedded_s3(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    port = free_port()
    env = dict(os.environ, S3FUSE_MOUNTPOINT=str(mnt), S3FUSE_LOCAL_PORT=str(port))
    out = open(tmp_path / "out.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [str(ROOT / "scripts/run-local")],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not os.path.ismount(mnt):
            assert proc.poll() is None, (tmp_path / "out.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "out.log").read_text()
            time.sleep(0.2)
        assert "README.txt" in os.listdir(mnt)
        (mnt / "hello.txt").write_bytes(b"hello\n")
        s3 = client(f"http://127.0.0.1:{port}")
        head = s3.head_object(Bucket="demo", Key="hello.txt")
        assert head["ContentLength"] == 6
        text = (tmp_path / "out.log").read_text()
        assert "IN MEMORY ONLY" in text and f"127.0.0.1:{port}" in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not os.path.ismount(mnt)
        with pytest.raises(EndpointConnectionError):
            client(f"http://127.0.0.1:{port}").list_buckets()  # server stopped too
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
        out.close()
