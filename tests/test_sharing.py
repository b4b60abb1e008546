"""Two mounts of one bucket (two hosts) and boto3 as a third writer, through the kernel,
on moto and on Ceph RGW (issue 14): what one closes the other's next open returns, at
once; stat answers follow within kernel_ttl; old bytes are never served after the change
was visible. On RGW the two hosts go through two gateways of one cluster (the
deployment of a fleet on a distributed store). The same rules without a kernel:
tests/test_hosts.py."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Backend

pytestmark = pytest.mark.mounted

SLACK = 1.5  # kernel_ttl (1 s) and a little


def two_hosts(mount_factory: Any, backend: Backend, bucket: str, tmp_path: Path) -> Any:
    """Host a through the first gateway, host b through the second where there is one."""
    hosts = [
        mount_factory(
            bucket,
            endpoint=backend.host_proxy(i).url,
            env=backend.env,
            root=tmp_path / f"host-{name}",
        )
        for i, name in enumerate("ab")
    ]
    return hosts


@pytest.mark.semantics("HOSTS-CLOSE-TO-OPEN")
def test_the_next_open_on_another_host_returns_what_was_closed(
    mount_factory: Any, backend: Backend, tmp_path: Path
) -> None:
    bucket = backend.bucket()
    a, b = two_hosts(mount_factory, backend, bucket, tmp_path)
    (a / "f").write_bytes(b"v1")
    assert (b / "f").read_bytes() == b"v1"
    for new in (b"version two, longer", b"VERSION TWO, LONGER", b"short"):
        (a / "f").write_bytes(new)  # closed on host a
        assert (b / "f").read_bytes() == new  # host b's very next open
    backend.client().put_object(Bucket=bucket, Key="f", Body=b"written by another tool")
    assert (b / "f").read_bytes() == b"written by another tool"
    assert (a / "f").read_bytes() == b"written by another tool"
    (a / "f").write_bytes(b"0123")  # shorter than what host b saw last
    with open(b / "f", "ab") as f:  # an append lands at the end of the current version
        f.write(b"+")
    assert (a / "f").read_bytes() == b"0123+"
    if backend.second is not None:  # host b's reads and writes went through gateway 2
        assert backend.second.requests("GET") and backend.second.requests("PUT")


@pytest.mark.semantics("HOSTS-VISIBLE")
def test_creates_deletes_and_metadata_elsewhere_show_within_kernel_ttl(
    mount_factory: Any, backend: Backend, tmp_path: Path
) -> None:
    bucket = backend.bucket()
    a, b = two_hosts(mount_factory, backend, bucket, tmp_path)
    (a / "d").mkdir()
    (a / "d" / "f").write_bytes(b"12345")
    assert sorted(os.listdir(b / "d")) == ["f"]
    assert not (b / "d" / "g").exists()
    (a / "d" / "g").write_bytes(b"new")
    (a / "d" / "f").write_bytes(b"1234567")
    time.sleep(SLACK)
    assert sorted(os.listdir(b / "d")) == ["f", "g"]
    assert (b / "d" / "f").stat().st_size == 7
    os.chmod(a / "d" / "f", 0o600)  # one CopyObject: same ETag, new LastModified
    time.sleep(SLACK)
    assert stat.S_IMODE((b / "d" / "f").stat().st_mode) == 0o600
    os.unlink(a / "d" / "g")
    time.sleep(SLACK)
    assert not (b / "d" / "g").exists()
    assert sorted(os.listdir(b / "d")) == ["f"]
