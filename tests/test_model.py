"""Unit tests of the pure model: the request builder (model/requests.py) and the xattr
table's names, values and conversions (model/xattrs.py). No server, no kernel."""

from __future__ import annotations

import errno
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3fuse.model import etag, meta, requests, xattrs
from s3fuse.model.etag import PartPlan
from s3fuse.model.xattrs import XattrError

FUTURE = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
PAST = "2001-01-01T00:00:00Z"
GRANT = 'id="abc"'


# ------------------------------------------------------------------ precedence
@pytest.mark.semantics("HDR-PRECEDENCE")
def test_nearest_level_wins_per_header() -> None:
    mount = {"storage_class": "STANDARD_IA", "sse": "AES256"}
    far = {"storage_class": "GLACIER", "cache_control": "max-age=1"}
    near = {"storage_class": "ONEZONE_IA"}
    own = {"cache_control": "no-cache"}
    assert requests.merged([mount, far, near, own]) == {
        "storage_class": "ONEZONE_IA",
        "sse": "AES256",
        "cache_control": "no-cache",
    }


@pytest.mark.semantics("HDR-PRECEDENCE")
def test_acl_and_grants_are_chosen_by_the_most_specific_level_alone() -> None:
    # a directory's grants replace the mount's canned ACL, and a file's canned ACL
    # replaces its directory's grants: S3 takes one or the other, never both
    mount = {"acl": "public-read"}
    directory = {"grant_read": GRANT, "grant_full_control": 'id="owner"'}
    assert requests.merged([mount, directory]) == directory
    assert requests.merged([mount, directory, {"acl": "private"}]) == {"acl": "private"}
    # a level that says nothing about access keeps what the level above chose
    assert requests.merged([mount, {"storage_class": "GLACIER"}])["acl"] == "public-read"
    # a nearer directory's ACL beats a farther one's grants, as any other header would
    near = requests.merged([directory, {"acl": "authenticated-read"}])
    assert near == {"acl": "authenticated-read"}


def test_setting_an_acl_or_a_grant_replaces_the_other_kind_on_that_level() -> None:
    values = {"grant_read": GRANT, "grant_write_acp": GRANT, "storage_class": "GLACIER"}
    assert requests.with_value(values, "acl", "private") == {
        "acl": "private",
        "storage_class": "GLACIER",
    }
    assert requests.with_value({"acl": "private"}, "grant_read", GRANT) == {"grant_read": GRANT}
    both = requests.with_value({"grant_read": GRANT}, "grant_full_control", 'id="o"')
    assert both == {"grant_read": GRANT, "grant_full_control": 'id="o"'}  # grants add up
    assert values["grant_read"] == GRANT  # the caller's dict is left alone
    assert requests.chooses_access({"grant_read": GRANT})
    assert not requests.chooses_access({"storage_class": "GLACIER"})


def test_one_level_with_both_sends_the_grants() -> None:
    p = requests.params({"acl": "private", "grant_read": GRANT})
    assert "ACL" not in p and p["GrantRead"] == GRANT


def test_file_values_guess_the_content_type_unless_a_level_sets_it() -> None:
    assert requests.file_values([{}], "a.json")["content_type"] == "application/json"
    assert requests.file_values([{"content_type": "text/x"}], "a.json")["content_type"] == "text/x"


# ------------------------------------------------------------------ requests
def test_file_put_converts_every_kind_of_value() -> None:
    values = {
        "storage_class": "GLACIER",
        "sse_bucket_key": "false",
        "object_lock_mode": "GOVERNANCE",
        "object_lock_retain_until": FUTURE,
        "tagging": "a=1",
    }
    md = {"mode": "33188"}
    p = requests.file_put(values, md)
    assert p["StorageClass"] == "GLACIER"
    assert p["BucketKeyEnabled"] is False
    assert p["ObjectLockMode"] == "GOVERNANCE"
    assert isinstance(p["ObjectLockRetainUntilDate"], datetime)
    assert p["Tagging"] == "a=1"
    assert p["Metadata"] == md and p["Metadata"] is not md


def test_an_expired_retention_is_not_sent_again() -> None:
    p = requests.params({"object_lock_mode": "COMPLIANCE", "object_lock_retain_until": PAST})
    assert "ObjectLockRetainUntilDate" not in p and "ObjectLockMode" not in p
    later = datetime(2000, 1, 1, tzinfo=UTC)
    kept = requests.params({"object_lock_mode": "COMPLIANCE", "object_lock_retain_until": PAST},
                           now=later)  # fmt: skip
    assert kept["ObjectLockMode"] == "COMPLIANCE"


def test_values_of_inverts_params_as_journaled() -> None:
    values = {
        "storage_class": "STANDARD_IA",
        "sse_bucket_key": "true",
        "object_lock_retain_until": FUTURE,
        "grant_read": GRANT,
        "content_language": "de",
    }
    p = requests.params(values)
    assert requests.values_of(p) == values
    # the journal holds dates as text: they come back unchanged
    journaled = {**p, "ObjectLockRetainUntilDate": FUTURE}
    assert requests.values_of(journaled)["object_lock_retain_until"] == FUTURE


def test_marker_takes_only_the_mounts_encryption() -> None:
    mount = {"sse": "aws:kms", "sse_kms_key_id": "k1", "storage_class": "GLACIER", "acl": "private"}
    p = requests.marker_put(mount, {"mode": "16877"})
    assert p == {
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "k1",
        "Metadata": {"mode": "16877"},
        "ContentType": meta.DIR_CONTENT_TYPE,
    }


def test_symlink_is_binary_whatever_its_name() -> None:
    p = requests.whole_put({"content_type": "text/html", "storage_class": "GLACIER"}, {})
    assert p["ContentType"] == meta.DEFAULT_CONTENT_TYPE and p["StorageClass"] == "GLACIER"


@pytest.mark.semantics("HDR-IN-PLACE")
def test_copy_restates_every_header_but_tags() -> None:
    values = {"storage_class": "GLACIER", "grant_read": GRANT, "tagging": "a=1", "sse": "AES256"}
    p = requests.copy(values, {"x": "1"}, "text/plain")
    assert p == {
        "StorageClass": "GLACIER",
        "GrantRead": GRANT,
        "ServerSideEncryption": "AES256",
        "Metadata": {"x": "1"},
        "ContentType": "text/plain",
    }
    retagged = requests.copy(values, {}, "", tagging="b=2")
    assert retagged["TaggingDirective"] == "REPLACE" and retagged["Tagging"] == "b=2"
    assert "ContentType" not in retagged
    untagged = requests.copy(values, {}, "", tagging="")
    assert untagged["TaggingDirective"] == "REPLACE" and untagged["Tagging"] == ""
    # the xattr's content type wins over the one the name suggests
    own = requests.copy({"content_type": "image/png"}, {}, "text/plain")
    assert own["ContentType"] == "image/png"


def test_sse_c_sends_no_sse_header_and_the_key_with_data_requests() -> None:
    values = {"sse": "AES256", "sse_kms_key_id": "k", "sse_bucket_key": "true", "acl": "private"}
    p = requests.copy(values, {}, "", sse_c=True)
    assert not any(k.startswith(("ServerSide", "SSEKMS", "Bucket")) for k in p)
    assert p["ACL"] == "private"
    key = bytes(range(32))
    assert requests.sse_c(key) == {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
    assert requests.sse_c_copy_source(key)["CopySourceSSECustomerKey"] == key
    assert requests.sse_c(None) == {} and requests.sse_c_copy_source(None) == {}


def test_extra_metadata_leaves_the_callers_request_alone() -> None:
    original = requests.file_put({}, {"mode": "1"})
    with_sums = requests.with_metadata(original, {meta.META_BLOCKS: "s"})
    assert original["Metadata"] == {"mode": "1"}
    assert with_sums["Metadata"] == {"mode": "1", meta.META_BLOCKS: "s"}
    created = requests.multipart_create(original, PartPlan(8 << 20))
    assert created["Metadata"][meta.META_PART_SIZE] == str(8 << 20)
    grown = requests.multipart_create(original, PartPlan(8 << 20, every=1000))
    assert grown["Metadata"][meta.META_PART_SIZE] == f"{8 << 20}x2/1000"
    assert requests.with_metadata({}, {"a": "b"}) == {"Metadata": {"a": "b"}}


def test_content_md5_is_base64() -> None:
    assert requests.content_md5(bytes.fromhex("d41d8cd98f00b204e9800998ecf8427e")) == (
        "1B2M2Y8AsgTpgAmY7PhCfg=="
    )


@pytest.mark.semantics("CONC-DETECT")
def test_conditions_of_a_conflict_detecting_upload() -> None:
    assert requests.conditions(None) == {"IfNoneMatch": "*"}
    c = requests.conditions("abc")
    assert c == {"IfMatch": '"abc"'}
    assert requests.unquoted(c) == {"IfMatch": "abc"}
    assert requests.unquoted({"IfNoneMatch": "*"}) is None
    assert requests.base_of(c) == "abc" and requests.base_of(requests.unquoted(c)) == "abc"
    assert requests.base_of({"IfNoneMatch": "*"}) is None and requests.base_of(None) is None


def test_which_etags_sum_the_bytes() -> None:
    assert etag.sums_bytes("", sse_c=False)
    assert etag.sums_bytes("AES256", sse_c=False)
    assert not etag.sums_bytes("aws:kms", sse_c=False)
    assert not etag.sums_bytes("aws:kms:dsse", sse_c=False)
    assert not etag.sums_bytes("", sse_c=True)


# ------------------------------------------------------------------ xattr names
@pytest.mark.parametrize(
    ("raw", "kind", "short"),
    [
        (b"user.s3.storage_class", "header", "storage_class"),
        (b"user.s3.etag", "readonly", "etag"),
        (b"user.Color", "meta", "color"),
    ],
)
def test_names(raw: bytes, kind: str, short: str) -> None:
    assert xattrs.parse_name(raw) == xattrs.Name(kind, short)


@pytest.mark.parametrize(
    ("raw", "err", "says"),
    [
        (b"security.selinux", errno.EOPNOTSUPP, "only user.*"),
        (b"user.s3.colour", errno.EINVAL, "known: user.s3.storage_class"),
        (b"user.bad name", errno.EINVAL, "HTTP header tokens"),
        (b"user.", errno.EINVAL, "HTTP header tokens"),
        (b"user.mode", errno.EINVAL, "reserved"),
        (b"user.s3fuse-default-acl", errno.EINVAL, "reserved"),
        (b"user.\xff", errno.EINVAL, "not UTF-8"),
    ],
)
def test_bad_names_say_why(raw: bytes, err: int, says: str) -> None:
    with pytest.raises(XattrError) as e:
        xattrs.parse_name(raw)
    assert e.value.errno == err and says in str(e.value)


# ------------------------------------------------------------------ xattr values
@pytest.mark.semantics("HDR-XATTR")
@pytest.mark.parametrize(
    ("short", "raw", "value"),
    [
        ("storage_class", b"standard_ia", "STANDARD_IA"),
        ("sse", b"aws:kms", "aws:kms"),
        ("sse_bucket_key", b"TRUE", "true"),
        ("object_lock_mode", b"governance", "GOVERNANCE"),
        ("object_lock_legal_hold", b"on", "ON"),
        ("tagging", b"a=1&b=x y", "a=1&b=x%20y"),
        ("grant_read", b'id="a" ,  uri="http://x/y"', 'id="a", uri="http://x/y"'),
        ("cache_control", b"  max-age=60 \n", "max-age=60"),
        ("object_lock_retain_until", b"2099-01-01T00:00:00", "2099-01-01T00:00:00Z"),
    ],
)
def test_values_are_normalised(short: str, raw: bytes, value: str) -> None:
    assert xattrs.validate(short, raw) == value


@pytest.mark.semantics("HDR-XATTR")
@pytest.mark.parametrize(
    ("short", "raw", "says"),
    [
        ("storage_class", b"FAST", "allowed: STANDARD, REDUCED_REDUNDANCY"),
        ("sse", b"AES", "allowed: AES256, aws:kms"),
        ("acl", b"PRIVATE", "allowed: private"),  # canned ACLs are case-sensitive
        ("sse_bucket_key", b"yes", "allowed: true, false"),
        ("content_type", b"", "empty value"),
        ("content_type", "text/\u00e9".encode(), "printable ASCII"),
        ("content_type", b"\xff", "not UTF-8"),
        ("grant_read", b"abc", 'expected id="..."'),
        ("grant_read", b'id="a",', 'expected id="..."'),
        ("tagging", b"a=1&a=2", "appears twice"),
        ("tagging", b"&".join(b"k%d=v" % i for i in range(11)), "at most 10"),
        ("tagging", b"=v", "1-128"),
        ("tagging", b"a", "URL-encoded"),
        ("object_lock_retain_until", b"tomorrow", "ISO-8601"),
        ("object_lock_retain_until", PAST.encode(), "in the past"),
    ],
)
def test_bad_values_name_what_is_allowed(short: str, raw: bytes, says: str) -> None:
    with pytest.raises(XattrError) as e:
        xattrs.validate(short, raw)
    assert e.value.errno == errno.EINVAL and says in str(e.value)


def test_user_metadata_values_and_the_size_limit() -> None:
    # plain header text stays as it is (other tools read it unchanged)
    assert xattrs.encode_meta_value(b"blue") == "blue"
    assert xattrs.encode_meta_value(b"a=b; c") == "a=b; c"
    # UTF-8 text: an RFC 2047 word, as AWS S3 answers such values itself
    assert xattrs.encode_meta_value("caf\u00e9".encode()) == "=?UTF-8?B?Y2Fmw6k=?="
    # anything else: base64 after a marker
    assert xattrs.encode_meta_value(b"\xff\x00") == "s3fuse-b64:/wA="
    # what would not come back as it went: encoded too
    for raw in (b"", b" pad", b"pad ", b"a\nb", b"s3fuse-b64:x", b"=?UTF-8?B?eA==?="):
        assert xattrs.encode_meta_value(raw) != raw.decode()
    # a word another tool (or AWS) wrote decodes, Q form included
    assert xattrs.decode_meta_value("=?UTF-8?Q?caf=C3=A9?=") == "caf\u00e9".encode()
    xattrs.check_meta_size({"k": "v" * (xattrs.META_LIMIT - 1)})
    with pytest.raises(XattrError) as e:
        xattrs.check_meta_size({"k": "v" * xattrs.META_LIMIT})
    assert e.value.errno == errno.E2BIG and "2048" in str(e.value)


# ------------------------------------------------------------------ from S3 answers
def test_head_fields_become_values() -> None:
    head = {
        "StorageClass": "GLACIER",
        "BucketKeyEnabled": True,
        "ObjectLockRetainUntilDate": datetime(2099, 1, 1, tzinfo=UTC),
        "ContentType": "",
        "ETag": '"x"',
    }
    assert xattrs.from_head(head) == {
        "storage_class": "GLACIER",
        "sse_bucket_key": "true",
        "object_lock_retain_until": "2099-01-01T00:00:00Z",
    }


def test_grants_from_an_acl_leave_out_the_owners_own_full_control() -> None:
    acl = {
        "Owner": {"ID": "me"},
        "Grants": [
            {"Grantee": {"Type": "CanonicalUser", "ID": "me"}, "Permission": "FULL_CONTROL"},
            {"Grantee": {"Type": "CanonicalUser", "ID": "you"}, "Permission": "READ"},
            {"Grantee": {"Type": "Group", "URI": "http://g/all"}, "Permission": "READ"},
            {"Grantee": {"Type": "AmazonCustomerByEmail", "EmailAddress": "a@b"},
             "Permission": "WRITE_ACP"},
            {"Grantee": {"Type": "CanonicalUser", "ID": "me"}, "Permission": "READ_ACP"},
            {"Grantee": {"Type": "Unknown"}, "Permission": "READ"},
            {"Grantee": {"Type": "CanonicalUser", "ID": "x"}, "Permission": "WRITE"},
        ],
    }  # fmt: skip
    assert xattrs.grants_from_acl(acl) == {
        "grant_read": 'id="you", uri="http://g/all"',
        "grant_write_acp": 'emailAddress="a@b"',
        "grant_read_acp": 'id="me"',
    }
    assert xattrs.grants_from_acl({}) == {}


def test_tags_and_directory_defaults_round_trip() -> None:
    tags = [{"Key": "a b", "Value": "1&2"}, {"Key": "c", "Value": ""}]
    assert xattrs.tagging_from_tags(tags) == "a%20b=1%262&c="
    values = {"storage_class": "GLACIER", "sse_kms_key_id": "k"}
    md = xattrs.dir_defaults_to_meta(values)
    assert md == {"s3fuse-default-storage-class": "GLACIER", "s3fuse-default-sse-kms-key-id": "k"}
    assert xattrs.dir_defaults_from_meta({**md, "s3fuse-default-nonsense": "x", "o": "1"}) == values


@given(st.binary(max_size=300))
def test_any_xattr_bytes_round_trip_through_header_text(raw: bytes) -> None:
    value = xattrs.encode_meta_value(raw)
    assert all(0x20 <= ord(c) <= 0x7E for c in value) and value == value.strip()
    assert xattrs.decode_meta_value(value) == raw
