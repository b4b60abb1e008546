"""Hosts sharing one bucket, without kernels (issue 14): two cores, each with its own spool
and caches, over one moto bucket, and boto3 as a third writer. What any client closed is
what the next open anywhere returns (close-to-open); what stat and lookups answer is never
older than kernel_ttl; revalidating costs a LIST per directory, not a HEAD per name."""

from __future__ import annotations

import errno
import functools
import math
import os
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3fuse.errors import FsError
from tests.core_harness import Core, run_hosts
from tests.servers import MotoServer, RecordingProxy

TTL = 0.4  # kernel_ttl of these mounts: the trust window (cache_ttl follows it)
OPTIONS = f"kernel_ttl={TTL},meta_cache=0"


def hosts(tmp_path: Path, n: int = 2) -> list[Path]:
    return [tmp_path / f"host{i}" for i in range(n)]


async def after_ttl() -> None:
    await trio.sleep(TTL + 0.1)


async def gone(c: Core, path: str) -> bool:
    try:
        await c.stat(path)
    except FsError as e:
        assert e.errno == errno.ENOENT
        return True
    return False


@pytest.mark.semantics("HOSTS-CLOSE-TO-OPEN")
def test_what_one_host_closes_the_others_next_open_returns(
    bucket: str, s3: Any, proxy: RecordingProxy, tmp_path: Path
) -> None:
    async def body(cores: list[Core]) -> None:
        a, b = cores
        await a.write("f", b"v1")
        assert await b.read("f") == b"v1"
        await a.write("f", b"version two")  # another size
        assert await b.read("f") == b"version two"  # at once: open asks S3
        await a.write("f", b"VERSION TWO")  # the same size
        assert await b.read("f") == b"VERSION TWO"
        await trio.to_thread.run_sync(
            lambda: s3.put_object(Bucket=bucket, Key="f", Body=b"from another tool")
        )
        assert await b.read("f") == b"from another tool"
        assert await a.read("f") == b"from another tool"

    run_hosts(bucket, proxy.url, hosts(tmp_path), body, OPTIONS)


@pytest.mark.semantics("HOSTS-VISIBLE")
def test_creates_deletes_and_sizes_elsewhere_are_seen_within_kernel_ttl(
    bucket: str, s3: Any, proxy: RecordingProxy, tmp_path: Path
) -> None:
    async def body(cores: list[Core]) -> None:
        a, b = cores
        await a.mkdir("d")
        await a.write("d/f", b"12345")
        assert await b.listdir("d") == ["f"]
        assert (await b.stat("d/f")).st_size == 5
        assert await gone(b, "d/g")  # "no such file" is an answer b now holds
        await a.write("d/g", b"new")
        await a.write("d/f", b"1234567")
        await a.unlink("d/f")
        await a.write("d/f", b"123")
        await after_ttl()
        assert await b.listdir("d") == ["f", "g"]
        assert (await b.stat("d/f")).st_size == 3
        assert (await b.stat("d/g")).st_size == 3
        await a.unlink("d/g")
        await after_ttl()
        assert await gone(b, "d/g")
        assert await b.listdir("d") == ["f"]

    run_hosts(bucket, proxy.url, hosts(tmp_path), body, OPTIONS)


@pytest.mark.semantics("HOSTS-VISIBLE")
def test_a_change_of_metadata_alone_elsewhere_is_seen(
    bucket: str, s3: Any, proxy: RecordingProxy, tmp_path: Path
) -> None:
    """chmod (or touch, an xattr) on another host is one CopyObject: the ETag stays, the
    LastModified moves on. LastModified has whole seconds: a change within the same second
    as the previous one is not told apart (hence the sleep)."""

    async def body(cores: list[Core]) -> None:
        a, b = cores
        await a.write("f", b"x")
        assert stat.S_IMODE((await b.stat("f")).st_mode) == 0o644
        await trio.sleep(1.1)
        await a.chmod("f", 0o600)
        await after_ttl()
        assert stat.S_IMODE((await b.stat("f")).st_mode) == 0o600
        await trio.sleep(1.1)
        md = {"mode": str(stat.S_IFREG | 0o640), "uid": "0", "gid": "0", "mtime": "1"}
        await trio.to_thread.run_sync(
            lambda: s3.copy_object(Bucket=bucket, Key="f", CopySource={"Bucket": bucket,
                                   "Key": "f"}, Metadata=md, MetadataDirective="REPLACE")
        )  # fmt: skip
        await after_ttl()
        assert stat.S_IMODE((await b.stat("f")).st_mode) == 0o640
        assert stat.S_IMODE((await a.stat("f")).st_mode) == 0o640

    run_hosts(bucket, proxy.url, hosts(tmp_path), body, OPTIONS)


@pytest.mark.semantics("HOSTS-VISIBLE")
def test_what_the_kernel_may_keep_never_outlives_the_trust_window(
    bucket: str, proxy: RecordingProxy, tmp_path: Path
) -> None:
    """The kernel keeps an answer for the timeout it is given: what is left of this
    mount's trust in the node, not a whole kernel_ttl more (a deletion elsewhere right
    after an open showed only after twice kernel_ttl)."""

    async def body(cores: list[Core]) -> None:
        a, b = cores
        await a.write("f", b"x")
        assert await b.read("f") == b"x"  # the open's HEAD: trusted from now
        await trio.sleep(TTL * 0.75)
        e = await b.stat("f")
        assert 0 <= e.attr_timeout <= TTL * 0.25 + 0.01
        assert e.entry_timeout == e.attr_timeout
        await a.unlink("f")
        await trio.sleep(e.attr_timeout)  # the kernel would ask again now
        assert await gone(b, "f")

    run_hosts(bucket, proxy.url, hosts(tmp_path), body, OPTIONS)


@pytest.mark.semantics("HOSTS-CLOSE-TO-OPEN")
def test_an_append_after_another_host_shrank_the_file_lands_at_its_end(
    bucket: str, proxy: RecordingProxy, tmp_path: Path
) -> None:
    """The append offset is the end of the file as S3 has it, not the size this host saw
    before (once: a hole of zeros between the new end and the old size)."""
    old, new = os.urandom(3000), os.urandom(1000)

    async def body(cores: list[Core]) -> None:
        a, b = cores
        await a.write("f", old)
        assert (await b.stat("f")).st_size == 3000
        await a.write("f", new)
        await b.write("f", b"+", append=True)
        assert await a.read("f") == new + b"+"

    run_hosts(bucket, proxy.url, hosts(tmp_path), body, OPTIONS)


def test_revalidating_costs_a_listing_per_directory_not_a_head_per_name(
    bucket: str, proxy: RecordingProxy, tmp_path: Path
) -> None:
    names = [f"f{i:03d}" for i in range(60)]

    async def body(cores: list[Core]) -> None:
        (a,) = cores
        await a.mkdir("d")
        proxy.clear()
        started = trio.current_time()
        for n in names:
            await a.write(f"d/{n}", b"x")
        windows = math.ceil((trio.current_time() - started) / TTL)
        # one PUT per new file and no request about its name; besides them only what an
        # expired trust window costs (the root's and d's LIST, d's marker HEAD), at most
        # once per window the writes took (a slow machine spans more windows)
        per_name = [r for r in proxy.records if r.method != "PUT" and "/d/f" in r.path]
        assert per_name == [], per_name
        assert len(proxy.requests("PUT")) == len(names)
        others = len(proxy.records) - len(names)
        assert others <= 3 * windows + 2, f"{others} requests besides the PUTs in {windows} windows"
        for n in names:
            await a.stat(f"d/{n}")
        await after_ttl()
        proxy.clear()
        for n in names:  # every answer is older than kernel_ttl now
            assert (await a.stat(f"d/{n}")).st_size == 1
        # the directory's marker answers for d itself (a listing shows no attributes of
        # a directory), once; the files are answered by one LIST of d
        assert [r.path.rsplit("/", 2)[-2:] for r in proxy.requests("HEAD")] == [["d", ""]]
        assert len(proxy.requests("GET")) == 2  # the LISTs of the root and of d

    run_hosts(bucket, proxy.url, hosts(tmp_path, 1), body, OPTIONS)


WHO = st.sampled_from(["a", "b", "tool"])
HOST_OPS = st.lists(
    st.tuples(WHO, st.sampled_from(["write", "unlink", "read"]), st.sampled_from(["x", "y"]),
              st.binary(max_size=40)),
    min_size=1, max_size=12,
)  # fmt: skip


@pytest.mark.semantics("HOSTS-CLOSE-TO-OPEN")
@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(ops=HOST_OPS)
def test_two_hosts_and_a_tool_match_a_model(
    moto: MotoServer, s3: Any, tmp_path: Path, ops: list[tuple[str, str, str, bytes]]
) -> None:
    """Random writes, unlinks and reads by two hosts and another S3 tool: every read on
    either host returns what was closed last, by whoever (kernel_ttl=0: nothing cached,
    so the rule is the open's alone)."""
    bucket = f"h-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=bucket)
    model: dict[str, bytes] = {}

    async def body(cores: list[Core]) -> None:
        host = {"a": cores[0], "b": cores[1]}
        for who, op, name, data in ops:
            if op == "write":
                if who == "tool":
                    await trio.to_thread.run_sync(
                        functools.partial(s3.put_object, Bucket=bucket, Key=name, Body=data)
                    )
                else:
                    await host[who].write(name, data)
                model[name] = data
            elif op == "unlink" and name in model:
                if who == "tool":
                    await trio.to_thread.run_sync(
                        functools.partial(s3.delete_object, Bucket=bucket, Key=name)
                    )
                else:
                    await host[who].unlink(name)
                del model[name]
            elif op == "read" and who != "tool":
                if name in model:
                    assert await host[who].read(name) == model[name]
                else:
                    assert await gone(host[who], name)

    spools = [tmp_path / f"{uuid.uuid4().hex[:8]}-{h}" for h in ("a", "b")]
    run_hosts(bucket, moto.url, spools, body, "kernel_ttl=0,meta_cache=0")
    have = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert have == set(model)
