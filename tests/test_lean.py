"""lean.py's HeadObject and PutObject give botocore's answers and send botocore's
requests, on moto and on RGW, and leave every other case to botocore."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest
import trio

from s3fuse.errors import StoreError
from s3fuse.s3 import lean
from s3fuse.s3.client import Store
from s3fuse.s3.types import StoreConfig
from tests.conftest import Backend

KEYS = ["plain", "dir/a b+c~d%e&f=g.txt", "ü/ß/日本.bin", "x" * 300]


def store_of(server: Backend, bucket: str) -> Store:
    return Store(StoreConfig(bucket=bucket, endpoint_url=server.proxy.url, max_attempts=3))


def botocore_answer(store: Store, key: str) -> dict[str, Any]:
    r = dict(store._client.head_object(Bucket=store.bucket, Key=key))
    r.pop("ResponseMetadata")
    return r


def botocore_calls(store: Store, method: str) -> list[str]:
    """The keys of the calls of the client's method (botocore's own path) from now on."""
    sent: list[str] = []
    botocore_call = getattr(store._client, method)

    def counted(**kw: Any) -> Any:
        sent.append(kw["Key"])
        return botocore_call(**kw)

    setattr(store._client, method, counted)
    return sent


def first_fails(method: str, failed: list[str]) -> Any:
    """A proxy fault: the first request of that method gets a 503."""

    def once(r: Any) -> Any:
        if r.method == method and not failed:
            failed.append(r.path)
            return (503, "SlowDown")
        return None

    return once


def test_the_lean_head_answers_as_botocore_does(server: Backend) -> None:
    bucket = server.bucket()
    s3 = server.client()
    for key in KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=b"data")
    s3.put_object(
        Bucket=bucket, Key="rich", Body=b"rich body", ContentType="text/x-rich",
        Metadata={"mode": "33188", "uid": "1000", "Mixed-Case": "v"},
        CacheControl="max-age=60", ContentDisposition='attachment; filename="r"',
        ContentEncoding="identity", ContentLanguage="de", StorageClass="STANDARD_IA",
        Expires=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC), ServerSideEncryption="AES256",
        Tagging="a=1&b=2", WebsiteRedirectLocation="/elsewhere",
    )  # fmt: skip
    store = store_of(server, bucket)
    assert store._lean is not None
    assert store._lean.head("plain") is lean.FALLBACK, "nothing learnt before botocore's HEAD"
    botocore_answer(store, "plain")  # botocore's own HEAD shows the URL and signing
    for key in [*KEYS, "rich"]:
        server.proxy.clear()
        got = store._lean.head(key)
        assert server.proxy.requests() and len(server.proxy.requests()) == 1
        assert got == botocore_answer(store, key), key
    assert store._lean.head("missing/key") is None
    assert store.stats.requests["HeadObject"] >= 2 * (len(KEYS) + 1)


def test_store_head_goes_lean_and_errors_go_through_botocore(server: Backend) -> None:
    bucket = server.bucket()
    server.client().put_object(Bucket=bucket, Key="k", Body=b"12345", Metadata={"mode": "1"})
    store = store_of(server, bucket)
    sent = botocore_calls(store, "head_object")

    async def go() -> None:
        first = await store.head("k")  # botocore's: nothing learnt yet
        assert first is not None and first.size == 5 and first.metadata == {"mode": "1"}
        assert sent == ["k"]
        again = await store.head("k")
        assert again == first and sent == ["k"], "the second HEAD went the lean way"
        assert await store.head("nothing-here") is None and sent == ["k"]
        # one 503: the lean HEAD leaves it to botocore, which retries it
        failed: list[str] = []
        server.proxy.fault = first_fails("HEAD", failed)
        after_fault = await store.head("k")
        assert after_fault == first and failed and sent == ["k", "k"]
        # refused: botocore's error, translated as for any request
        server.proxy.fault = lambda r: (403, "AccessDenied") if r.method == "HEAD" else None
        with pytest.raises(StoreError) as e:
            await store.head("k")
        assert e.value.status == 403
        server.proxy.fault = None

    trio.run(go)


def test_no_lean_path_with_sse_c(server: Backend) -> None:
    cfg = StoreConfig(bucket=server.bucket(), endpoint_url=server.proxy.url,
                      sse_c_key=b"k" * 32)  # fmt: skip
    assert Store(cfg)._lean is None


# what differs between two signed requests by nature, and what only botocore adds
PER_REQUEST = {"authorization", "x-amz-date", "user-agent", "amz-sdk-invocation-id",
               "amz-sdk-request", "expect"}  # fmt: skip
RICH = {
    "ContentType": "text/x-rich", "Metadata": {"mode": "33188", "uid": "1000"},
    "CacheControl": "max-age=60", "ContentDisposition": 'attachment; filename="r"',
    "ContentLanguage": "de", "StorageClass": "STANDARD_IA", "Tagging": "a=1&b=2",
    "Expires": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC), "ServerSideEncryption": "AES256",
    "WebsiteRedirectLocation": "/elsewhere",
}  # fmt: skip


def put_params(body: bytes, **extra: Any) -> dict[str, Any]:
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    return {"ContentLength": len(body), "ContentMD5": md5, **extra}


def test_the_lean_put_sends_what_botocore_sends(server: Backend) -> None:
    bucket = server.bucket()
    s3 = server.client()
    store = store_of(server, bucket)
    assert store._lean is not None
    body = b"small file body"
    assert store._lean.put("k", body, put_params(body)) is lean.FALLBACK, "nothing learnt"
    for key, extra in (("plain", {}), ("dir/a b+c~d%e&f=g.txt", RICH), ("ü/日本", RICH)):
        server.proxy.clear()
        r = store._client.put_object(Bucket=bucket, Key="by-botocore", Body=body,
                                     **put_params(body, **extra))  # fmt: skip
        [theirs] = server.proxy.requests("PUT")
        server.proxy.clear()
        ours = store._lean.put(key, body, put_params(body, **extra))
        [mine] = server.proxy.requests("PUT")
        assert not isinstance(ours, lean.Fallback)
        assert ours["ETag"] == r["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
        assert ours.get("ServerSideEncryption") == r.get("ServerSideEncryption")
        assert ours["ResponseMetadata"]["HTTPHeaders"]["date"]
        assert mine.body_md5 == theirs.body_md5 == hashlib.md5(body).hexdigest()
        same = {k: v for k, v in theirs.headers.items() if k not in PER_REQUEST}
        assert {k: v for k, v in mine.headers.items() if k not in PER_REQUEST} == same
        stored = botocore_answer(store, key)
        model = botocore_answer(store, "by-botocore")
        for a in (stored, model):
            a.pop("LastModified")
        assert stored == model
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body


def test_store_put_goes_lean_and_failures_go_through_botocore(server: Backend) -> None:
    bucket = server.bucket()
    store = store_of(server, bucket)
    s3 = server.client()
    sent = botocore_calls(store, "put_object")

    async def put(key: str, body: bytes, headers: dict[str, Any] | None = None) -> str:
        md5 = hashlib.md5(body).digest()
        r = await store.put(key, body, md5=md5, size=len(body), headers=headers or {})
        return r.etag

    async def go() -> None:
        assert await put("a", b"first") == hashlib.md5(b"first").hexdigest()
        assert sent == ["a"], "botocore's: nothing learnt yet"
        assert await put("b", b"second", {"Metadata": {"mode": "33188"}})
        assert sent == ["a"], "the second PUT went the lean way"
        head = s3.head_object(Bucket=bucket, Key="b")
        assert head["Metadata"] == {"mode": "33188"} and head["ContentLength"] == 6
        # one 503: the lean PUT leaves it to botocore, which sends it again
        failed: list[str] = []
        server.proxy.fault = first_fails("PUT", failed)
        server.proxy.clear()
        assert await put("c", b"third")
        assert failed and sent == ["a", "c"] and len(server.proxy.requests("PUT")) == 2
        # refused: botocore's error, translated as for any request
        server.proxy.fault = lambda r: (403, "AccessDenied") if r.method == "PUT" else None
        with pytest.raises(StoreError) as e:
            await put("d", b"refused")
        assert e.value.code == "AccessDenied"
        server.proxy.fault = None
        assert s3.get_object(Bucket=bucket, Key="c")["Body"].read() == b"third"
        assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="d")

    trio.run(go)


def test_no_lean_path_with_other_checksums(server: Backend) -> None:
    cfg = StoreConfig(bucket=server.bucket(), endpoint_url=server.proxy.url,
                      checksum="when_supported")  # fmt: skip
    assert Store(cfg)._lean is None
