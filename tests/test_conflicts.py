"""conflict=detect beyond uploads (issue 14, point 3), on the core without a kernel: a
rename, unlink or chmod on one host never overwrites or deletes a version another
client wrote since this host saw the file. On moto (which checks DeleteObject If-Match,
not the CopyObject conditions) and on Ceph RGW (which checks neither: every check is a
HEAD first); and against a server that refuses the headers outright."""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from s3fuse.core.types import RENAME_NOREPLACE
from s3fuse.s3 import conditions
from tests.conftest import Backend
from tests.core_harness import CTX, Core, body_of, on_host, refused, run_hosts
from tests.servers import Recorded, first

# a long trust window: the host acts on the version it saw, not on what S3 holds now
OPTIONS = "kernel_ttl=30,conflict=detect,meta_cache=0"
THEIRS = b"written by another client"


def test_the_probe_finds_which_conditions_the_server_checks(
    server: Backend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What moto 5.2 and Ceph RGW 16.2 do (a change here means SEMANTICS.md's table of
    servers needs one too); the probe leaves no object behind and warns once."""
    expected = {
        "moto": {conditions.DELETE_IF_MATCH: conditions.HONOURED},
        "rgw": {},
    }[server.name]

    async def body(c: Core, bucket: str, tool: Any) -> None:
        support = await c.fs.guard.support()
        assert support.verdicts == {
            k: expected.get(k, conditions.IGNORED) for k in conditions.KINDS
        }
        assert await c.fs.guard.support() is support  # once per mount
        assert tool.list_objects_v2(Bucket=bucket).get("KeyCount") == 0

    with caplog.at_level(logging.WARNING, "s3fuse.core.guard"):
        on_host(server, tmp_path, body, OPTIONS)
    warnings = [r for r in caplog.records if "does not check" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "CopyObject If-None-Match (ignored)" in warnings[0].getMessage()


@pytest.mark.semantics("HOSTS-DETECT")
def test_unlink_leaves_a_version_written_elsewhere(server: Backend, tmp_path: Path) -> None:
    async def body(c: Core, bucket: str, tool: Any) -> None:
        await c.write("f", b"ours")
        tool.put_object(Bucket=bucket, Key="f", Body=THEIRS)
        await refused(errno.ESTALE, c.unlink("f"))
        assert body_of(tool, bucket, "f") == THEIRS
        assert await c.read("f") == THEIRS  # the host knows their version now
        await c.unlink("f")  # ... and may delete that one
        assert body_of(tool, bucket, "f") is None

    on_host(server, tmp_path, body, OPTIONS)


@pytest.mark.semantics("HOSTS-DETECT")
def test_rename_leaves_a_source_replaced_elsewhere(server: Backend, tmp_path: Path) -> None:
    async def body(c: Core, bucket: str, tool: Any) -> None:
        await c.write("f", b"ours")
        tool.put_object(Bucket=bucket, Key="f", Body=THEIRS)
        await refused(errno.ESTALE, c.rename("f", "g"))
        assert body_of(tool, bucket, "f") == THEIRS
        assert body_of(tool, bucket, "g") is None
        assert await c.read("f") == THEIRS
        tool.delete_object(Bucket=bucket, Key="f")
        await refused(errno.ENOENT, c.rename("f", "g"))  # deleted elsewhere
        assert body_of(tool, bucket, "g") is None

    on_host(server, tmp_path, body, OPTIONS)


@pytest.mark.semantics("HOSTS-DETECT")
def test_rename_does_not_overwrite_a_name_created_elsewhere(
    server: Backend, tmp_path: Path
) -> None:
    async def body(c: Core, bucket: str, tool: Any) -> None:
        await c.write("f", b"ours")
        await refused(errno.ENOENT, c.stat("g"))  # this host holds "no g" for its ttl
        tool.put_object(Bucket=bucket, Key="g", Body=THEIRS)
        await refused(errno.EEXIST, c.rename("f", "g"))
        assert body_of(tool, bucket, "g") == THEIRS
        assert body_of(tool, bucket, "f") == b"ours"
        assert await c.read("g") == THEIRS  # known now: a rename over it is a choice
        await refused(errno.EEXIST, c.rename("f", "g", RENAME_NOREPLACE))
        await refused(errno.ENOENT, c.stat("h"))
        tool.put_object(Bucket=bucket, Key="h", Body=THEIRS)
        await refused(errno.EEXIST, c.rename("f", "h", RENAME_NOREPLACE))
        assert body_of(tool, bucket, "h") == THEIRS
        await c.rename("f", "g")
        assert body_of(tool, bucket, "g") == b"ours"

    on_host(server, tmp_path, body, OPTIONS)


@pytest.mark.semantics("HOSTS-DETECT")
def test_rename_over_a_file_replaced_elsewhere_is_refused(server: Backend, tmp_path: Path) -> None:
    async def body(c: Core, bucket: str, tool: Any) -> None:
        await c.write("f", b"ours")
        await c.write("g", b"the old g")
        tool.put_object(Bucket=bucket, Key="g", Body=THEIRS)
        await refused(errno.ESTALE, c.rename("f", "g"))
        assert body_of(tool, bucket, "g") == THEIRS
        assert body_of(tool, bucket, "f") == b"ours"
        await c.rename("f", "g")  # over the version it knows now: goes
        assert body_of(tool, bucket, "g") == b"ours"
        assert body_of(tool, bucket, "f") is None

    on_host(server, tmp_path, body, OPTIONS)


@pytest.mark.semantics("HOSTS-DETECT")
def test_chmod_applies_only_to_the_version_this_host_saw(server: Backend, tmp_path: Path) -> None:
    async def body(c: Core, bucket: str, tool: Any) -> None:
        await c.write("f", b"ours")
        md = {"mode": str(stat.S_IFREG | 0o600), "uid": "0", "gid": "0", "mtime": "1"}
        tool.put_object(Bucket=bucket, Key="f", Body=THEIRS, Metadata=md)
        await refused(errno.ESTALE, c.chmod("f", 0o640))
        head = tool.head_object(Bucket=bucket, Key="f")
        assert head["ContentLength"] == len(THEIRS)
        assert head["Metadata"]["mode"] == md["mode"]
        assert stat.S_IMODE((await c.stat("f")).st_mode) == 0o600
        await c.chmod("f", 0o640)
        assert tool.head_object(Bucket=bucket, Key="f")["Metadata"]["mode"] == str(
            stat.S_IFREG | 0o640
        )
        assert body_of(tool, bucket, "f") == THEIRS

    on_host(server, tmp_path, body, OPTIONS)


def write_at(
    tool: Any, bucket: str, key: str, after: Callable[[Recorded], bool] | None = None
) -> Callable[[Recorded], None]:
    """A proxy fault that is a race: the first request for key (after one that `after`
    accepts has gone by) waits until the tool has written THEIRS to key."""
    seen: list[str] = [] if after else ["after"]

    def fault(r: Recorded) -> None:
        if not seen and after is not None and after(r):
            seen.append("after")
        elif seen == ["after"] and r.key_path.endswith(f"/{bucket}/{key}"):
            seen.append(r.method)
            tool.put_object(Bucket=bucket, Key=key, Body=THEIRS)

    return fault


def is_copy(r: Recorded) -> bool:
    return r.method == "PUT" and "x-amz-copy-source" in r.headers


@pytest.mark.semantics("HOSTS-DETECT")
def test_a_version_written_between_a_renames_copy_and_delete_stays(
    server: Backend, tmp_path: Path
) -> None:
    """The race inside a rename: the copy holds ours under the new name, the old name
    keeps theirs (not deleted)."""

    async def body(c: Core, bucket: str, tool: Any) -> None:
        await c.write("f", b"ours")
        await c.fs.guard.support()
        server.proxy.fault = write_at(tool, bucket, "f", is_copy)
        await c.rename("f", "g")
        server.proxy.fault = None
        assert body_of(tool, bucket, "g") == b"ours"
        assert body_of(tool, bucket, "f") == THEIRS
        assert await c.read("f") == THEIRS
        assert await c.read("g") == b"ours"

    on_host(server, tmp_path, body, OPTIONS)


@pytest.mark.semantics("HOSTS-DETECT")
def test_a_delete_the_server_checks_never_removes_a_version_written_just_before(
    moto_backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the server checks DeleteObject If-Match (moto; AWS), even a write that lands
    right before the DELETE is safe; with a HEAD first (RGW) that is the window left."""
    for k, v in moto_backend.env.items():
        monkeypatch.setenv(k, v)

    async def body(c: Core, bucket: str, tool: Any) -> None:
        await c.write("f", b"ours")
        assert (await c.fs.guard.support()).honours(conditions.DELETE_IF_MATCH)
        moto_backend.proxy.fault = write_at(tool, bucket, "f")
        try:
            await refused(errno.ESTALE, c.unlink("f"))
        finally:
            moto_backend.proxy.fault = None
        assert body_of(tool, bucket, "f") == THEIRS

    on_host(moto_backend, tmp_path, body, OPTIONS)


def refuse_conditions(r: Recorded) -> tuple[int, str] | None:
    """A server that implements none of the copy and delete conditions, and says so."""
    conds = ("if-match", "if-none-match", "x-amz-copy-source-if-match")
    if (r.method == "DELETE" or is_copy(r)) and any(h in r.headers for h in conds):
        return 501, "NotImplemented"
    return None


def test_a_server_that_refuses_the_conditions_gets_checks_by_head_and_one_warning(
    moto_backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    for k, v in moto_backend.env.items():
        monkeypatch.setenv(k, v)

    async def body(c: Core, bucket: str, tool: Any) -> None:
        await c.write("f", b"ours")
        await c.write("h", b"another")
        await c.fs.guard.support()  # honoured: DeleteObject If-Match
        moto_backend.proxy.fault = refuse_conditions  # ... refused from now on
        try:
            await c.unlink("h")
            await c.rename("f", "g")
            await c.chmod("g", 0o600)
            tool.put_object(Bucket=bucket, Key="g", Body=THEIRS)
            await refused(errno.ESTALE, c.unlink("g"))  # checked by a HEAD instead
        finally:
            moto_backend.proxy.fault = None
        assert body_of(tool, bucket, "h") is None
        assert body_of(tool, bucket, "f") is None
        assert body_of(tool, bucket, "g") == THEIRS

    with caplog.at_level(logging.WARNING, "s3fuse.core.guard"):
        on_host(moto_backend, tmp_path, body, OPTIONS)
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusals == [
        "conflict=detect: the server refused DeleteObject If-Match (NotImplemented); sent "
        "without it from now on"
    ]
    # and a server that refuses them from the start is probed once, warned about once
    moto_backend.proxy.fault = refuse_conditions
    caplog.clear()
    try:

        async def probed(c: Core, bucket: str, tool: Any) -> None:
            support = await c.fs.guard.support()
            assert set(support.verdicts.values()) == {conditions.REJECTED}
            await c.write("f", b"ours")
            await c.rename("f", "g")
            await c.unlink("g")
            assert tool.list_objects_v2(Bucket=bucket).get("KeyCount") == 0

        with caplog.at_level(logging.WARNING, "s3fuse.core.guard"):
            on_host(moto_backend, tmp_path / "second", probed, OPTIONS)
    finally:
        moto_backend.proxy.fault = None
    assert len([r for r in caplog.records if "does not check" in r.getMessage()]) == 1


@pytest.mark.semantics("HOSTS-DETECT", "CONC-DETECT")
def test_two_hosts_racing_lose_no_update(server: Backend, tmp_path: Path) -> None:
    """Host b overwrites what host a is about to rename, chmod, unlink or overwrite: b's
    version always stays, a's own unsaved bytes go to a's recovered/."""
    bucket = server.bucket()
    tool = server.client()
    spools = [tmp_path / "a", tmp_path / "b"]

    async def body(cores: list[Core]) -> None:
        a, b = cores
        await a.write("f", b"a's first")
        assert await b.read("f") == b"a's first"
        await b.write("f", b"b's 1")
        await refused(errno.ESTALE, a.rename("f", "g"))
        await b.write("f", b"b's 2")
        await refused(errno.ESTALE, a.chmod("f", 0o600))
        await b.write("f", b"b's 3")
        await refused(errno.ESTALE, a.unlink("f"))
        assert await a.read("f") == b"b's 3"  # a knows b's version now
        opened = await a.fs.open(await a.ino("f"), os.O_WRONLY | os.O_TRUNC, CTX)
        try:
            await b.write("f", b"b's 4")  # while a has it open
            await a.fs.write(opened.fh, 0, b"a's second")
            await refused(errno.ESTALE, a.fs.flush(opened.fh))
        finally:
            await a.fs.release(opened.fh)
        assert body_of(tool, bucket, "f") == b"b's 4"
        assert body_of(tool, bucket, "g") is None
        assert await a.read("f") == b"b's 4"

    endpoints = [server.host_proxy(i).url for i in range(2)]  # RGW: two gateways
    run_hosts(bucket, endpoints, spools, body, OPTIONS)
    kept = [p.read_bytes() for p in (spools[0] / "recovered").rglob("*") if p.is_file()]
    assert kept == [b"a's second"]


@pytest.mark.semantics("CONC-DETECT")
def test_an_upload_corrupted_in_transit_replaces_its_own_bad_copy(
    moto_backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto does not check Content-MD5: a body flipped on the way is stored (the ETag
    tells). The next try is conditional on that ETag, the upload's own version: it
    replaces it. (It used to keep the original condition, fail it, call the bad copy
    another writer's, leave it in S3 and move the good bytes to recovered/; the soak
    with --late-delivery -o conflict=detect read those bad copies.)"""
    for k, v in moto_backend.env.items():
        monkeypatch.setenv(k, v)

    async def body(c: Core, bucket: str, tool: Any) -> None:
        for data in (b"a new file", b"its second version"):  # If-None-Match, then If-Match
            hits: list[str] = []
            moto_backend.proxy.fault = first(
                "PUT", lambda r: r.key_path == f"/{bucket}/f", "flip", hits
            )
            try:
                await c.write("f", data)
            finally:
                moto_backend.proxy.fault = None
            assert hits, "the fault did not fire"
            assert body_of(tool, bucket, "f") == data
            assert await c.read("f") == data

    on_host(moto_backend, tmp_path, body, OPTIONS)
    assert not (tmp_path / "host" / "recovered").exists()
