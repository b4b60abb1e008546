"""A versioned bucket's older versions, read-only (issue 14, point 4), on the core without
a kernel, on moto and Ceph RGW: user.s3.versions lists them, user.s3.restore copies one to
a new file beside the current one; what another host overwrote can be got back."""

from __future__ import annotations

import errno
import stat
from pathlib import Path
from typing import Any

import pytest

from s3fuse.core.versions import parse, restored_name
from tests.conftest import Backend
from tests.core_harness import CTX, Core, body_of, on_host, refused

OPTIONS = "kernel_ttl=0.4,meta_cache=0"


def versioned(tool: Any, bucket: str) -> None:
    tool.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


@pytest.mark.semantics("HOSTS-VERSIONS")
def test_what_another_client_overwrote_can_be_listed_and_restored(
    server: Backend, tmp_path: Path
) -> None:
    async def body(c: Core, bucket: str, tool: Any) -> None:
        await c.mkdir("d")
        await c.write("d/f", b"ours, the first")
        await c.chmod("d/f", 0o600)
        ours = tool.head_object(Bucket=bucket, Key="d/f")
        tool.put_object(Bucket=bucket, Key="d/f", Body=b"theirs")  # another host
        assert await c.read("d/f") == b"theirs"
        listed = parse((await c.getxattr("d/f", "user.s3.versions")).decode())
        assert [v.latest for v in listed] == [True, False, False]  # upload, chmod, theirs
        assert listed[0].size == len(b"theirs")
        assert listed[1].version_id == ours["VersionId"]
        assert listed[1].etag == ours["ETag"].strip('"')
        assert listed[1].last_modified_ns >= listed[2].last_modified_ns

        await c.setxattr("d/f", "user.s3.restore", ours["VersionId"].encode())
        name = restored_name("f", listed[1])
        assert name.startswith("f.v") and ours["VersionId"][:4] in name
        assert await c.listdir("d") == sorted(["f", name])
        assert await c.read(f"d/{name}") == b"ours, the first"
        assert stat.S_IMODE((await c.stat(f"d/{name}")).st_mode) == 0o600  # metadata kept
        assert await c.read("d/f") == b"theirs"  # the current version stays
        assert body_of(tool, bucket, f"d/{name}") == b"ours, the first"

        await refused(errno.EEXIST, c.setxattr("d/f", "user.s3.restore",
                                               ours["VersionId"].encode()))  # fmt: skip
        await refused(errno.EINVAL, c.setxattr("d/f", "user.s3.restore", b"no-such-version"))
        await refused(errno.EPERM, c.setxattr("d/f", "user.s3.versions", b"x"))
        names = await c.fs.listxattr(await c.ino("d/f"), CTX)
        assert b"user.s3.versions" not in names and b"user.s3.restore" not in names

    on_host(server, tmp_path, body, OPTIONS, setup=versioned)


def test_a_bucket_without_versioning_has_nothing_to_list(server: Backend, tmp_path: Path) -> None:
    async def body(c: Core, bucket: str, tool: Any) -> None:
        await c.write("f", b"x")
        await refused(errno.ENODATA, c.getxattr("f", "user.s3.versions"))
        await refused(errno.EOPNOTSUPP, c.setxattr("f", "user.s3.restore", b"null"))

    on_host(server, tmp_path, body, OPTIONS)
