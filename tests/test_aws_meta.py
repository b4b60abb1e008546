"""POSIX attributes in AWS's keys (issue 17, point 4): objects written by Amazon's file
interfaces over S3 (FSx for Lustre, File Cache, DataSync) carry x-amz-meta-file-permissions
(octal st_mode), -file-owner and -file-group; s3fuse shows them, and -o meta_style chooses
which keys it writes."""

from __future__ import annotations

import logging
import stat
from pathlib import Path
from typing import Any

import pytest

from s3fuse.config import ConfigError, MountConfig
from s3fuse.model import meta
from tests.core_harness import Core, run_core
from tests.servers import RecordingProxy

DEFAULTS = meta.Defaults(uid=0, gid=0)
AWS = {"file-permissions": "0100600", "file-owner": "1234", "file-group": "5678"}


def test_aws_keys_are_read_where_the_s3fs_keys_are_absent() -> None:
    a = meta.decode(AWS, is_dir=False, size=1, last_modified_ns=7, defaults=DEFAULTS)
    assert (a.mode, a.uid, a.gid, a.mtime_ns) == (stat.S_IFREG | 0o600, 1234, 5678, 7)
    d = meta.decode({"file-permissions": "040750"}, is_dir=True, size=0, last_modified_ns=0,
                    defaults=DEFAULTS)  # fmt: skip
    assert d.mode == stat.S_IFDIR | 0o750
    both = {**AWS, "mode": str(stat.S_IFREG | 0o644), "uid": "1", "gid": "2"}
    b = meta.decode(both, is_dir=False, size=1, last_modified_ns=0, defaults=DEFAULTS)
    assert (b.mode, b.uid, b.gid) == (stat.S_IFREG | 0o644, 1, 2)  # s3fs's keys win


def test_a_permissions_value_that_is_not_octal_shows_defaults_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = {"file-permissions": "rw-r--r--", "file-owner": "12"}
    with caplog.at_level(logging.WARNING, "s3fuse.model.meta"):
        for _ in range(3):
            a = meta.decode(bad, is_dir=False, size=0, last_modified_ns=0, defaults=DEFAULTS)
            assert a.mode == stat.S_IFREG | 0o644 and a.uid == 12
    assert len([r for r in caplog.records if "rw-r--r--" in r.getMessage()]) == 1


def test_each_style_writes_its_keys() -> None:
    a = meta.Attrs(stat.S_IFREG | 0o640, 10, 20, 5_000_000_000)
    assert meta.encode(a) == {"mode": "33184", "uid": "10", "gid": "20", "mtime": "5"}
    assert meta.encode(a, "aws") == {"file-permissions": "0100640", "file-owner": "10",
                                     "file-group": "20", "mtime": "5"}  # fmt: skip
    assert set(meta.encode(a, "both")) == {"mode", "uid", "gid", "mtime", *meta.AWS_META}


def test_an_unknown_style_is_refused() -> None:
    cfg = MountConfig(bucket="b", mountpoint="/mnt", meta_style="posix")
    with pytest.raises(ConfigError, match="meta_style='posix': allowed s3fs, aws, both"):
        cfg.validate()


@pytest.mark.semantics("HDR-INTEROP")
def test_both_directions_through_the_core(
    bucket: str, s3: Any, proxy: RecordingProxy, tmp_path: Path
) -> None:
    s3.put_object(Bucket=bucket, Key="from-fsx", Body=b"x", Metadata=AWS)

    async def body(c: Core) -> None:
        e = await c.stat("from-fsx")
        assert (stat.S_IMODE(e.st_mode), e.st_uid, e.st_gid) == (0o600, 1234, 5678)
        await c.chmod("from-fsx", 0o640)  # s3fs style, but its AWS keys stay true
        await c.write("new", b"y")

    run_core(bucket, proxy.url, tmp_path / "spool", body)
    md = s3.head_object(Bucket=bucket, Key="from-fsx")["Metadata"]
    assert md["file-permissions"] == "0100640" and md["mode"] == str(stat.S_IFREG | 0o640)
    assert md["file-owner"] == "1234" and md["uid"] == "1234"
    assert not meta.has_aws_keys(s3.head_object(Bucket=bucket, Key="new")["Metadata"])

    async def both(c: Core) -> None:
        await c.write("shared", b"z")

    run_core(bucket, proxy.url, tmp_path / "spool2", both, "meta_style=both")
    md = s3.head_object(Bucket=bucket, Key="shared")["Metadata"]
    assert md["file-permissions"] == "0100644"
    assert md["mode"] == str(stat.S_IFREG | 0o644)

    async def aws_only(c: Core) -> None:
        await c.write("aws-only", b"w")
        e = await c.stat("aws-only")
        assert stat.S_IMODE(e.st_mode) == 0o644

    run_core(bucket, proxy.url, tmp_path / "spool3", aws_only, "meta_style=aws")
    md = s3.head_object(Bucket=bucket, Key="aws-only")["Metadata"]
    assert "mode" not in md and md["file-permissions"] == "0100644" and "mtime" in md
