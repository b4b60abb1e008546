"""Crashes, a full spool, keys POSIX cannot show, random names, and secrets in logs."""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import random
import string
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Mount
from tests.crash_worker import content
from tests.servers import RecordingProxy

pytestmark = pytest.mark.mounted
WORKER = Path(__file__).with_name("crash_worker.py")


def objects(s3: Any, bucket: str, prefix: str = "") -> dict[str, str]:
    """key -> MD5 of its body."""
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            data = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            out[o["Key"]] = hashlib.md5(data).hexdigest()
    return out


def check_bucket(
    s3: Any, bucket: str, promised: dict[str, dict[str, bool]], tags: list[str] | None = None
) -> None:
    """Every object complete; every promised close/rename in S3 (tags: only these runs)."""
    have: dict[str, str] = {}
    for tag in tags if tags is not None else [""]:
        have.update(objects(s3, bucket, f"{tag}-" if tag else ""))
    if tags is not None:
        promised = {t: promised[t] for t in tags if t in promised}
    for key, md5 in have.items():
        tag, _, rest = key.rpartition("-")
        i = int(rest[1:])
        assert md5 == hashlib.md5(content(tag, i)).hexdigest(), f"{key} is partial/corrupt"
    for tag, names in promised.items():
        for name, renamed in names.items():
            i = int(name.rpartition("-")[2][1:])
            new = f"{tag}-r{i}"
            if renamed:
                assert new in have and name not in have, f"{name} -> {new} lost"
            else:
                assert name in have or new in have, f"{name}: close() returned 0, not in S3"


@pytest.mark.semantics("STORE-ATOMIC", "LOST-CRASH")
def test_sigkill_at_random_points(mount_factory: Any, bucket: str, s3: Any, tmp_path: Path) -> None:
    base = random.randrange(1 << 30)
    rng = random.Random(base)
    promised: dict[str, dict[str, bool]] = {}
    deadline = time.monotonic() + 240
    runs = 0
    while runs < 50 and time.monotonic() < deadline:
        # every mount uses the same spool: each start recovers what the last kill left
        m: Mount = mount_factory(
            bucket, "--spool-dir", str(tmp_path / "spool"), root=tmp_path / f"m{runs % 2}"
        )
        tag, last = f"t{runs}", [f"t{runs - 1}"] if runs else []
        check_bucket(s3, bucket, promised, last)
        worker = subprocess.Popen(
            [sys.executable, str(WORKER), str(m.path), tag, str(base + runs)],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(rng.uniform(0.05, 0.5))
        m.kill()
        out, _ = worker.communicate(timeout=60)
        names: dict[str, bool] = {}
        for line in out.splitlines():
            what, name = line.split()
            names[name] = what == "renamed"
        promised[tag] = names
        check_bucket(s3, bucket, promised, [*last, tag])
        runs += 1
    assert runs >= 50, f"only {runs} runs in the time allowed (seed {base})"
    mount_factory(bucket, "--spool-dir", str(tmp_path / "spool"), root=tmp_path / "final")
    check_bucket(s3, bucket, promised)
    assert sum(len(v) for v in promised.values()) > 50  # the runs did real work
    # files open at a kill were moved aside whole, never uploaded
    for p in (tmp_path / "spool").rglob("recovered/*/*"):
        tag, _, rest = p.name.rpartition("-")
        full = content(tag, int(rest[1:].split(".")[0]))
        assert full.startswith(p.read_bytes())


@pytest.mark.semantics("LOST-FULL-SPOOL")
def test_full_spool_gives_enospc_and_reads_go_on(
    mount_factory: Any, bucket: str, s3: Any, tmp_path: Path
) -> None:
    spool = tmp_path / "tiny"
    spool.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(spool)], check=True)
    try:
        s3.put_object(Bucket=bucket, Key="readable", Body=b"r" * 5000)
        m = mount_factory(bucket, "--spool-dir", str(spool))
        with pytest.raises(OSError) as e, open(m / "huge", "wb") as f:
            for _ in range(40):
                f.write(os.urandom(64 * 1024))
                f.flush()
        assert e.value.errno == errno.ENOSPC
        assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="huge")
        assert (m / "readable").read_bytes() == b"r" * 5000  # still serving
        (m / "small").write_bytes(b"fits")  # the space was given back
        assert s3.get_object(Bucket=bucket, Key="small")["Body"].read() == b"fits"
        assert "spool" in m.log_text() and "is full" in m.log_text()
        m.unmount()
    finally:
        subprocess.run(["umount", "-l", str(spool)], check=False)


@pytest.mark.semantics("LOST-FULL-SPOOL")
def test_spool_full_while_a_multipart_file_closes(
    mount_factory: Any, bucket: str, s3: Any, tmp_path: Path
) -> None:
    """A file written whole, then the spool fills (another writer) before it is closed:
    its multipart upload (journal, upload record) still completes; the other file fails."""
    spool = tmp_path / "tiny"
    spool.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(spool)], check=True)
    try:
        m = mount_factory(bucket, "--spool-dir", str(spool),
                          "-o", "multipart_threshold=6291456,part_size=5242880")  # fmt: skip
        data = os.urandom(10 << 20)
        big = open(m / "big", "wb")  # noqa: SIM115 (closed by hand: the close is checked)
        filler = open(m / "filler", "wb")  # noqa: SIM115
        big.write(data)
        big.flush()
        with pytest.raises(OSError) as e:
            for _ in range(200):
                filler.write(os.urandom(64 * 1024))
                filler.flush()
        assert e.value.errno == errno.ENOSPC
        big.close()  # close() 0: stored, although the spool has no room left
        assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == data
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        with pytest.raises(OSError) as e:
            filler.close()
        assert e.value.errno == errno.ENOSPC
        assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="filler")
        m.unmount()
    finally:
        subprocess.run(["umount", "-l", str(spool)], check=False)


@pytest.mark.semantics("NAME-UNSHOWABLE")
def test_keys_posix_cannot_show(mount_factory: Any, bucket: str, s3: Any) -> None:
    bad = ["a//b", "../up", "./dot", "x/./y", "x/../z", "n" * 300, "deep/" + "q" * 256 + "/f"]
    for k in bad:
        s3.put_object(Bucket=bucket, Key=f"pre/{k}", Body=b"bad")
    s3.put_object(Bucket=bucket, Key="pre/ok.txt", Body=b"fine")
    s3.put_object(Bucket=bucket, Key="pre/withslash/", Body=b"not empty")
    s3.put_object(Bucket=bucket, Key="outside.txt", Body=b"not ours")
    m = mount_factory(f"{bucket}:pre")
    names = sorted(os.listdir(m.path))
    assert "ok.txt" in names and "withslash" in names
    assert not [n for n in names if n in ("..", ".", "") or len(n.encode()) > 255]
    assert (m / "ok.txt").read_bytes() == b"fine"
    assert (m / "withslash").is_dir()
    for name in ("x", "deep"):
        if (m / name).exists():
            os.listdir(m / name)  # browsing them never crashes
    # nothing written through the mount lands outside the prefix
    (m / "new.txt").write_bytes(b"n")
    assert s3.get_object(Bucket=bucket, Key="pre/new.txt")["Body"].read() == b"n"
    assert m.proc is not None and m.proc.poll() is None


NAME = st.text(
    alphabet=st.characters(blacklist_characters="/\0\n", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=40,
).filter(lambda s: s not in (".", "..") and len(s.encode()) <= 255)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["create", "rename", "unlink"]), NAME, NAME),
        min_size=1,
        max_size=12,
    )
)
@pytest.mark.semantics("NAME-UNSHOWABLE")
def test_random_names_match_a_model(mnt: Mount, s3: Any, ops: list[tuple[str, str, str]]) -> None:
    for p in mnt.path.iterdir():
        p.unlink()
    model: dict[str, bytes] = {}
    for op, a, b in ops:
        if op == "create":
            data = a.encode()[:7] + b.encode()[:5]
            (mnt.path / a).write_bytes(data)
            model[a] = data
        elif op == "rename" and a in model:
            os.rename(mnt.path / a, mnt.path / b)
            model[b] = model.pop(a)
        elif op == "unlink" and a in model:
            os.unlink(mnt.path / a)
            del model[a]
    have = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=mnt.bucket):
        for o in page.get("Contents", []):
            have[o["Key"]] = s3.get_object(Bucket=mnt.bucket, Key=o["Key"])["Body"].read()
    assert have == model
    assert sorted(os.listdir(mnt.path)) == sorted(model)


@pytest.mark.semantics("OPS-SECRETS")
def test_secrets_never_reach_logs(
    mount_factory: Any, bucket: str, proxy: RecordingProxy, tmp_path: Path
) -> None:
    secret = "SENTINEL" + "".join(random.choices(string.ascii_letters, k=24))
    key = os.urandom(32)
    kf = tmp_path / "k"
    kf.write_bytes(key)
    kf.chmod(0o600)
    env = {"AWS_SECRET_ACCESS_KEY": secret}  # moto accepts any secret
    m = mount_factory(bucket, "-o", f"sse_c_key_file={kf}", env=env)
    (m / "f").write_bytes(b"x")
    (m / "f").read_bytes()
    proxy.fault = lambda r: (403, "AccessDenied") if r.method == "PUT" else None
    try:
        with pytest.raises(OSError):
            (m / "g").write_bytes(b"y")
    finally:
        proxy.fault = None
    mounts = Path("/proc/mounts").read_text()
    line = next(ln for ln in mounts.splitlines() if str(m.path) in ln)
    assert "allow_other" not in line
    m.unmount()
    texts = [m.log_text(), line]
    forms = [secret, key.hex(), base64.b64encode(key).decode()]
    for t in texts:
        for f in forms:
            assert f not in t
    st_spool = os.stat(m.spool)
    assert st_spool.st_mode & 0o777 == 0o700 and st_spool.st_uid == os.getuid()
