"""Running s3fuse like a system service: systemd units, the mount helper, status, logs,
credentials that rotate."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from s3fuse import runtime
from tests.conftest import Mount
from tests.servers import RecordingProxy

pytestmark = pytest.mark.mounted
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def s3fuse(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "s3fuse", *args], capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


def unit_with_our_binary(tmp_path: Path, name: str) -> Path:
    text = (ROOT / "systemd" / "s3fuse@.service").read_text()
    p = tmp_path / name
    p.write_text(text.replace("/usr/local/bin/s3fuse", str(BIN / "s3fuse")))
    return p


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = unit_with_our_binary(tmp_path, "s3fuse@test.service")
    shutil.copy(ROOT / "systemd" / "mnt-s3.mount", tmp_path)
    r = subprocess.run(["systemd-analyze", "verify", str(unit), str(tmp_path / "mnt-s3.mount")],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    text = unit.read_text()
    for want in ("Type=notify", "Restart=on-failure", "network-online.target", "ExecStop=",
                 "DeviceAllow=/dev/fuse"):  # fmt: skip
        assert want in text
    # any of these gives the service its own mount namespace: the bucket would be mounted
    # where only the service sees it (what a real systemd showed; test_systemd.py)
    settings = {ln.split("=", 1)[0] for ln in text.splitlines() if "=" in ln and ln[0] != "#"}
    private = {"PrivateTmp", "PrivateDevices", "PrivateMounts", "ProtectSystem", "ProtectHome",
               "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
               "ProtectControlGroups", "ProtectProc", "ReadOnlyPaths", "ReadWritePaths",
               "InaccessiblePaths", "BindPaths", "TemporaryFileSystem", "MountFlags"}  # fmt: skip
    assert settings & private == set()


def exec_line(unit: Path, key: str, env: dict[str, str]) -> list[str]:
    line = next(ln for ln in unit.read_text().splitlines() if ln.startswith(key + "="))
    words = []
    for w in shlex.split(line.split("=", 1)[1]):
        if w.startswith("${") and w.endswith("}"):
            words.append(env[w[2:-1]])
        elif w.startswith("$"):
            words += shlex.split(env[w[1:]])
        else:
            words.append(w)
    return words


def test_execstart_notifies_ready_only_when_usable(
    tmp_path: Path, bucket: str, proxy: RecordingProxy, s3: Any
) -> None:
    unit = unit_with_our_binary(tmp_path, "s3fuse@t.service")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {
        "S3FUSE_BUCKET": bucket,
        "S3FUSE_MOUNTPOINT": str(mnt),
        "S3FUSE_OPTIONS": f"-o endpoint_url={proxy.url},spool_dir={tmp_path / 'sp'}",
    }
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(60)
    proc = subprocess.Popen(exec_line(unit, "ExecStart", env),
                            env={**os.environ, "NOTIFY_SOCKET": str(sock_path)},
                            stderr=open(tmp_path / "log", "wb"))  # noqa: SIM115  # fmt: skip
    try:
        msg = sock.recv(4096).decode()
        assert "READY=1" in msg
        assert os.path.ismount(mnt)  # already usable when READY arrives
        (mnt / "via-unit.txt").write_bytes(b"u")
        assert s3.get_object(Bucket=bucket, Key="via-unit.txt")["Body"].read() == b"u"
        msg = sock.recv(4096).decode()
        assert msg.startswith("STATUS=") and "pending" in msg
        stop = subprocess.run(exec_line(unit, "ExecStop", env), capture_output=True, text=True)
        assert stop.returncode == 0, stop.stderr
        seen = ""
        while "STOPPING=1" not in seen:
            seen += sock.recv(4096).decode()
        assert proc.wait(30) == 0
        assert not os.path.ismount(mnt)
    finally:
        sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)


def test_mount_helper_fstab_style(
    tmp_path: Path, bucket: str, proxy: RecordingProxy, s3: Any
) -> None:
    helper = Path("/sbin/mount.s3fuse")
    made = False
    if not helper.exists():
        helper.symlink_to(BIN / "mount.s3fuse")
        made = True
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    s3.put_object(Bucket=bucket, Key="pre/foreign.txt", Body=b"f")
    opts = (f"endpoint_url={proxy.url},spool_dir={tmp_path / 'sp'},log_file={tmp_path / 'log'},"
            "_netdev,nofail,noauto,x-systemd.automount,rw,allow_other,uid=1234,gid=5678,"
            "umask=027,default_permissions")  # fmt: skip
    try:
        r = subprocess.run(["mount", "-t", "s3fuse", f"{bucket}:pre", str(mnt), "-o", opts],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert os.path.ismount(mnt)
        st = os.stat(mnt / "foreign.txt")
        assert (st.st_uid, st.st_gid) == (1234, 5678)
        assert stat.S_IMODE(st.st_mode) == 0o640
        assert stat.S_IMODE(os.stat(mnt).st_mode) in (0o750, 0o755)
        line = next(ln for ln in Path("/proc/mounts").read_text().splitlines()
                    if str(mnt) in ln)  # fmt: skip
        assert "allow_other" in line and "fuse.s3fuse" in line
        (mnt / "new.txt").write_bytes(b"n")
        assert s3.get_object(Bucket=bucket, Key="pre/new.txt")["Body"].read() == b"n"
        u = s3fuse("umount", str(mnt))
        assert u.returncode == 0, u.stderr
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
        if made:
            helper.unlink()


@pytest.mark.semantics("OPS-JSON")
def test_status_text_json_and_progress(
    mount_factory: Any, bucket: str, proxy: RecordingProxy
) -> None:
    m: Mount = mount_factory(bucket, "-o", "multipart_threshold=6291456,part_size=5242880")
    (m / "done.txt").write_bytes(b"d")
    time.sleep(1.5)
    r = s3fuse("status")
    assert r.returncode == 0
    assert str(m.path) in r.stdout and bucket in r.stdout and "PutObject" in r.stdout
    j = s3fuse("status", str(m.path), "--json")
    data = json.loads(j.stdout)
    assert data["success"] is True
    mount = data["data"]["mounts"][0]
    assert mount["bucket"] == bucket and mount["requests"]["PutObject"] >= 1
    assert mount["started"].endswith("Z") and mount["uptime_seconds"] > 0
    # a long upload shows its progress
    release = threading.Event()  # parts wait at the proxy until status was looked at

    def hold_parts(r: Any) -> Any:
        if "partNumber=" in r.path:
            release.wait(30)
        return None

    proxy.fault = hold_parts
    writer = threading.Thread(target=(m / "big.bin").write_bytes, args=(os.urandom(16 << 20),))
    writer.start()
    try:
        seen = None
        deadline = time.monotonic() + 60
        while seen is None and time.monotonic() < deadline:
            snap = json.loads(s3fuse("status", str(m.path), "--json").stdout)
            flight = snap["data"]["mounts"][0]["uploads"]["in_flight"]
            if "big.bin" in flight:
                seen = flight["big.bin"]
            time.sleep(0.2)
        assert seen is not None and seen["size"] == 16 << 20
        text = s3fuse("status", str(m.path)).stdout
        assert "uploading big.bin" in text
    finally:
        release.set()
        writer.join(120)
        proxy.fault = None
    nm = s3fuse("status", "/", "--json")
    assert nm.returncode == 1
    assert json.loads(nm.stdout)["error"]["code"] == "NOT_MOUNTED"


def test_failed_request_log_line(mount_factory: Any, bucket: str, proxy: RecordingProxy) -> None:
    m: Mount = mount_factory(bucket)
    proxy.fault = lambda r: (403, "AccessDenied") if r.method == "PUT" else None
    try:
        with pytest.raises(OSError):
            (m / "no.txt").write_bytes(b"x")
    finally:
        proxy.fault = None
    line = next(ln for ln in m.log_text().splitlines() if "PutObject failed" in ln)
    assert "AccessDenied" in line and "key='no.txt'" in line and "request-id=" in line


def test_credentials_rotate(
    mount_factory: Any, bucket: str, proxy: RecordingProxy, tmp_path: Path, s3: Any
) -> None:
    counter = tmp_path / "n"
    counter.write_text("0")
    script = tmp_path / "creds.py"
    script.write_text(
        "import datetime, json, pathlib\n"
        f"p = pathlib.Path({str(counter)!r}); n = int(p.read_text()) + 1; p.write_text(str(n))\n"
        "exp = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=11)\n"
        "print(json.dumps({'Version': 1, 'AccessKeyId': f'ROTATED{n:04d}', "
        "'SecretAccessKey': 's', 'SessionToken': 't', 'Expiration': exp.isoformat()}))\n"
    )
    cfg = tmp_path / "config"
    cfg.write_text(f"[profile rot]\ncredential_process = {sys.executable} {script}\n")
    env = {"AWS_CONFIG_FILE": str(cfg), "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    m: Mount = mount_factory(bucket, "--profile", "rot", env=env)
    proxy.clear()
    for i in range(4):
        (m / f"f{i}").write_bytes(b"x")
        time.sleep(0.2)
    ids = {r.headers.get("authorization", "").split("Credential=")[1].split("/")[0]
           for r in proxy.requests("PUT")}  # fmt: skip
    assert len(ids) >= 2 and all(i.startswith("ROTATED") for i in ids)
    assert len(s3.list_objects_v2(Bucket=bucket)["Contents"]) == 4


@pytest.mark.semantics("OPS-SECRETS")
def test_runtime_state_has_no_secrets(mount_factory: Any, bucket: str) -> None:
    env = {"AWS_SECRET_ACCESS_KEY": "SENTINEL-status-secret"}
    m: Mount = mount_factory(bucket, env=env)
    time.sleep(1.2)
    state = runtime.read_state(str(m.path))
    assert state is not None
    out = s3fuse("status", "--json").stdout + s3fuse("status").stdout + json.dumps(state)
    assert "SENTINEL" not in out
