"""Pure logic: path<->key mapping, metadata encoding, error mapping, option parsing."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from s3fuse import kernel
from s3fuse.config import ConfigError, MountConfig, apply_options, split_bucket
from s3fuse.core.cache import Child, DirListing
from s3fuse.errors import StoreError, errno_for
from s3fuse.model import meta
from s3fuse.model.keys import KeyMap, NameError_, decode_name, listable_name, normalize_prefix

# ------------------------------------------------------------------ keys


@pytest.mark.parametrize(
    ("raw", "norm"),
    [("", ""), ("a", "a/"), ("/a/b/", "a/b/"), ("a//b", "a/b/")],
)
def test_normalize_prefix(raw: str, norm: str) -> None:
    assert normalize_prefix(raw) == norm


def test_prefix_rejects_dot_segments() -> None:
    with pytest.raises(ValueError):
        normalize_prefix("a/../b")


def test_keymap_with_prefix() -> None:
    km = KeyMap("data/")
    assert km.file_key("x/y.txt") == "data/x/y.txt"
    assert km.dir_prefix("") == "data/"
    assert km.dir_prefix("x") == "data/x/"
    assert km.marker_key("x") == "data/x/"
    assert km.path_of("data/x/y.txt") == "x/y.txt"
    assert km.path_of("data/x/") == "x"
    assert km.path_of("other/x") is None
    # keys POSIX cannot show never map to a path
    assert km.path_of("data/a//b") is None
    assert km.path_of("data/a/../b") is None


def test_decode_name() -> None:
    assert decode_name("ünïcode name.txt".encode()) == "ünïcode name.txt"
    for bad in (b".", b"..", b"a/b"):
        with pytest.raises(NameError_) as e:
            decode_name(bad)
        assert e.value.errno == errno.EINVAL
    with pytest.raises(NameError_) as e:
        decode_name(b"\xff\xfe")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(NameError_) as e:
        decode_name(b"x" * 256)
    assert e.value.errno == errno.ENAMETOOLONG


def test_key_length_limit() -> None:
    km = KeyMap("p/")
    km.file_key("a" * 1022)  # 1024 bytes with the prefix
    with pytest.raises(NameError_) as e:
        km.file_key("a" * 1023)
    assert e.value.errno == errno.ENAMETOOLONG
    with pytest.raises(NameError_):
        km.file_key("é" * 512)  # 1024 characters but 1026 bytes


def test_listable_name() -> None:
    assert listable_name("a b%+?#")
    assert not listable_name("")
    assert not listable_name(".")
    assert not listable_name("..")
    assert not listable_name("x" * 256)


# ------------------------------------------------------------------ metadata

DEFAULTS = meta.Defaults(uid=1000, gid=100)


def test_meta_roundtrip_s3fs_convention() -> None:
    a = meta.Attrs(stat.S_IFREG | 0o640, 12, 34, 1_700_000_000_123_456_789, 5)
    enc = meta.encode(a)
    assert enc == {
        "mode": str(stat.S_IFREG | 0o640),
        "uid": "12",
        "gid": "34",
        "mtime": "1700000000.123456789",
    }
    back = meta.decode(enc, is_dir=False, size=5, last_modified_ns=0, defaults=DEFAULTS)
    assert back == a


def test_meta_whole_seconds_as_integer() -> None:
    assert meta.encode_mtime(1_700_000_000 * 10**9) == "1700000000"
    assert meta.decode_mtime("1700000000") == 1_700_000_000 * 10**9


def test_meta_defaults_for_foreign_objects() -> None:
    a = meta.decode({}, is_dir=False, size=7, last_modified_ns=42, defaults=DEFAULTS)
    assert a == meta.Attrs(stat.S_IFREG | 0o644, 1000, 100, 42, 7)
    d = meta.decode({}, is_dir=True, size=0, last_modified_ns=42, defaults=DEFAULTS)
    assert d.mode == stat.S_IFDIR | 0o755


def test_meta_garbage_values_fall_back() -> None:
    a = meta.decode(
        {"mode": "banana", "uid": "-", "mtime": "x"},
        is_dir=False,
        size=0,
        last_modified_ns=9,
        defaults=DEFAULTS,
    )
    assert a.mode == stat.S_IFREG | 0o644 and a.uid == 1000 and a.mtime_ns == 9
    # permission bits only (another tool): the type is added
    b = meta.decode({"mode": "420"}, is_dir=False, size=0, last_modified_ns=0, defaults=DEFAULTS)
    assert b.mode == stat.S_IFREG | 0o644


def test_content_type() -> None:
    assert meta.content_type_for("a.txt") == "text/plain"
    assert meta.content_type_for("noext") == "application/octet-stream"


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("code", "err"),
    [
        ("AccessDenied", errno.EACCES),
        ("NoSuchKey", errno.ENOENT),
        ("AccessControlListNotSupported", errno.EOPNOTSUPP),
        ("InvalidStorageClass", errno.EINVAL),
        ("InvalidArgument", errno.EINVAL),
        ("KMS.NotFoundException", errno.EINVAL),
        ("EndpointUnreachable", errno.EIO),
        ("SomethingNew", errno.EIO),
    ],
)
def test_error_mapping(code: str, err: int) -> None:
    assert errno_for(code) == err
    e = StoreError(code, "msg", op="PutObject", key="k", request_id="r1")
    assert e.errno == err
    assert "PutObject" in str(e) and code in str(e) and "r1" in str(e)


# ------------------------------------------------------------------ options


def test_split_bucket() -> None:
    assert split_bucket("b") == ("b", "")
    assert split_bucket("b:x/y") == ("b", "x/y/")
    arn = "arn:aws:s3:us-east-1:123456789012:accesspoint/ap"
    assert split_bucket(arn) == (arn, "")
    assert split_bucket(arn + ":pre") == (arn, "pre/")


def test_apply_options_fstab_style() -> None:
    cfg = MountConfig(bucket="b", mountpoint="/m")
    apply_options(
        cfg,
        [
            "endpoint_url=http://127.0.0.1:1,ro,_netdev,noauto,x-systemd.after=x",
            "cache-ttl=2.5,retries=3,debug",
        ],
    )
    assert cfg.endpoint_url == "http://127.0.0.1:1"
    assert cfg.read_only is True and cfg.debug is True
    assert cfg.cache_ttl == 2.5 and cfg.retries == 3
    cfg.validate()
    apply_options(cfg, ["rw"])
    assert cfg.read_only is False


def test_bad_options_are_named() -> None:
    cfg = MountConfig(bucket="b", mountpoint="/m")
    apply_options(cfg, ["colour=blue"])
    with pytest.raises(ConfigError, match="colour"):
        cfg.validate()
    with pytest.raises(ConfigError, match="retries"):
        apply_options(MountConfig(bucket="b", mountpoint="/m"), ["retries=many"])
    cfg = MountConfig(bucket="b", mountpoint="/m", addressing_style="sideways")
    with pytest.raises(ConfigError, match="path"):
        cfg.validate()
    cfg = MountConfig(bucket="b", mountpoint="/m", attrs="fast")
    with pytest.raises(ConfigError, match="exact, auto, listing"):
        cfg.validate()


def test_attrs_option_and_its_old_name() -> None:
    cfg = MountConfig(bucket="b", mountpoint="/m")
    assert cfg.attrs == "auto"
    apply_options(cfg, ["listing_attrs"])
    assert cfg.attrs == "listing"
    apply_options(cfg, ["attrs=exact"])
    assert cfg.attrs == "exact"
    cfg.validate()


def test_mountinfo_device_lookup(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 0:21 / / rw - ext4 /dev/vda rw\n"
        "40 22 0:39 / /mnt/my\\040bucket rw,nosuid - fuse.s3fuse s3fuse:b rw\n"
        "41 22 0:40 / /mnt/other rw - fuse.sshfs host: rw\n"
        "42 22 0:45 / /mnt/my\\040bucket rw,nosuid - fuse.s3fuse s3fuse:b rw\n"
    )
    assert kernel.device_of("/mnt/my bucket", str(info)) == "0:45"  # the newest mount
    assert kernel.device_of("/mnt/other", str(info)) is None  # not ours
    assert kernel.device_of("/nowhere", str(info)) is None


def test_mount_help_names_only_real_options() -> None:
    """The -o-only list in `s3fuse mount --help` names existing options (docs kept honest)."""
    import dataclasses
    import re

    from s3fuse.cli import MOUNT_HELP

    section = MOUNT_HELP.split("-o only")[1].split("examples:")[0]
    named = set(re.findall(r"\b([a-z][a-z_]+)(?==|\b(?=[,\s]))", section))
    fields = {f.name for f in dataclasses.fields(MountConfig)}
    listed = {n for n in named if "_" in n or n in fields}
    assert {"attrs", "conflict", "sign_payload", "read_ahead_kb", "umask"} <= listed
    assert listed <= fields, listed - fields


def test_meta_cache_keeps_head_answers_and_stays_bounded(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from s3fuse.core.metacache import MetaCache
    from s3fuse.s3.types import ObjectInfo

    def info(i: int) -> ObjectInfo:
        return ObjectInfo(
            key=f"d/f{i}", size=i, etag=f"e{i}", last_modified_ns=i * 10**9,
            metadata={"mode": "33188", "uid": str(i)}, content_type="text/plain",
            version_id=None,
            extra={"StorageClass": "STANDARD_IA", "BucketKeyEnabled": True,
                   "ObjectLockRetainUntilDate": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)},
        )  # fmt: skip

    cache = MetaCache(str(tmp_path / "meta.db"), max_entries=50)
    cache.open()
    assert cache.enabled
    for i in range(80):
        cache.add(f"e{i}", 1000 + i, info(i))
    cache.close()  # writes what is queued
    again = MetaCache(str(tmp_path / "meta.db"), max_entries=50)
    again.open()
    got = again.lookup_sync([f"d/f{i}" for i in range(80)])
    assert 45 <= len(got) <= 50, "bounded: the oldest rows went"
    assert "d/f79" in got and "d/f0" not in got
    etag, listed, head = got["d/f79"]
    assert (etag, listed) == ("e79", 1079)
    assert head == info(79)  # datetimes and booleans come back as they were
    again.close()


def test_meta_cache_that_cannot_open_is_off_not_an_error(tmp_path: Path) -> None:
    from s3fuse.core.metacache import MetaCache

    cache = MetaCache(str(tmp_path / "no-such-dir" / "meta.db"))
    cache.open()
    assert not cache.enabled
    assert cache.lookup_sync(["k"]) == {}
    cache.close()


# ------------------------------------------------------------------ ETags
def test_etag_hasher_reproduces_multipart_etags() -> None:
    import hashlib

    from s3fuse.model.etag import (
        ETagCheck,
        ETagHasher,
        PartPlan,
        guessed_part_sizes,
        multipart,
        part_count,
    )

    data = os.urandom(3 * (1 << 20) + 123)
    parts = [data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20)]
    want = multipart([hashlib.md5(p).digest() for p in parts])
    assert part_count(want) == 4 and part_count(hashlib.md5(data).hexdigest()) is None
    h = ETagHasher(1 << 20)
    for i in range(0, len(data), 7777):  # chunks that straddle part boundaries
        h.update(data[i : i + 7777])
    assert h.etag() == want
    assert 1 << 20 in guessed_part_sizes(len(data), 4)
    check = ETagCheck(want, len(data))  # part size unknown: guessed
    check.update(data)
    assert check.guessed and check.result() is True
    bad = bytearray(data)
    bad[-1] ^= 1
    check = ETagCheck(want, len(data), PartPlan(1 << 20))  # part size known
    check.update(bytes(bad))
    assert not check.guessed and check.result() is False
    assert ETagCheck("opaque-kms-etag", 10).result() is None


def test_a_growing_part_plan_cuts_counts_and_checks_like_the_upload_it_describes() -> None:
    import hashlib
    import itertools

    from s3fuse.model.etag import MAX_PART, ETagCheck, ETagHasher, PartPlan, multipart

    plan = PartPlan(1000, every=2)  # 1000, 1000, 2000, 2000, 4000, ...
    assert [plan.length(n) for n in range(1, 7)] == [1000, 1000, 2000, 2000, 4000, 4000]
    # (bytes, parts): each run's end, one byte more, the empty file
    for total, parts in [(0, 1), (1, 1), (2000, 2), (2001, 3), (6000, 4), (6001, 5)]:
        assert plan.count(total) == parts, total
    data = os.urandom(9500)  # 1000 + 1000 + 2000 + 2000 + 3500
    cuts = [0, 1000, 2000, 4000, 6000, 9500]
    want = multipart([hashlib.md5(data[a:b]).digest() for a, b in itertools.pairwise(cuts)])
    h = ETagHasher(plan)
    for i in range(0, len(data), 333):  # pieces across the part boundaries
        h.update(data[i : i + 333])
    assert h.etag() == want
    assert ETagHasher(1000).etag() != want  # a fixed size cuts it otherwise
    # the metadata form: read back as the same plan; a short upload is stated as fixed
    assert PartPlan.parse(plan.encode()) == plan and plan.encode() == "1000x2/2"
    assert plan.settled(2) == PartPlan(1000) and plan.settled(3) == plan
    assert PartPlan.parse("16777216") == PartPlan(16 << 20)
    for junk in ("", "0", "abc", "5x2/", "5x3/4", "-5"):
        assert PartPlan.parse(junk) is None, junk
    check = ETagCheck(want, len(data), plan)
    check.update(data)
    assert not check.guessed and check.result() is True
    bad = bytearray(data)
    bad[5000] ^= 1
    check = ETagCheck(want, len(data), plan)
    check.update(bytes(bad))
    assert check.result() is False
    # the default streamed plan: equal parts below 1000, 5 TiB within S3's 10,000 parts
    streamed = PartPlan(16 << 20, every=1000)
    assert streamed.count(1000 * (16 << 20)) == 1000
    assert streamed.count(5 << 40) <= 10_000
    assert max(streamed.length(n) for n in range(1, 10_001)) <= MAX_PART
    assert PartPlan.growing(16 << 20, 1000) == streamed
    small = PartPlan.growing(5 << 20, 1000)  # S3's smallest parts grow sooner
    assert small.every < 1000 and small.count(5 << 40) <= 10_000


def test_block_sums_check_whole_blocks_and_find_the_bad_one() -> None:
    from s3fuse.model import blocksums as bs

    size = 3 * bs.CHUNK + 1000
    data = bytearray(os.urandom(size))
    sums = bs.ChunkSums()
    for i in range(0, size, 777_777):  # fed in pieces that do not align with chunks
        sums.update(data[i : i + 777_777])
    value = bs.encode(size, sums.finish())
    got = bs.BlockSums.parse(value, size)
    assert got is not None and got.block_size == bs.CHUNK and len(got.sums) == 4
    assert bs.BlockSums.parse(value, size + 1) is None  # the sums of another version
    assert bs.BlockSums.parse(value, size + bs.CHUNK) is None
    assert bs.BlockSums.parse("nonsense", size) is None
    assert got.span(bs.CHUNK + 5, bs.CHUNK + 6) == (bs.CHUNK, 2 * bs.CHUNK)
    assert got.span(size - 1, size) == (3 * bs.CHUNK, size)
    assert got.check(0, bytes(data)) is None
    assert got.check(2 * bs.CHUNK, bytes(data[2 * bs.CHUNK :])) is None
    data[2 * bs.CHUNK + 17] ^= 1
    assert got.check(0, bytes(data)) == 2 * bs.CHUNK
    assert got.check(3 * bs.CHUNK, bytes(data[3 * bs.CHUNK :])) is None


def test_block_sums_stay_small_for_large_objects() -> None:
    from s3fuse.model import blocksums as bs

    assert not bs.needed(bs.WHOLE_READ_MAX)  # read whole: its ETag checks it
    assert bs.needed(bs.WHOLE_READ_MAX + 1)
    size = 5 << 30
    assert bs.needed(size)
    n = -(-size // bs.CHUNK)
    value = bs.encode(size, [i for i in range(n)])
    parsed = bs.BlockSums.parse(value, size)
    assert parsed is not None and len(parsed.sums) <= bs.MAX_BLOCKS and len(value) <= 530
    assert not bs.needed(7 << 30)  # blocks past MAX_BLOCK: not read-verifiable


def test_listing_order_places_names_added_later_at_the_end() -> None:
    """DirListing.order(): the listed names in listing order, names created here since
    then after them (core/scan.py reads the scan's position from it); a removed name
    keeps its place."""
    listing = DirListing(children={n: Child(False) for n in ("a", "b", "c")})
    assert listing.order() == {"a": 0, "b": 1, "c": 2}
    listing.children["e"] = Child(False)
    listing.children["d"] = Child(False)
    del listing.children["a"]
    assert listing.order() == {"a": 0, "b": 1, "c": 2, "e": 3, "d": 4}
    assert listing.names() == ["a", "b", "c", "e", "d"]
    listing.children["b"] = Child(False, size=9)  # replaced in place: no new place
    assert listing.order()["b"] == 1 and len(listing.order()) == 5
