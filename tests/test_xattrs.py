"""user.s3.* extended attributes through the mount: every header of the map reaches S3."""

from __future__ import annotations

import errno
import os
import stat
import struct
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import Mount
from tests.servers import RecordingProxy

pytestmark = pytest.mark.mounted

# a valid POSIX ACL (user::rw-, group::r--, other::r--); the kernel parses it before FUSE
POSIX_ACL = struct.pack(
    "<I" + "HHI" * 3, 2, 1, 6, 0xFFFFFFFF, 4, 4, 0xFFFFFFFF, 0x20, 4, 0xFFFFFFFF
).decode("latin-1")
OWNER_GRANT = 'id="75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a"'


def requests_for(proxy: RecordingProxy, bucket: str, key: str, method: str) -> list[Any]:
    path = f"/{bucket}/{quote(key)}"
    return [r for r in proxy.requests(method) if r.key_path == path]


def write_with_xattrs(path: Path, data: bytes, attrs: dict[str, str]) -> None:
    """Set xattrs while the upload is pending: they must go into that one PutObject."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, data)
        for k, v in attrs.items():
            os.setxattr(path, k, v.encode())
    finally:
        os.close(fd)


@pytest.mark.semantics("HDR-XATTR")
def test_every_header_reaches_the_put(mnt: Mount, s3: Any, proxy: RecordingProxy) -> None:
    attrs = {
        "user.s3.storage_class": "STANDARD_IA",
        "user.s3.sse": "aws:kms",
        "user.s3.sse_kms_key_id": "my-key-id",
        "user.s3.sse_bucket_key": "true",
        "user.s3.grant_read": 'uri="http://acs.amazonaws.com/groups/global/AllUsers"',
        "user.s3.grant_full_control": OWNER_GRANT,
        "user.s3.content_type": "text/x-custom; charset=utf-8",
        "user.s3.cache_control": "max-age=60",
        "user.s3.content_disposition": 'attachment; filename="r.txt"',
        "user.s3.content_encoding": "identity",
        "user.s3.content_language": "de-CH",
        "user.s3.tagging": "team=data&tier=gold",
        "user.project": "apollo",
    }
    write_with_xattrs(mnt / "all.txt", b"payload", attrs)
    puts = requests_for(proxy, mnt.bucket, "all.txt", "PUT")
    assert len(puts) == 1, "xattrs set while pending go into the one PutObject"
    h = puts[0].headers
    assert h["x-amz-storage-class"] == "STANDARD_IA"
    assert h["x-amz-server-side-encryption"] == "aws:kms"
    assert h["x-amz-server-side-encryption-aws-kms-key-id"] == "my-key-id"
    assert h["x-amz-server-side-encryption-bucket-key-enabled"] == "true"
    assert h["x-amz-grant-read"] == attrs["user.s3.grant_read"]
    assert h["x-amz-grant-full-control"] == OWNER_GRANT
    assert h["content-type"] == "text/x-custom; charset=utf-8"
    assert h["cache-control"] == "max-age=60"
    assert h["content-disposition"] == 'attachment; filename="r.txt"'
    assert h["content-encoding"] == "identity"
    assert h["content-language"] == "de-CH"
    assert h["x-amz-tagging"] == "team=data&tier=gold"
    assert h["x-amz-meta-project"] == "apollo"
    assert "content-md5" in h
    head = s3.head_object(Bucket=mnt.bucket, Key="all.txt")
    assert head["StorageClass"] == "STANDARD_IA"
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == "my-key-id"
    assert head["ContentType"] == "text/x-custom; charset=utf-8"
    assert head["CacheControl"] == "max-age=60"
    assert head["ContentLanguage"] == "de-CH"
    assert head["Metadata"]["project"] == "apollo"
    grants = s3.get_object_acl(Bucket=mnt.bucket, Key="all.txt")["Grants"]
    assert {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"} in [
        g["Grantee"] for g in grants if g["Permission"] == "READ"
    ]
    tags = s3.get_object_tagging(Bucket=mnt.bucket, Key="all.txt")["TagSet"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("team", "data"), ("tier", "gold")]
    # what getfattr shows afterwards is what S3 holds
    assert os.getxattr(mnt / "all.txt", "user.s3.storage_class") == b"STANDARD_IA"
    assert os.getxattr(mnt / "all.txt", "user.project") == b"apollo"
    assert os.getxattr(mnt / "all.txt", "user.s3.etag") == head["ETag"].strip('"').encode()


def test_canned_acl(mnt: Mount, s3: Any, proxy: RecordingProxy) -> None:
    write_with_xattrs(mnt / "pub.txt", b"p", {"user.s3.acl": "public-read"})
    assert requests_for(proxy, mnt.bucket, "pub.txt", "PUT")[0].headers["x-amz-acl"] == (
        "public-read"
    )
    grants = s3.get_object_acl(Bucket=mnt.bucket, Key="pub.txt")["Grants"]
    assert any(g["Grantee"].get("URI", "").endswith("AllUsers") for g in grants)


def test_object_lock_headers(mount_factory: Any, s3: Any, proxy: RecordingProxy) -> None:
    bucket = "lock-" + os.urandom(6).hex()
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    m = mount_factory(bucket)
    until = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    write_with_xattrs(
        m / "locked.bin",
        b"keep me",
        {
            "user.s3.object_lock_mode": "GOVERNANCE",
            "user.s3.object_lock_retain_until": until.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "user.s3.object_lock_legal_hold": "ON",
        },
    )
    h = requests_for(proxy, bucket, "locked.bin", "PUT")[-1].headers
    assert h["x-amz-object-lock-mode"] == "GOVERNANCE"
    assert h["x-amz-object-lock-legal-hold"] == "ON"
    assert "content-md5" in h  # mandatory with object lock, always sent
    # moto 5 answers GetObjectRetention with a 500; HEAD carries the same facts
    head = s3.head_object(Bucket=bucket, Key="locked.bin")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert head["ObjectLockRetainUntilDate"] == until
    assert os.getxattr(m / "locked.bin", "user.s3.object_lock_mode") == b"GOVERNANCE"
    hold = s3.get_object_legal_hold(Bucket=bucket, Key="locked.bin")["LegalHold"]
    assert hold["Status"] == "ON"


@pytest.mark.semantics("HDR-IN-PLACE")
def test_in_place_change_keeps_every_other_header(
    mnt: Mount, s3: Any, proxy: RecordingProxy
) -> None:
    p = mnt / "stored.txt"
    write_with_xattrs(
        p,
        b"body",
        {
            "user.s3.storage_class": "ONEZONE_IA",
            "user.s3.sse": "AES256",
            "user.s3.grant_read": 'uri="http://acs.amazonaws.com/groups/global/AuthenticatedUsers"',
            "user.s3.content_type": "text/csv",
            "user.s3.tagging": "k=v",
            "user.owner": "ops",
        },
    )
    os.chmod(p, 0o600)
    proxy.clear()
    os.setxattr(p, "user.s3.cache_control", b"no-cache")
    copies = [
        r
        for r in requests_for(proxy, mnt.bucket, "stored.txt", "PUT")
        if "x-amz-copy-source" in r.headers
    ]
    assert len(copies) == 1, "applied in place with one CopyObject"
    c = copies[0].headers
    assert c["x-amz-metadata-directive"] == "REPLACE"
    assert c["x-amz-storage-class"] == "ONEZONE_IA"
    assert c["x-amz-server-side-encryption"] == "AES256"
    assert "AuthenticatedUsers" in c["x-amz-grant-read"]  # S3 does not copy ACLs
    assert c["cache-control"] == "no-cache"
    head = s3.head_object(Bucket=mnt.bucket, Key="stored.txt")
    assert head["StorageClass"] == "ONEZONE_IA"
    assert head["ContentType"] == "text/csv"
    assert head["CacheControl"] == "no-cache"
    assert head["Metadata"]["owner"] == "ops"
    assert int(head["Metadata"]["mode"]) == stat.S_IFREG | 0o600
    grants = s3.get_object_acl(Bucket=mnt.bucket, Key="stored.txt")["Grants"]
    assert any("AuthenticatedUsers" in g["Grantee"].get("URI", "") for g in grants)
    assert s3.get_object_tagging(Bucket=mnt.bucket, Key="stored.txt")["TagSet"] == [
        {"Key": "k", "Value": "v"}
    ]
    assert s3.get_object(Bucket=mnt.bucket, Key="stored.txt")["Body"].read() == b"body"
    # changing the tags replaces them (and only them)
    os.setxattr(p, "user.s3.tagging", b"k=w&n=1")
    tags = s3.get_object_tagging(Bucket=mnt.bucket, Key="stored.txt")["TagSet"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("k", "w"), ("n", "1")]
    # removing one attribute keeps the others
    os.removexattr(p, "user.owner")
    head = s3.head_object(Bucket=mnt.bucket, Key="stored.txt")
    assert "owner" not in head["Metadata"] and head["StorageClass"] == "ONEZONE_IA"
    with pytest.raises(OSError) as e:
        os.removexattr(p, "user.owner")
    assert e.value.errno == errno.ENODATA


def test_foreign_object_xattrs_show_what_s3_holds(mnt: Mount, s3: Any) -> None:
    s3.put_object(
        Bucket=mnt.bucket,
        Key="foreign.bin",
        Body=b"x",
        StorageClass="GLACIER_IR",
        Metadata={"origin": "boto3"},
        Tagging="a=b",
        ContentType="image/png",
    )
    names = set(os.listxattr(mnt / "foreign.bin"))
    assert {
        "user.s3.storage_class",
        "user.s3.tagging",
        "user.origin",
        "user.s3.etag",
        "user.s3.content_type",
    } <= names
    assert os.getxattr(mnt / "foreign.bin", "user.s3.tagging") == b"a=b"
    assert os.getxattr(mnt / "foreign.bin", "user.s3.content_type") == b"image/png"
    # a change in place keeps the tags (S3 copies them) and the storage class
    os.setxattr(mnt / "foreign.bin", "user.s3.cache_control", b"max-age=1")
    head = s3.head_object(Bucket=mnt.bucket, Key="foreign.bin")
    assert head["StorageClass"] == "GLACIER_IR" and head["Metadata"]["origin"] == "boto3"
    assert s3.get_object_tagging(Bucket=mnt.bucket, Key="foreign.bin")["TagSet"] == [
        {"Key": "a", "Value": "b"}
    ]


@pytest.mark.semantics("HDR-PRECEDENCE")
def test_inheritance_dir_then_mount_option(mount_factory: Any, bucket: str, s3: Any) -> None:
    m = mount_factory(bucket, "-o", "storage_class=REDUCED_REDUNDANCY,acl=bucket-owner-read")
    (m / "top.txt").write_bytes(b"t")
    head = s3.head_object(Bucket=bucket, Key="top.txt")
    assert head["StorageClass"] == "REDUCED_REDUNDANCY"  # mount option
    os.makedirs(m / "a/b")
    os.setxattr(m / "a", "user.s3.storage_class", b"STANDARD_IA")
    os.setxattr(m / "a", "user.s3.sse", b"aws:kms")
    os.setxattr(m / "a", "user.s3.sse_kms_key_id", b"dir-key")
    os.setxattr(m / "a/b", "user.s3.storage_class", b"GLACIER")
    # the directory defaults live on the marker object
    marker = s3.head_object(Bucket=bucket, Key="a/")
    assert marker["Metadata"]["s3fuse-default-storage-class"] == "STANDARD_IA"
    (m / "a/one.txt").write_bytes(b"1")
    (m / "a/b/two.txt").write_bytes(b"2")
    write_with_xattrs(m / "a/b/three.txt", b"3", {"user.s3.storage_class": "ONEZONE_IA"})
    one = s3.head_object(Bucket=bucket, Key="a/one.txt")
    two = s3.head_object(Bucket=bucket, Key="a/b/two.txt")
    three = s3.head_object(Bucket=bucket, Key="a/b/three.txt")
    assert one["StorageClass"] == "STANDARD_IA" and one["SSEKMSKeyId"] == "dir-key"
    assert two["StorageClass"] == "GLACIER"  # nearest directory wins
    assert two["ServerSideEncryption"] == "aws:kms" and two["SSEKMSKeyId"] == "dir-key"
    assert three["StorageClass"] == "ONEZONE_IA"  # the file's own xattr wins
    m.unmount()
    # after a remount the defaults come from the marker object
    m2 = mount_factory(bucket)
    assert os.getxattr(m2 / "a/b", "user.s3.storage_class") == b"GLACIER"
    (m2 / "a/b/four.txt").write_bytes(b"4")
    assert s3.head_object(Bucket=bucket, Key="a/b/four.txt")["StorageClass"] == "GLACIER"


@pytest.mark.parametrize(
    ("name", "value", "err"),
    [
        ("user.s3.storage_class", "FASTEST", errno.EINVAL),
        ("user.s3.sse", "rot13", errno.EINVAL),
        ("user.s3.acl", "everyone", errno.EINVAL),
        ("user.s3.grant_read", "bob", errno.EINVAL),
        ("user.s3.content_type", "text/plain\r\nX-Evil: 1", errno.EINVAL),
        ("user.s3.object_lock_retain_until", "2001-01-01T00:00:00Z", errno.EINVAL),
        ("user.s3.object_lock_mode", "FOREVER", errno.EINVAL),
        ("user.s3.tagging", "a=1&a=2", errno.EINVAL),
        ("user.s3.no_such_header", "x", errno.EINVAL),
        ("user.big", "v" * 2100, errno.E2BIG),
        ("user.s3.etag", "x", errno.EPERM),
        ("user.s3.version_id", "x", errno.EPERM),
        ("security.selinux", "x", errno.EOPNOTSUPP),
        ("trusted.x", "x", errno.EOPNOTSUPP),
        ("system.posix_acl_access", POSIX_ACL, errno.EOPNOTSUPP),
    ],
)
@pytest.mark.semantics("HDR-XATTR")
def test_invalid_values_fail_at_setxattr(
    mnt: Mount, s3: Any, name: str, value: str, err: int
) -> None:
    p = mnt / "v.txt"
    p.write_bytes(b"v")
    etag = s3.head_object(Bucket=mnt.bucket, Key="v.txt")["ETag"]
    with pytest.raises(OSError) as e:
        os.setxattr(p, name, value.encode("latin-1" if name.startswith("system.") else "utf-8"))
    assert e.value.errno == err
    assert s3.head_object(Bucket=mnt.bucket, Key="v.txt")["ETag"] == etag  # nothing changed


def test_namespaces_s3_cannot_hold_are_unsupported(mnt: Mount) -> None:
    """EOPNOTSUPP, not ENODATA: ls -l and cp -a then stop asking for each file."""
    p = mnt / "n.txt"
    p.write_bytes(b"n")
    for name in ("security.selinux", "system.posix_acl_access", "trusted.x"):
        with pytest.raises(OSError) as e:
            os.getxattr(p, name)
        assert e.value.errno == errno.EOPNOTSUPP, name
    with pytest.raises(OSError) as e:
        os.getxattr(p, "user.s3.no_such_header")
    assert e.value.errno == errno.ENODATA


@pytest.mark.semantics("HDR-XATTR")
def test_invalid_value_log_names_allowed_values(mnt: Mount) -> None:
    p = mnt / "log.txt"
    p.write_bytes(b"x")
    with pytest.raises(OSError):
        os.setxattr(p, "user.s3.storage_class", b"FASTEST")
    log = mnt.log_text()
    assert "FASTEST" in log and "STANDARD_IA" in log and "GLACIER_IR" in log


def test_user_metadata_limit_counts_everything(mnt: Mount) -> None:
    p = mnt / "meta.txt"
    p.write_bytes(b"x")
    os.setxattr(p, "user.a", b"v" * 1900)  # fits with mode/uid/gid/mtime
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.b", b"v" * 200)
    assert e.value.errno == errno.E2BIG
    assert os.getxattr(p, "user.a") == b"v" * 1900


def test_versioned_bucket_version_id(mount_factory: Any, s3: Any) -> None:
    bucket = "ver-" + os.urandom(6).hex()
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    m = mount_factory(bucket)
    p = m / "v.txt"
    with open(p, "wb") as f:
        f.write(b"one")
    first = os.getxattr(p, "user.s3.version_id").decode()
    with open(p, "wb") as f:
        f.write(b"two")
    second = os.getxattr(p, "user.s3.version_id").decode()
    versions = s3.list_object_versions(Bucket=bucket, Prefix="v.txt")["Versions"]
    assert {v["VersionId"] for v in versions} == {first, second}
    latest = next(v for v in versions if v["IsLatest"])
    assert latest["VersionId"] == second


def test_acl_not_supported_becomes_eopnotsupp(mnt: Mount, proxy: RecordingProxy) -> None:
    proxy.fault = lambda r: (
        (400, "AccessControlListNotSupported") if "x-amz-acl" in r.headers else None
    )
    try:
        with pytest.raises(OSError) as e:
            write_with_xattrs(mnt / "acl.txt", b"a", {"user.s3.acl": "public-read"})
        assert e.value.errno == errno.EOPNOTSUPP
    finally:
        proxy.fault = None
    assert "ACLs are disabled on this bucket" in mnt.log_text()


@pytest.mark.parametrize(
    ("code", "status", "err"),
    [
        ("InvalidStorageClass", 400, errno.EINVAL),
        ("InvalidArgument", 400, errno.EINVAL),
        ("KMS.NotFoundException", 400, errno.EINVAL),
        ("AccessDenied", 403, errno.EACCES),
    ],
)
@pytest.mark.semantics("STORE-CLOSE")
def test_s3_rejections_at_close_are_actionable(
    mnt: Mount, proxy: RecordingProxy, code: str, status: int, err: int
) -> None:
    proxy.fault = lambda r: (status, code) if r.method == "PUT" else None
    try:
        with pytest.raises(OSError) as e:
            write_with_xattrs(mnt / "rej.txt", b"r", {"user.s3.storage_class": "GLACIER"})
        assert e.value.errno == err
    finally:
        proxy.fault = None
    log = mnt.log_text()
    assert code in log and "rej.txt" in log and "injected by the test proxy" in log


def test_sse_c_key_file(
    mount_factory: Any, bucket: str, proxy: RecordingProxy, tmp_path: Path
) -> None:
    key = os.urandom(32)
    kf = tmp_path / "sse-c.key"
    kf.write_bytes(key)
    os.chmod(kf, 0o644)
    m = mount_factory(bucket, "-o", f"sse_c_key_file={kf}", start=False)
    with pytest.raises(RuntimeError, match="chmod 600"):
        m.start()
    os.chmod(kf, 0o600)
    m = mount_factory(bucket, "-o", f"sse_c_key_file={kf}", root=tmp_path / "second")
    proxy.clear()
    (m / "secret.txt").write_bytes(b"classified")
    assert (m / "secret.txt").read_bytes() == b"classified"
    os.chmod(m / "secret.txt", 0o640)  # an in-place copy needs the key twice
    reqs = [
        r
        for method in ("PUT", "HEAD", "GET")
        for r in requests_for(proxy, bucket, "secret.txt", method)
    ]
    assert {r.method for r in reqs} >= {"PUT", "GET"}
    copies = [r for r in reqs if "x-amz-copy-source" in r.headers]
    assert copies
    assert (
        copies[0].headers["x-amz-copy-source-server-side-encryption-customer-algorithm"] == "AES256"
    )
    for r in reqs:
        assert r.headers.get("x-amz-server-side-encryption-customer-algorithm") == "AES256", r
        assert "x-amz-server-side-encryption-customer-key-md5" in r.headers
    with pytest.raises(OSError) as e:
        os.setxattr(m / "secret.txt", "user.s3.sse", b"AES256")
    assert e.value.errno == errno.EINVAL
    m.unmount()
    m2 = mount_factory(bucket, "-o", f"sse_c_key_file={kf}", root=tmp_path / "third")
    proxy.clear()
    assert os.stat(m2 / "secret.txt").st_size == 10
    heads = requests_for(proxy, bucket, "secret.txt", "HEAD")
    assert heads and all(
        h.headers["x-amz-server-side-encryption-customer-algorithm"] == "AES256" for h in heads
    )
    m2.unmount()
    import base64

    log = m.log_text() + m2.log_text()
    for form in (key.hex(), base64.b64encode(key).decode()):
        assert form not in log


def test_cp_a_and_getfattr_dump(mnt: Mount, tmp_path: Path) -> None:
    src = tmp_path / "local.txt"
    src.write_bytes(b"local")
    os.setxattr(src, "user.s3.storage_class", b"STANDARD_IA")
    subprocess.run(["cp", "-a", str(src), str(mnt / "copied.txt")], check=True)
    out = subprocess.run(
        ["getfattr", "-d", "-m", "user.s3.storage_class", str(mnt / "copied.txt")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert 'user.s3.storage_class="STANDARD_IA"' in out
