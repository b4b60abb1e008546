"""Failed uploads keep data; a killed daemon's spool is recovered at the next mount."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from s3fuse.spool import journal
from tests.conftest import Mount, client
from tests.servers import MotoServer, RecordingProxy

pytestmark = pytest.mark.mounted


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[MotoServer]:
    server = MotoServer(log_path=str(tmp_path / "moto2.log")).start()
    yield server
    server.stop()


@pytest.fixture
def failing_puts(proxy: RecordingProxy) -> Iterator[RecordingProxy]:
    yield proxy
    proxy.fault = None


def journals(spool: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for p in spool.glob("*.json"):
        rec = journal.read(str(p))
        out[rec["key"]] = rec
    return out


@pytest.mark.semantics("STORE-CLOSE")
def test_server_down_at_close_fails_and_keeps_data(
    own_server: MotoServer, mount_factory: Any
) -> None:
    s3 = client(own_server.url)
    s3.create_bucket(Bucket="down-bucket")
    m: Mount = mount_factory("down-bucket", endpoint=own_server.url)
    data = os.urandom(100_000)
    fd = os.open(m / "precious.bin", os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, data)
    own_server.stop()
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno == errno.EIO
    # the data is in the spool, journalled as "closing" (upload at the next mount)
    recs = journals(m.spool)
    assert recs["precious.bin"]["state"] == "closing"
    spooled = [p for p in m.spool.glob("*.data") if p.read_bytes() == data]
    assert len(spooled) == 1
    assert "precious.bin" in m.log_text() and "EndpointUnreachable" in m.log_text()
    # and still readable through the mount
    assert (m / "precious.bin").read_bytes() == data
    # the server comes back (empty: moto keeps data in memory); unmount uploads it
    own_server.start()
    s3.create_bucket(Bucket="down-bucket")
    assert m.unmount() == 0
    assert s3.get_object(Bucket="down-bucket", Key="precious.bin")["Body"].read() == data
    assert not list(m.spool.glob("*.data"))


@pytest.mark.semantics("STORE-ATOMIC", "LOST-CRASH")
def test_sigkill_recovery(
    mount_factory: Any, bucket: str, s3: Any, failing_puts: RecordingProxy
) -> None:
    m: Mount = mount_factory(bucket)
    (m / "stored-before.txt").write_bytes(b"safe")
    failing_puts.fault = lambda r: 503 if r.method == "PUT" else None
    closed = b"closed, upload failed"
    with pytest.raises(OSError), open(m / "closed.txt", "wb") as f:
        f.write(closed)
    open_fd = os.open(m / "still-open.txt", os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(open_fd, b"half of a fi")
    m.kill()
    with contextlib.suppress(OSError):
        os.close(open_fd)  # the daemon is gone
    failing_puts.fault = None
    assert "Contents" in s3.list_objects_v2(Bucket=bucket, Prefix="stored-before")

    m2: Mount = mount_factory(bucket)
    # close() had started: uploaded by the next mount
    assert s3.get_object(Bucket=bucket, Key="closed.txt")["Body"].read() == closed
    assert (m2 / "closed.txt").read_bytes() == closed
    # still open: never uploaded (it would be partial), moved to recovered/ and reported
    with pytest.raises(s3.exceptions.ClientError):
        s3.head_object(Bucket=bucket, Key="still-open.txt")
    recovered = list((m2.spool / "recovered").rglob("*still-open.txt*"))
    assert len(recovered) == 1 and recovered[0].read_bytes() == b"half of a fi"
    log = m2.log_text()
    assert "still open when the daemon died" in log and str(recovered[0]) in log
    assert "uploaded 'closed.txt'" in log


def test_sigterm_unmounts_cleanly(mount_factory: Any, bucket: str, s3: Any) -> None:
    m: Mount = mount_factory(bucket)
    (m / "before-term.txt").write_bytes(b"x")
    assert m.proc is not None
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(30) == 0
    m.proc = None
    assert not os.path.ismount(m.path)
    assert "signal 15: unmounting" in m.log_text()
    assert s3.get_object(Bucket=bucket, Key="before-term.txt")["Body"].read() == b"x"
