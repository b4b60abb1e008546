"""Two mounts of one bucket (two hosts) and boto3 as a third writer, through the kernel,
on moto and on Ceph RGW (issue 14): what one closes the other's next open returns, at
once; stat answers follow within kernel_ttl; old bytes are never served after the change
was visible. On RGW the two hosts go through two gateways of one cluster (the
deployment of a fleet on a distributed store). The same rules without a kernel:
tests/test_hosts.py."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
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


def s3fuse_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "s3fuse", *args], capture_output=True,
                          text=True, timeout=60)  # fmt: skip


@pytest.mark.semantics("HOSTS-VERSIONS")
def test_a_version_another_host_overwrote_is_got_back_with_the_cli(
    mount_factory: Any, backend: Backend, tmp_path: Path
) -> None:
    """Through the kernel: `s3fuse versions` (getfattr underneath) lists what S3 keeps,
    `--restore` copies host a's version out beside host b's, which stays current."""
    bucket = backend.bucket()
    backend.client().put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    a, b = two_hosts(mount_factory, backend, bucket, tmp_path)
    (a / "report.txt").write_bytes(b"host a's report")
    (b / "report.txt").write_bytes(b"host b overwrote it")
    listed = s3fuse_cli("versions", str(a / "report.txt"), "--json")
    assert listed.returncode == 0, listed.stderr
    versions = json.loads(listed.stdout)["data"]["versions"]
    assert [v["current"] for v in versions] == [True, False]
    assert versions[1]["size"] == len(b"host a's report")
    table = s3fuse_cli("versions", str(a / "report.txt"))
    assert versions[1]["version_id"] in table.stdout and "(current)" in table.stdout
    restored = s3fuse_cli("versions", str(a / "report.txt"), "--restore",
                          versions[1]["version_id"])  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    new = Path(restored.stdout.strip())
    assert new.parent == a.path and new.read_bytes() == b"host a's report"
    assert (a / "report.txt").read_bytes() == b"host b overwrote it"
    time.sleep(SLACK)
    assert (b / new.name).read_bytes() == b"host a's report"  # the other host sees it too
    again = s3fuse_cli("versions", str(a / "report.txt"), "--restore", versions[1]["version_id"])
    assert again.returncode == 1 and "restored before" in again.stderr
    plain = backend.bucket()  # no versioning
    c = mount_factory(plain, endpoint=backend.proxy.url, env=backend.env, root=tmp_path / "c")
    (c / "f").write_bytes(b"x")
    none = s3fuse_cli("versions", str(c / "f"))
    assert none.returncode == 1 and "versioning is off" in none.stderr
